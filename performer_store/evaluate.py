"""`pstore evaluate`: predictions and per-gene metrics of a trained run (Enformer or Borzoi, either mode: the
checkpoint records which) or of base Enformer, into the store.

A run is scored on the tune and test people of its fold (metrics on the test people): genes it trained on
are HOP (held-out people), the others HOGP (held-out genes and people). A run trained with a variant mask
(`--mask-variants`) is scored with the same mask, resolved again for each gene it scores. Base Enformer, with
no training, predicts every person once; each fold takes its own tune and test people from that. A run trained
on another store predicts every person of this one (see `crosscohort`): genes matched by ID with versions
ignored are "cross-cohort", the others "cross-cohort HOGP".
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from enformer_pytorch import Enformer

from . import schemas
from .crosscohort import (CROSS_SPECS, check_fold, check_result_name, cross_values, match_genes, resolve_genes, seen_people,
                          seen_summary, source_record)
from .inputs import InputError
from .loader import BatchLoader, GeneReader, evaluation_batches, split_rows
from .masking import resolve_mask
from .model import (CAGE_TRACKS, Readout, cage_prediction, check_window, enformer_from_config, enformer_from_weights,
                    load_checkpoint)
from .predict import check_finite, gene_metrics, predict
from .results import RESERVED_NAMES, blank_result, check_name, read_result, write_result
from .store import NoStore, Store
from .train import choose_device, store_identity

RUN_DIVERGED = "its weights are not finite or far too large (diverged training, a damaged file): train anew with a lower --lr into another --out"
BASE_DIVERGED = "its weights are not finite or far too large: check the --weights directory (a damaged or wrong file)"


def model_source(run: Path | None, settings: dict[str, Any]) -> tuple[str, str]:
    """What a non-finite prediction error names: a run's checkpoint or base Enformer's model, and the fix."""
    if run is not None:
        return f"checkpoint {Path(run) / 'best.pt'}", RUN_DIVERGED
    return f"base Enformer ({settings['model']})", BASE_DIVERGED


def check_predictions(predictions: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], run: Path | None,
                      settings: dict[str, Any]) -> None:
    """Refuse, before anything is written, predictions of any gene that are not finite (`predict.check_finite`)."""
    for gene_id, (_, prediction, _) in predictions.items():
        check_finite(prediction, gene_id, *model_source(run, settings))


@dataclass(frozen=True)
class EvaluateConfig:
    """Where and how to predict."""

    store: Path
    genes: tuple[str, ...] = ()
    micro_batch: int = 32
    workers: int = 0
    read_path: str = "expand"
    device: str = "auto"


def held_out_rows(store: Store, gene_id: str, fold: int) -> dict[str, np.ndarray]:
    """The fold's tune and test people of a gene (with a target)."""
    return {split: split_rows(store, gene_id, fold, split) for split in ("tune", "test")}


def score_fold(store: Store, gene_id: str, fold: int, rows: np.ndarray, prediction: np.ndarray) -> tuple[np.ndarray, float, float]:
    """A fold's prediction row (NaN for train people) and test-set r and R2."""
    row = np.full(len(store.sample_id), np.nan, dtype=np.float32)
    row[rows] = prediction
    target = store.gene(gene_id)["target"][:]
    test = split_rows(store, gene_id, fold, "test")
    r, r2 = gene_metrics(row[test], target[test])
    return row, r, r2


def fold_values(store: Store, fold: int, row: np.ndarray, r: float, r2: float, status: str) -> dict[str, np.ndarray]:
    """RESULT arrays with one fold filled in."""
    values = blank_result({"folds": store.root["sample_split"].shape[0], "samples": len(row)})
    values["prediction"][fold], values["pearson_r"][fold], values["r2"][fold], values["status"][fold] = row, r, r2, status
    return values


def load_run(run: Path, store: Store, name: str | None = None) -> tuple[Readout, dict[str, Any]]:
    """A run's best checkpoint and metadata; refused when its window is wider than the store's or its name (`name`,
    else the one recorded at training) is reserved or not a results name (`results.check_name`)."""
    if name is not None:
        check_name(name, "--name")
    path = Path(run) / "best.pt"
    stamp = checkpoint_stamp(path)  # before loading: a save in between makes results look stale, never current
    model, meta, _ = load_checkpoint(path)
    if meta["window"] > store.window:
        raise InputError(f"run {run}: its model reads {meta['window']} bp windows but store {store.path} holds {store.window} bp; build the store with --window {meta['window']}")
    if name is None:
        check_name(meta["name"], f"run {run}: the results name recorded at training", "give --name")
    if (name or meta["name"]) in RESERVED_NAMES:
        raise InputError(f"run {run}: the name {name or meta['name']!r} is reserved for a baseline; give --name (or retrain with --name)")
    return model, {**meta, "checkpoint": stamp}


