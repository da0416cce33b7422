"""Variant masks (`pstore train --mask-variants`): chosen SNVs set to the reference in every input of a run.

A mask is given as `top-enet:K` (per gene, the K SNVs with the largest |elastic-net coefficient| of the run's
fold; non-zero coefficients only, ties in variant-table order) or as a TSV of variants in the format of
`analysis.read_variant_list` (contig and 1-based position required; gene_id, ref and alt matched when given; a
row without gene_id masks that SNV in every gene window holding it). Per gene a mask resolves to window offsets
(0-based from the stored window's start): the loader drops every variant-table row at a masked offset (expand
path) and puts the reference back there (stored path), so on both paths every person's one-hot at a masked
position is the reference one-hot. The spec (a file's rows included, so the file need not stay) is recorded in
the run's run.json and checkpoints; `pstore evaluate` resolves it again for the genes it scores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .analysis import ENET_MODEL, listed, read_variant_list
from .inputs import InputError
from .results import NOT_RUN, read_result
from .store import Store

TOP_ENET = "top-enet:"


def parse_mask(spec: str) -> dict[str, Any]:
    """A mask spec as recorded in run.json: {'top_enet': K} or {'file': path, 'columns': ..., 'variants': the TSV's rows}."""
    if spec.startswith(TOP_ENET):
        k = spec[len(TOP_ENET):]
        if not k.isdigit() or int(k) < 1:
            raise InputError(f"--mask-variants {spec}: give top-enet:K with K a positive integer (e.g. top-enet:5)")
        return {"top_enet": int(k)}
    variants = read_variant_list(Path(spec))
    return {"file": str(Path(spec).resolve()), "columns": list(variants.columns),
            "variants": variants.astype(object).to_numpy().tolist()}


def mask_name(spec: str) -> str:
    """The suffix a masked run's results name gets: `mask<K>` for top-enet:K, `mask_<file stem>` for a file."""
    return f"mask{spec[len(TOP_ENET):]}" if spec.startswith(TOP_ENET) else f"mask_{Path(spec).stem}"


def gene_table(store: Store, gene_id: str) -> tuple[pd.DataFrame, np.ndarray]:
    """A gene's variant table as (gene_id, contig, position, ref, alt) rows, and each row's window offset."""
    group = store.gene(gene_id)
    position = group["variant_position"][:].astype(np.int64)
    alleles = group["variant_allele"][:].astype(object).reshape(-1, 2)
    table = pd.DataFrame({"gene_id": np.full(len(position), gene_id, dtype=object), "contig": group.attrs["contig"],
                          "position": position, "ref": alleles[:, 0], "alt": alleles[:, 1]})
    return table, position - 1 - int(group.attrs["window_start"])


class MissingEnet(InputError):
    """A top-enet:K mask met a gene without the elastic net of the fold it ranks variants by. The message advises
    `pstore enet`; a caller with another way to fit it (`pstore run`'s enet step) rewords it from the fields."""

    def __init__(self, store: Path, gene_id: str, fold: int, k: int):
        self.store, self.gene_id, self.fold, self.k = store, gene_id, fold, k
        super().__init__(f"store {store}: gene {gene_id} has no elastic net for fold {fold}, which --mask-variants "
                         f"top-enet:{k} ranks variants by; run `pstore enet --store {store} --folds {fold}` first")


def top_enet_rows(store: Store, gene_id: str, fold: int, k: int) -> np.ndarray:
    """Variant-table rows of the K largest non-zero |elastic-net coefficients| of a gene's fold."""
    found = read_result(store.path, gene_id, ENET_MODEL)
    if found is None or found[0]["status"][fold] == NOT_RUN:
        raise MissingEnet(store.path, gene_id, fold, k)
    weight = np.nan_to_num(np.abs(found[0]["enet_coefficient"][fold].astype(np.float64)))
    order = np.argsort(-weight, kind="stable")[:k]
    return order[weight[order] > 0]


def masked_offsets(store: Store, gene_id: str, fold: int, mask: Mapping[str, Any]) -> np.ndarray:
    """Sorted window offsets (0-based from the stored window's start) that a mask sets to the reference in a gene."""
    table, offsets = gene_table(store, gene_id)
    if "top_enet" in mask:
        rows = top_enet_rows(store, gene_id, fold, int(mask["top_enet"]))
    else:
        variants = pd.DataFrame(mask["variants"], columns=mask["columns"]).astype({"position": np.int64})
        rows = np.flatnonzero(listed(table, variants))
    return np.unique(offsets[rows])


def resolve_mask(store: Store, genes: Sequence[str], fold: int, mask: Mapping[str, Any] | None) -> dict[str, np.ndarray]:
    """Masked offsets of each gene (empty without a mask)."""
    if mask is None:
        return {}
    return {gene_id: masked_offsets(store, gene_id, fold, mask) for gene_id in genes}


def masked_positions(store: Store, offsets: Mapping[str, np.ndarray]) -> dict[str, list[int]]:
    """Masked offsets as VCF positions (1-based), for run.json."""
    return {g: (o + 1 + int(store.gene(g).attrs["window_start"])).tolist() for g, o in offsets.items()}
