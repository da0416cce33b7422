"""Cross-cohort results: a model trained in one store (the source) scores the people of another (the target).

What `pstore evaluate --run` (another store's run) and `pstore enet --from-store` share:

- genes are matched by ID with the version suffix ignored (ENSG00000120758.11 matches ENSG00000120758.14;
  GENCODE's `_PAR_Y` suffix is kept), and the counts of matched and skipped genes are reported;
- the source's fold f fills the target's fold f, and every target person the fold's model did not see is
  predicted: people are matched by sample ID, and the target's people among the source's fold-f train and tune
  people (tune people chose the checkpoint or alpha) are left out of the predictions and of every metric, their
  count recorded per fold (`seen_in_training`) and printed; a target whose people are mostly such people is
  not another cohort and is refused. `pearson_r`/`r2` score the target fold's other test people, so
  `pstore compare` on the target pairs a transferred model with the target's own elastic net fold by fold on
  those people (it scores the elastic net again without the people left out); `cross_pearson_r`/`cross_r2`
  score every person predicted with a target (schemas.CROSS_RESULT);
- the result records its source store (`source_store`: identity, path, name) and the gene's source ID, and a
  result name already used by a model from another source is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from . import schemas
from .inputs import InputError, unversioned
from .loader import split_rows
from .predict import gene_metrics
from .results import blank_result, read_result
from .store import Store

CROSS_SPECS = (schemas.RESULT, schemas.CROSS_RESULT)
MOSTLY_SEEN = 0.5
"""Share of the target's people seen in training above which a cross-cohort score is refused (score it in the source)."""


@dataclass(frozen=True)
class GeneMatch:
    """Genes of a target store matched to a source's genes by unversioned ID."""

    pairs: dict[str, str]  # target gene ID -> source gene ID
    target_only: tuple[str, ...]
    source_only: tuple[str, ...]

    def summary(self, source: str, target: str) -> str:
        """One line: how many genes matched (and with another version) and how many each side lacks."""
        other_version = sum(t != s for t, s in self.pairs.items())
        return (f"genes: {len(self.pairs)} matched by ID with versions ignored ({other_version} with another version); "
                f"{len(self.target_only)} only in {target}, {len(self.source_only)} only in {source}")


def _by_unversioned(genes: Sequence[str], where: str) -> dict[str, str]:
    """Unversioned ID -> gene ID; two versions of one gene in one list are refused."""
    found: dict[str, str] = {}
    for gene_id in genes:
        key = unversioned(gene_id)
        if key in found:
            raise InputError(f"{where}: holds {found[key]} and {gene_id}, two versions of one gene; choose one with --gene")
        found[key] = gene_id
    return found


def match_genes(source: Sequence[str], target: Sequence[str], source_name: str = "the source",
                target_name: str = "the target") -> GeneMatch:
    """Pair target genes with source genes by unversioned ID (in target order)."""
    source_ids = _by_unversioned(source, source_name)
    target_ids = _by_unversioned(target, target_name)
    pairs = {target_ids[key]: source_ids[key] for key in target_ids if key in source_ids}
    return GeneMatch(pairs, tuple(g for k, g in target_ids.items() if k not in source_ids),
                     tuple(g for k, g in source_ids.items() if k not in target_ids))


def resolve_genes(store: Store, genes: Sequence[str]) -> list[str]:
    """The store's IDs of the genes asked for (any version, or none); every gene of the store by default."""
    if not genes:
        return list(store.genes.index)
    match = match_genes(list(store.genes.index), genes, str(store.path), "--gene")
    if match.target_only:
        raise InputError(f"store {store.path}: no gene {', '.join(match.target_only[:5])} (any version); "
                         f"genes are listed by `pstore info {store.path}`")
    return [match.pairs[g] for g in genes]


def source_record(identity: str, path: Path | str | None) -> dict[str, str]:
    """The `source_store` attribute: identity, path and a short name (the store directory's name)."""
    return {"identity": identity, "path": str(path) if path else "", "name": Path(path).name if path else identity}


def check_result_name(store: Store, gene_id: str, name: str, kind: str, source: dict[str, str]) -> None:
    """Refuse to mix, under one result name, models of another kind or source (or a within-cohort model)."""
    found = read_result(store.path, gene_id, name)
    if found is None:
        return
    other = found[1].get("source_store")
    if other is None or other["identity"] != source["identity"] or found[1]["kind"] != kind:
        trained = f"trained in {other['name']}" if other else "trained in this store"
        raise InputError(f"store {store.path}: gene {gene_id} already has a result named {name!r} ({found[1]['kind']}, {trained}); "
                         f"give --name to store this {kind} model from {source['name']} under another name")


def seen_people(source: Store, target: Store, fold: int, model: str) -> np.ndarray:
    """Which target people (a mask in store order) are, by sample ID, train or tune people of the source's fold: its
    model saw them. Refused when they are most of the target's people: it is no other cohort."""
    trained = set(source.sample_id[source.split(fold) != 2].tolist())
    seen = np.array([person in trained for person in target.sample_id.tolist()], dtype=bool)
    if seen.sum() > MOSTLY_SEEN * len(seen):
        raise InputError(f"store {target.path}: {seen.sum()} of its {len(seen)} people are fold {fold} train or tune people of "
                         f"store {source.path}, which {model} was trained on: it is not another cohort; score the model in "
                         f"store {source.path} itself, on its test people")
    return seen


def seen_summary(counts: dict[int, int], target: str, source: str) -> str:
    """One line: how many of the target's people each fold left out as train or tune people of the source's fold."""
    folds = ", ".join(f"fold {fold}: {count}" for fold, count in counts.items())
    return f"people of {target} left out as train or tune people of {source}'s fold (seen in training): {folds}"


def cross_values(store: Store, gene_id: str, fold: int, prediction: np.ndarray, status: str, seen: np.ndarray,
                 specs: tuple[schemas.GroupSpec, ...] = CROSS_SPECS) -> dict[str, np.ndarray]:
    """Result arrays with one fold filled: the prediction of every person the model did not see (`seen_people`;
    NaN for those it saw), the fold's test-set and all-people metrics on them."""
    target = store.gene(gene_id)["target"][:].astype(np.float64)
    prediction = prediction.astype(np.float32).astype(np.float64)  # scored as stored, in float64 (near-constant tiny models)
    prediction[seen] = np.nan
    values = blank_result({"folds": store.root["sample_split"].shape[0], "samples": len(target)}, specs)
    test = split_rows(store, gene_id, fold, "test")
    test = test[~seen[test]]
    values["prediction"][fold], values["status"][fold] = prediction, status
    if np.isnan(prediction).all():  # no model for this fold: NaN metrics
        return values
    values["pearson_r"][fold], values["r2"][fold] = gene_metrics(prediction[test], target[test])
    everyone = ~np.isnan(prediction)
    values["cross_pearson_r"][fold], values["cross_r2"][fold] = gene_metrics(prediction[everyone], target[everyone])
    return values


def check_fold(store: Store, fold: int, source: str) -> None:
    """The target store must have the source's fold (its test people score the result)."""
    n_folds = store.root["sample_split"].shape[0]
    if fold >= n_folds:
        raise InputError(f"store {store.path}: {source} is of fold {fold}, but this store has folds 0-{n_folds - 1}; "
                         f"rebuild it with as many folds or use a model of fold 0-{n_folds - 1}")

