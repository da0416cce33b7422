"""`pstore enet --from-store A`: the elastic nets (or lassos) fitted in store A predict the people of store B.

Nothing is fitted: fold f of A's model predicts every person of B it did not see into B's fold f (see
`crosscohort` for the genes, people and metrics). A model's variants are found in B's variant table of the same gene by position,
REF and ALT (both stores' windows lie on one contig per gene, checked): the same REF and ALT count B's ALT
calls; REF and ALT swapped count B's REF calls (the source's ALT allele); a variant B lacks contributes 0, as a
missing call does in the elastic net itself. Per gene and fold the result stores how many of the model's
non-zero coefficients were found (schemas.TRANSFER_RESULT). Windows must be as long in both stores, and a gene
whose window lies elsewhere in B (another contig or TSS) is skipped with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import zarr

from . import schemas
from .crosscohort import (CROSS_SPECS, GeneMatch, check_result_name, cross_values, match_genes, resolve_genes, seen_people,
                          source_record)
from .inputs import InputError
from .predict import check_finite
from .results import check_name, read_result, write_result
from .store import Store
from .train import store_identity

SOURCE_MODELS = ("enet", "lasso")
SPECS = (*CROSS_SPECS, schemas.TRANSFER_RESULT)
COLUMNS = ["gene_id", "source_gene_id", "fold", "status", "pearson_r", "r2", "cross_pearson_r", "cross_r2",
           "n_nonzero", "n_found", "n_flipped", "variant_share"]


def _allele_keys(position: np.ndarray, first: np.ndarray, second: np.ndarray) -> pd.Index:
    """'position:first>second' per variant."""
    return pd.Index(pd.Series(position).astype(str) + ":" + pd.Series(first, dtype=str) + ">" + pd.Series(second, dtype=str))


def match_variants(source_position: np.ndarray, source_allele: np.ndarray, target_position: np.ndarray,
                   target_allele: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per source variant: its row in the target's table (-1 when absent) and whether REF and ALT are swapped there.

    Alleles are (variants, 2) arrays of REF then ALT, as `variant_allele`; positions are VCF POS.
    """
    rows = pd.Series(np.arange(len(target_position)),
                     index=_allele_keys(target_position, target_allele[:, 0], target_allele[:, 1]))
    rows = rows[~rows.index.duplicated()]
    same = rows.reindex(_allele_keys(source_position, source_allele[:, 0], source_allele[:, 1])).to_numpy()
    swapped = rows.reindex(_allele_keys(source_position, source_allele[:, 1], source_allele[:, 0])).to_numpy()
    flipped = np.isnan(same) & ~np.isnan(swapped)
    found = np.where(np.isnan(same), swapped, same)
    return np.where(np.isnan(found), -1, found).astype(np.int64), flipped


def source_dosage(call_genotype: np.ndarray, rows: np.ndarray, flipped: np.ndarray) -> np.ndarray:
    """(people, source variants) count of each source variant's ALT allele among the target's calls.

    `call_genotype` is the target's (variants, people, ploidy) array; rows of -1 (absent) and missing calls count 0.
    """
    dosage = np.zeros((call_genotype.shape[1], len(rows)))
    found = rows >= 0
    carries = np.where(flipped[found], 0, 1)  # the call that holds the source's ALT: B's REF when swapped
    dosage[:, found] = (call_genotype[rows[found]] == carries[:, None, None]).sum(axis=-1).T
    return dosage


def _window_disagreement(source: Store, source_id: str, target: Store, target_id: str) -> str:
    """Why a gene's windows differ between the stores ('' when they agree)."""
    a, b = source.genes.loc[source_id], target.genes.loc[target_id]
    if (a["gene_contig"], a["gene_window_start"]) == (b["gene_contig"], b["gene_window_start"]):
        return ""
    return (f"window differs: {a['gene_contig']}:{a['gene_window_start']}-{a['gene_window_stop']} in {source.path.name}, "
            f"{b['gene_contig']}:{b['gene_window_start']}-{b['gene_window_stop']} in {target.path.name}")