def load_base(store: Store, weights: Path | None, model_config: str | None, track: int | None,
              window: int | None) -> tuple[Enformer, int, int]:
    """Base Enformer (local weights, or a random-init named config), its CAGE track (default by tissue) and window."""
    settings = base_settings(store, weights, model_config, track, window)
    track, window = settings["track"], settings["window"]
    check_window(window)
    enformer = enformer_from_weights(weights) if weights else enformer_from_config(model_config or "tiny")
    tracks = enformer.config.output_heads["human"]
    if not 0 <= track < tracks:
        raise InputError(f"--track {track}: base Enformer has {tracks} human tracks, numbered 0 to {tracks - 1} (4950 = CAGE:blood, 4980 = CAGE:brain)")
    return enformer, track, window


def base_settings(store: Store, weights: Path | None, model_config: str | None, track: int | None,
                  window: int | None) -> dict[str, Any]:
    """What base Enformer's results record of how they were made: CAGE track (default by tissue), window (default
    the store's) and model (the weights' absolute path, or `config <name>`)."""
    track = track if track is not None else CAGE_TRACKS.get(store.attrs["tissue"])
    if track is None:
        raise InputError(f"no default CAGE track for tissue {store.attrs['tissue']!r}; give --track (4950 = CAGE:blood, 4980 = CAGE:brain)")
    model = str(Path(weights).resolve()) if weights else f"config {model_config or 'tiny'}"
    return {"track": track, "window": window or store.window, "model": model}


def made_with(attrs: dict[str, Any], settings: dict[str, Any]) -> bool:
    """Whether a stored base Enformer result was made with these `base_settings` (results from before the model
    was recorded were not)."""
    return all(attrs.get(key) == value for key, value in settings.items())


