"""Per-gene model results (`genes/<gene_id>/results/<model>`): the RESULT layout, read and written in one place.

Every model writes the same arrays (`schemas.RESULT`: predictions of the tune and test people, Pearson r and
R2 on the test people, a status per fold); linear models add `schemas.ENET_RESULT`. Writers give whole
arrays (folds first) and say which folds they ran: those rows replace the stored ones and the other folds
are kept, so folds can be run one command at a time. Each write rebuilds the group in the store's staging
directory and renames it into place complete, under the store lock.
"""

from __future__ import annotations

import os
import re
from contextlib import suppress
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import zarr

from . import schemas
from .inputs import InputError, make_directory, writing
from .store import gene_path, is_complete, publish, staging_path, store_lock, write_array

NOT_RUN = "not run"

RESERVED_NAMES = ("enet", "lasso", "enformer")
"""Results names of the baselines (`pstore enet`, `pstore evaluate --base`): no run may take them."""

RESULT_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
"""A results name: one path component of letters, digits, '.', '_' and '-', not starting with '.' (so never '.'
or '..', which would name the whole results directory or the gene's), at most 128 characters."""


def check_name(name: str, source: str, fix: str = "") -> str:
    """`name` when it is a safe results name (`RESULT_NAME`), else one InputError naming its `source` (the option, or
    the run it came from), the rule and the `fix` (e.g. 'give --name')."""
    if not RESULT_NAME.fullmatch(name):
        raise InputError(f"{source} {name!r}: not a results name; use letters, digits, '.', '_' and '-', not starting "
                         f"with '.', at most 128 characters{'; ' + fix if fix else ''}")
    return name


TEMPORARY_NAME_BYTES = 240
"""The longest name of a partial output file: within NAME_MAX (255 bytes) with room for what writers add beside it
(SQLite's '-journal')."""


def temporary_path(path: Path) -> Path:
    """The hidden partial file beside `path` that this process writes: '.<name>.<pid>.tmp', its name cut so that
    it fits `TEMPORARY_NAME_BYTES` (a legal output name of 255 bytes has a legal partial file)."""
    suffix = f".{os.getpid()}.tmp"
    name = os.fsencode(path.name)[: TEMPORARY_NAME_BYTES - 1 - len(suffix)]
    return path.with_name(f".{os.fsdecode(name)}{suffix}")


def replace_atomically(path: Path, write: Callable[[Path], Any]) -> None:
    """Write an output file (`write(temporary_path)`) beside `path` and rename it into place: a kill leaves the
    previous file or the new one, never half of one. The parent directory is created if missing; a path that
    cannot be written is one InputError naming it (never masked by the clean-up of the partial file). A symlink's
    target is replaced (the link is kept); a path that is not a regular file (a device such as /dev/stdout, a pipe)
    is refused rather than replaced by one."""
    given = Path(path)
    with writing(given):  # a name too long for the file system is an OSError here already
        path = Path(os.path.realpath(given))
        regular = path.is_file() or not path.exists()
    if not regular:
        raise InputError(f"{given}: not a regular file (a directory, device or pipe), so it cannot be replaced by the "
                         "output; give the path of a file")
    make_directory(path.parent)
    temporary = temporary_path(path)
    try:
        with writing(path):
            write(temporary)
            os.replace(temporary, path)
    finally:
        with suppress(OSError):  # nothing to remove, or nothing that can be: the write's own error is the one to report
            temporary.unlink(missing_ok=True)


def result_path(store: Path, gene_id: str, model: str, group: str = schemas.RESULTS_GROUP) -> Path:
    """Directory of one model's result group (`results`, or `ism` for ISM scores) for one gene; a name that is not
    one path component ('', '.', '..', a '/') is refused, so nothing can stand for the results directory itself
    (names written must also be `check_name`'s; older results with other characters stay readable)."""
    if model in ("", ".", "..") or "/" in model or "\0" in model:
        check_name(model, "results name")
    return gene_path(store, gene_id) / group / model


def result_models(store: Path, gene_id: str, group: str = schemas.RESULTS_GROUP) -> list[str]:
    """Names of a gene's complete result groups, sorted."""
    directory = gene_path(store, gene_id) / group
    if not directory.is_dir():
        return []
    return sorted(d.name for d in directory.iterdir() if d.is_dir() and is_complete(d))


def result_source(attrs: Mapping[str, Any]) -> str:
    """Where a result's model was trained, for tables: its source store's name (cross-cohort) or 'this store'."""
    source = attrs.get("source_store")
    return source["name"] if source else "this store"