def _check_source_model(prediction: np.ndarray, gene_id: str, source: Store, model: str, source_gene: str, fold: int) -> None:
    """Refuse predictions that are not finite as stored (float32), e.g. from a hand-edited source store whose
    coefficients or intercept are nan or inf (`predict.check_finite`), naming the gene, the source store and the fix."""
    refit = f"pstore enet --store {source.path} --model {model} --gene {source_gene} --folds {fold} --force"
    check_finite(prediction.astype(np.float32), gene_id, f"{model} of store {source.path}",
                 f"its fold {fold} of gene {source_gene} has coefficients or an intercept that are not finite (or too large): "
                 f"refit it with `{refit}`")


def transfer_values(target: Store, gene_id: str, source: tuple[dict[str, np.ndarray], zarr.Group], folds: Sequence[int],
                    origin: Store, model: str, seen: dict[int, np.ndarray]) -> dict[str, np.ndarray]:
    """Result arrays of the given folds: each fold of `origin`'s `model` applied to every target person it did not see
    (`seen`: per fold, the target people who were the source fold's train or tune people)."""
    fitted, source_group = source
    group = target.gene(gene_id)
    rows, flipped = match_variants(source_group["variant_position"][:], source_group["variant_allele"][:],
                                   group["variant_position"][:], group["variant_allele"][:])
    calls = group["call_genotype"][:]
    values: dict[str, np.ndarray] = {}
    for fold in folds:
        status, intercept = fitted["status"][fold], float(fitted["enet_intercept"][fold])
        nonzero = np.flatnonzero(fitted["enet_coefficient"][fold] != 0)  # nan counts: it must not vanish unnoticed
        if np.isnan(intercept):
            prediction = np.full(calls.shape[1], np.nan)
            counts = (-1, -1, -1)
            status = f"no model in {origin.path.name}: {status}"
        else:
            dosage = source_dosage(calls, rows[nonzero], flipped[nonzero])
            prediction = dosage @ fitted["enet_coefficient"][fold][nonzero].astype(np.float64) + intercept
            _check_source_model(prediction, gene_id, origin, model, str(source_group.attrs["gene_id"]), fold)
            counts = (len(nonzero), int((rows[nonzero] >= 0).sum()), int(flipped[nonzero].sum()))
            status = "ok" if status == "ok" else f"ok (source fold: {status})"
        row = cross_values(target, gene_id, fold, prediction, status, seen[fold], SPECS)
        row["transfer_n_nonzero"][fold], row["transfer_n_found"][fold], row["transfer_n_flipped"][fold] = counts
        row["transfer_variant_share"][fold] = counts[1] / counts[0] if counts[0] > 0 else np.nan
        for name, array in row.items():
            values.setdefault(name, array)[fold] = array[fold]
    return values


@dataclass(frozen=True)
class TransferReport:
    """What `run_transfer` did: the result name, the per-fold table, the gene match, genes skipped (with why), genes
    transferred now and people left out per fold."""

    name: str
    table: pd.DataFrame
    genes: GeneMatch
    skipped: dict[str, str]
    transferred: int
    seen: dict[int, int]  # per fold: target people left out as the source fold's train or tune people


def _source_result(source: Store, gene_id: str, model: str, folds: Sequence[int]) -> dict[str, np.ndarray]:
    """A source gene's linear-model arrays, refused when it lacks a requested fold."""
    found = read_result(source.path, gene_id, model)
    missing = sorted(set(folds) - set(found[1]["folds"])) if found else list(folds)
    if missing:
        raise InputError(f"store {source.path}: gene {gene_id} has no {model} result for fold(s) {', '.join(map(str, missing))}; "
                         f"run `pstore enet --store {source.path} --model {model}` first")
    return found[0]