def _predict_people(config: EvaluateConfig, model: Readout, meta: dict[str, Any], store: Store,
                    rows: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """A run's predictions of the chosen people (store rows) of each gene, through the run's variant mask."""
    window, mask = meta["window"], resolve_mask(store, list(rows), meta["fold"], meta.get("mask"))
    device = choose_device(config.device)
    reader = GeneReader(config.store, window, config.read_path, mask)
    return predict(model.to(device).eval(), BatchLoader(reader, config.workers, device), evaluation_batches(rows, config.micro_batch))


def evaluate_run(config: EvaluateConfig, run: Path, name: str | None = None) -> pd.DataFrame:
    """Predict held-out people of every chosen gene with a run's best checkpoint; write results; return metrics.

    A run trained on another store is scored on every person of this one (`evaluate_cross`).
    """
    store = Store(config.store)
    model, meta = load_run(run, store, name)
    named, name = name is not None, name or meta["name"]
    if meta["store"] != store_identity(store):
        for gene_id in [] if named else resolve_genes(store, config.genes):
            check_not_copied(store, gene_id, name, run, meta)
        return evaluate_cross(config, run, store, model, meta, name)
    genes = list(config.genes) or list(store.genes.index)
    for gene_id in genes:
        check_keeps_hop(store, gene_id, name, run, meta)
        if not named:
            check_not_copied(store, gene_id, name, run, meta)
    rows = {g: np.concatenate(list(held_out_rows(store, g, meta["fold"]).values())) for g in genes}
    predictions = _predict_people(config, model, meta, store, rows)
    check_predictions(predictions, run, meta)
    settings, records = gene_settings(meta, store, genes), []
    for gene_id in genes:
        gene_rows, prediction, _ = predictions.get(gene_id, (np.zeros(0, int), np.zeros(0), np.zeros(0)))
        row, r, r2 = score_fold(store, gene_id, meta["fold"], gene_rows, prediction)
        setting = settings[gene_id]
        write_result(store.path, gene_id, name, "performer", [meta["fold"]], fold_values(store, meta["fold"], row, r, r2, "ok"),
                     {**run_attrs(run, meta), "settings": {str(meta["fold"]): setting}})
        records.append({"gene_id": gene_id, "model": name, "fold": meta["fold"], "setting": setting, "pearson_r": r, "r2": r2})
    return pd.DataFrame(records)


def gene_settings(meta: dict[str, Any], store: Store, genes: Sequence[str]) -> dict[str, str]:
    """What a run's predictions of each gene are: HOP (it trained on the gene, in this store) or HOGP; for a run of
    another store, "cross-cohort" (the gene matched by unversioned ID) or "cross-cohort HOGP"."""
    if meta["store"] == store_identity(store):
        return {g: "HOP" if g in meta["genes"] else "HOGP" for g in genes}
    matched = match_genes(meta["genes"], genes).pairs
    return {g: "cross-cohort" if g in matched else "cross-cohort HOGP" for g in genes}


def check_keeps_hop(store: Store, gene_id: str, name: str, run: Path, meta: dict[str, Any],
                    group: str = schemas.RESULTS_GROUP) -> None:
    """A run that did not train on a gene may not replace, under the same name and fold, the result of a run
    that did (single-gene runs of `pstore run` share one name: evaluating one on every gene would)."""
    found = None if gene_settings(meta, store, [gene_id])[gene_id] == "HOP" else read_result(store.path, gene_id, name, group)
    fold = str(meta["fold"])
    other = found[1].get("runs", {}).get(fold) if found else None
    if other and other != str(Path(run).resolve()) and found[1].get("settings", {}).get(fold) == "HOP":
        raise InputError(f"store {store.path}: gene {gene_id} fold {fold} holds result {name!r} of run {other}, which trained on "
                         f"it, and run {run} did not; give --name to keep both, or --gene for the genes this run trained on")


def check_not_copied(store: Store, gene_id: str, name: str, run: Path, meta: dict[str, Any],
                     group: str = schemas.RESULTS_GROUP) -> None:
    """Under the results name recorded at training (no --name), a run may not replace a fold that another run
    directory, still there with its best.pt, wrote in the same setting (HOP, HOGP, ...): a copy (cp -r A B) records
    A's name and would take over A's results. A moved run (its old directory gone) takes its results over, and a
    run's HOP result replaces another run's HOGP one (single-gene runs sharing a name)."""
    found = read_result(store.path, gene_id, name, group)
    fold, here = str(meta["fold"]), Path(run).resolve()
    other = found[1].get("runs", {}).get(fold) if found else None
    same_setting = found is not None and found[1].get("settings", {}).get(fold) == gene_settings(meta, store, [gene_id])[gene_id]
    if other and other != str(here) and same_setting and (Path(other) / "best.pt").is_file():
        raise InputError(f"store {store.path}: genes/{gene_id}/{group}/{name} fold {fold} was made by run {other}, which still "
                         f"exists, and run {run} records the same results name (a copy of it?); give --name {here.name} to keep "
                         f"both, or --name {name} to replace them")


def run_store_path(run: Path) -> str | None:
    """The store path a run was trained on, as its run.json records it (None without run.json)."""
    record = Path(run) / "run.json"
    return json.loads(record.read_text())["config"]["store"] if record.is_file() else None


def training_store(run: Path, meta: dict[str, Any]) -> Store:
    """The store a run was trained in, at the path its run.json records: it tells which people the run saw. Refused
    when run.json or the store is missing, or when that path now holds another store."""
    path = run_store_path(run)
    why = ("no run.json names it" if path is None else f"{path} (config.store in its run.json) is not a store now")
    fix = (f"cross-cohort scoring needs it to leave out the people the run saw: put that store back at {path or 'its path'} "
           f"or correct config.store in {Path(run) / 'run.json'}")
    try:
        source = Store(path) if path is not None else None
    except NoStore:
        source = None
    if source is None:
        raise InputError(f"run {run}: the store it was trained in cannot be found ({why}); {fix}")
    if store_identity(source) != meta["store"]:
        raise InputError(f"run {run}: {path} (config.store in its run.json) now holds another store than the run was trained in; {fix}")
    return source


def evaluate_cross(config: EvaluateConfig, run: Path, store: Store, model: Readout, meta: dict[str, Any],
                   name: str) -> pd.DataFrame:
    """Every person of the chosen genes the run did not see, predicted by a run of another store, written into the
    run's fold (`crosscohort.seen_people`: people who trained it are left out and counted).

    The table's `attrs["genes"]` says how many of the run's genes were matched in this store and people left out.
    """
    check_fold(store, meta["fold"], f"run {run}")
    genes = resolve_genes(store, config.genes)
    match = match_genes(meta["genes"], genes, f"run {run}", f"store {store.path}")
    origin = training_store(run, meta)
    seen = seen_people(origin, store, meta["fold"], f"run {run}")
    source = source_record(meta["store"], run_store_path(run))
    for gene_id in genes:
        check_result_name(store, gene_id, name, "performer", source)
    everyone = np.arange(len(store.sample_id))
    predictions = _predict_people(config, model, meta, store, {g: everyone for g in genes})
    check_predictions(predictions, run, meta)
    fold, settings, records = meta["fold"], gene_settings(meta, store, genes), []
    for gene_id in genes:
        rows, prediction, _ = predictions[gene_id]
        row = np.full(len(everyone), np.nan, dtype=np.float32)
        row[rows] = prediction
        values = cross_values(store, gene_id, fold, row, "ok", seen)
        attrs = {**run_attrs(run, meta), "source_store": source, "source_gene_id": match.pairs.get(gene_id),
                 "settings": {str(fold): settings[gene_id]}, "seen_in_training": {str(fold): int(seen.sum())}}
        write_result(store.path, gene_id, name, "performer", [fold], values, attrs, CROSS_SPECS)
        setting = settings[gene_id]
        records.append({"gene_id": gene_id, "model": name, "fold": fold, "setting": setting,
                        **{key: float(values[key][fold]) for key in ("pearson_r", "r2", "cross_pearson_r", "cross_r2")}})
    table = pd.DataFrame(records)
    table.attrs["genes"] = (f"{match.summary(f'run {Path(run).name}', store.path.name)}; every person of {store.path.name} "
                            f"the run did not see predicted, metrics on fold {fold}'s test people (pearson_r, r2) and on "
                            f"everyone (cross_*)\n{seen_summary({fold: int(seen.sum())}, store.path.name, origin.path.name)}")
    return table


def checkpoint_stamp(path: Path) -> str | None:
    """A checkpoint file's save as modification time and size (None when missing): results record it, so a run
    whose best checkpoint moved since (resumed training, retraining) counts as not yet scored."""
    try:
        saved = Path(path).stat()
    except OSError:
        return None
    return f"{saved.st_mtime_ns}:{saved.st_size}"


def run_source(run: Path, fold: int, stamp: str | None) -> dict[str, dict[str, str | None]]:
    """The result attributes naming the run directory and the checkpoint save that made a fold."""
    return {"runs": {str(fold): str(Path(run).resolve())}, "checkpoints": {str(fold): stamp}}


def current_source(run: Path, fold: int) -> dict[str, dict[str, str | None]]:
    """`run_source` of a run's best checkpoint as it is on disk now."""
    return run_source(run, fold, checkpoint_stamp(Path(run) / "best.pt"))


def made_by(attrs: dict[str, Any], source: dict[str, Any], fold: int) -> bool:
    """Whether a stored result's fold came from the run directory and checkpoint save that `source` names."""
    return all(attrs.get(key, {}).get(str(fold)) == source.get(key, {}).get(str(fold)) for key in ("runs", "checkpoints"))


def run_attrs(run: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """What a result records of the run that made it: the run directory and checkpoint save per fold, and a
    masked run's mask spec."""
    fold, mask = str(meta["fold"]), meta.get("mask")
    masked = {"mask": {fold: mask.get("file", f"top-enet:{mask.get('top_enet')}")}} if mask else {}
    return {**run_source(run, meta["fold"], meta["checkpoint"]), **masked}


def evaluate_base(config: EvaluateConfig, weights: Path | None, model_config: str | None, track: int | None,
                  window: int | None = None) -> pd.DataFrame:
    """Base Enformer's CAGE prediction for every person, scored per fold on the same people as every model."""
    store = Store(config.store)
    settings = base_settings(store, weights, model_config, track, window)
    enformer, track, window = load_base(store, weights, model_config, track, window)
    device = choose_device(config.device)
    enformer = enformer.to(device).eval()
    genes = list(config.genes) or list(store.genes.index)
    everyone = {g: np.flatnonzero(~np.isnan(store.gene(g)["target"][:])) for g in genes}
    reader = GeneReader(config.store, window, config.read_path)
    predictions = predict(partial(cage_prediction, enformer, track=track), BatchLoader(reader, config.workers, device),
                          evaluation_batches(everyone, config.micro_batch))
    check_predictions(predictions, None, settings)
    n_folds = store.root["sample_split"].shape[0]
    records = []
    for gene_id in genes:
        gene_rows, prediction, _ = predictions.get(gene_id, (np.zeros(0, int), np.zeros(0), np.zeros(0)))
        for fold in range(n_folds):
            held = np.concatenate(list(held_out_rows(store, gene_id, fold).values()))
            keep = np.isin(gene_rows, held)
            row, r, r2 = score_fold(store, gene_id, fold, gene_rows[keep], prediction[keep])
            write_result(store.path, gene_id, "enformer", "enformer", [fold], fold_values(store, fold, row, r, r2, "ok"), settings)
            records.append({"gene_id": gene_id, "model": "enformer", "fold": fold, "setting": "base", "pearson_r": r, "r2": r2})
    return pd.DataFrame(records)


def mean_metrics(table: pd.DataFrame) -> dict[str, float]:
    """Mean r and R2 over genes, NaNs skipped (NaN, not a warning, when no gene has a value), for summaries."""
    return {column: float(table[column].mean()) if len(table) else math.nan for column in ("pearson_r", "r2")}