def _layout(specs: tuple[schemas.GroupSpec, ...]) -> dict[str, schemas.ArraySpec]:
    """Array specs of a result by name."""
    return {spec.name: spec for group in specs for spec in group.arrays}


def _blank_value(spec: schemas.ArraySpec) -> Any:
    """What a fold that was not run holds: 'not run', NaN, or -1 for counts."""
    if spec.dtype == "str":
        return NOT_RUN
    return np.nan if np.dtype(spec.dtype).kind == "f" else -1


def blank_result(sizes: Mapping[str, int], specs: tuple[schemas.GroupSpec, ...] = (schemas.RESULT,)) -> dict[str, np.ndarray]:
    """Arrays of a result with no fold run, shaped by the dimension sizes given (folds, samples, ...)."""
    return {
        name: np.full(tuple(sizes[d] for d in spec.dims), _blank_value(spec), dtype=object if spec.dtype == "str" else spec.dtype)
        for name, spec in _layout(specs).items()
    }


def read_result(store: Path, gene_id: str, model: str,
                group: str = schemas.RESULTS_GROUP) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """A complete result group's arrays (status as Python strings) and attributes, or None when there is none."""
    directory = result_path(store, gene_id, model, group)
    if not is_complete(directory):
        return None
    group = zarr.open_group(str(directory), mode="r")
    arrays = {name: np.asarray(array[...]) for name, array in group.arrays()}
    arrays["status"] = arrays["status"].astype(object)
    return arrays, dict(group.attrs)


def write_result(store: Path, gene_id: str, model: str, kind: str, folds: Sequence[int], values: Mapping[str, np.ndarray],
                 attrs: Mapping[str, Any] | None = None, specs: tuple[schemas.GroupSpec, ...] = (schemas.RESULT,),
                 group: str = schemas.RESULTS_GROUP) -> None:
    """Store the given folds' rows of `values` as `model`'s result for a gene, keeping its other folds.

    Attributes are merged into the stored ones (dict values key by key), `kind` is set and `folds` becomes
    the union of the folds run so far. A `model` name that `check_name` refuses is an InputError before anything
    is written.
    """
    check_name(model, "results name")
    layout = _layout(specs)
    if set(values) != set(layout):
        raise AssertionError(f"result arrays {sorted(values)} do not match the layout {sorted(layout)}")
    rows = list(folds)
    with store_lock(store, wait=True):
        previous = read_result(store, gene_id, model, group)
        if previous is None:
            arrays = {name: np.full(np.shape(values[name]), _blank_value(spec), dtype=object if spec.dtype == "str" else spec.dtype)
                      for name, spec in layout.items()}
            merged: dict[str, Any] = {}
        else:
            arrays, merged = previous
            if merged.get("kind") != kind or set(arrays) != set(layout):
                raise InputError(f"store {store}: gene {gene_id} already has a result named {model!r} of kind {merged.get('kind')}; "
                                 f"choose another name for this result of kind {kind}")
        for name in layout:
            arrays[name][rows] = np.asarray(values[name])[rows]
        for key, value in (attrs or {}).items():
            before = merged.get(key)
            merged[key] = {**before, **value} if isinstance(before, dict) and isinstance(value, dict) else value
        merged.update(kind=kind, folds=sorted({*merged.get("folds", []), *rows}))
        merged.pop("complete", None)
        _publish_result(store, gene_id, model, arrays, merged, layout, group)


def _publish_result(store: Path, gene_id: str, model: str, arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any],
                    layout: Mapping[str, schemas.ArraySpec], group: str) -> None:
    """Write a result group in staging, `complete: true` last, and rename it into place."""
    results_dir = gene_path(store, gene_id) / group
    if not (results_dir / "zarr.json").is_file():
        zarr.open_group(str(results_dir), mode="a", attributes={"description": "One group per model, named by model."})
    staging = staging_path(store, f"{gene_id}.{group}.{model}")
    written = zarr.open_group(str(staging), mode="w")
    for name, spec in layout.items():
        data = np.asarray(arrays[name])
        write_array(written, spec, data.astype(str) if spec.dtype == "str" else data.astype(spec.dtype))
    written.attrs.update(dict(attrs))
    written.attrs["complete"] = True  # written last: the result counts only once everything above is on disk
    publish(staging, result_path(store, gene_id, model, group))