def _check_stores(target: Store, source: Store, model: str, name: str) -> None:
    """Windows of one length, a known linear model and a free result name."""
    if target.path.resolve() == source.path.resolve():
        raise InputError(f"--from-store {source.path}: the same store as --store; give another cohort's store")
    if target.window != source.window:
        raise InputError(f"store {source.path} holds {source.window} bp windows but store {target.path} holds {target.window} bp: "
                         f"the model's variants come from its windows; build {target.path} with --window {source.window}")
    if model not in SOURCE_MODELS:
        raise InputError(f"--model {model}: unknown; choose one of {', '.join(SOURCE_MODELS)}")
    if name in (*SOURCE_MODELS, "enformer"):
        raise InputError(f"--name {name}: reserved for this store's own models; choose another name")


def run_transfer(store: Path, source: Path, genes: Sequence[str] = (), folds: Sequence[int] | None = None,
                 model: str = "enet", name: str | None = None) -> TransferReport:
    """Predict a store's people with another store's linear models; returns the report (genes done are skipped)."""
    target, origin = Store(store), Store(source)
    if name is not None:
        check_name(name, "--name")
    name = name or check_name(f"{model}_from_{origin.path.name.removesuffix('.zarr')}",
                              f"--from-store {source}: the default results name", "give --name")
    _check_stores(target, origin, model, name)
    folds = sorted(set(range(target.root["sample_split"].shape[0]) if folds is None else folds))
    for fold in folds:
        target.split(fold)  # refuses folds the store does not have
    match = match_genes(list(origin.genes.index), resolve_genes(target, genes), f"store {origin.path}", f"store {target.path}")
    record = source_record(store_identity(origin), origin.path.resolve())
    skipped = {g: _window_disagreement(origin, s, target, g) for g, s in match.pairs.items()}
    skipped = {g: why for g, why in skipped.items() if why}
    todo = [g for g in match.pairs if g not in skipped]
    seen = {fold: seen_people(origin, target, fold, f"{model} of fold {fold}") for fold in folds}
    transferred = 0
    for gene_id in todo:
        check_result_name(target, gene_id, name, f"{model}_transfer", record)
        previous = read_result(target.path, gene_id, name)
        if previous and set(folds) <= set(previous[1]["folds"]) and {str(f) for f in folds} <= set(previous[1].get("seen_in_training", {})):
            continue  # done, and with the people the source saw left out (results from before that are made again)
        source_id = match.pairs[gene_id]
        fitted = (_source_result(origin, source_id, model, folds), origin.gene(source_id))
        values = transfer_values(target, gene_id, fitted, folds, origin, model, seen)
        write_result(target.path, gene_id, name, f"{model}_transfer", folds, values,
                     {"source_store": record, "source_gene_id": source_id, "source_model": model,
                      "seen_in_training": {str(fold): int(seen[fold].sum()) for fold in folds}}, SPECS)
        transferred += 1
    return TransferReport(name, transfer_table(target, todo, name, folds), match, skipped, transferred,
                          {fold: int(mask.sum()) for fold, mask in seen.items()})


def transfer_table(store: Store, genes: Sequence[str], name: str, folds: Sequence[int]) -> pd.DataFrame:
    """One row per gene and fold of a transferred model: status, test and all-people metrics, variants found."""
    records = []
    for gene_id in genes:
        arrays, attrs = read_result(store.path, gene_id, name)
        records += [{"gene_id": gene_id, "source_gene_id": attrs["source_gene_id"], "fold": fold, "status": arrays["status"][fold],
                     **{key: float(arrays[key][fold]) for key in ("pearson_r", "r2", "cross_pearson_r", "cross_r2")},
                     **{key: int(arrays[f"transfer_{key}"][fold]) for key in ("n_nonzero", "n_found", "n_flipped")},
                     "variant_share": float(arrays["transfer_variant_share"][fold])} for fold in folds]
    return pd.DataFrame(records, columns=COLUMNS)
