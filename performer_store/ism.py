"""`pstore ism`: in-silico mutagenesis of every SNV in a gene's variant table, into `genes/<gene>/ism/<model>`.

Per gene the reference window (the gene's `reference_onehot`, cropped to the model's window and centred as the
loader does) is predicted once, then the same window with each SNV's ALT base, many SNVs per forward pass;
score = ALT minus REF prediction (Performer: its track at the centre bin; base Enformer: the CAGE track summed
over the 3 centre bins). SNVs outside the model's window are not scored (NaN). The default method, `splice`,
recomputes the conv tower only around each SNV (`splice.TowerSplice`, Enformer only); `full` runs whole windows
(the only method for Borzoi runs, read at their centre 32-bp bin). A run fills its fold's row; base Enformer
fills every fold with the same scores. A run trained with a variant mask (`--mask-variants`) scores every SNV,
masked ones included (ISM starts from the reference window, which the mask leaves as it is): a masked SNV's
score is what the model infers from sequence for a variant it never saw vary; the result's `mask` attribute
names the mask.
"""

from __future__ import annotations

import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from enformer_pytorch import Enformer
from torch import nn
from tqdm.auto import tqdm

from . import schemas
from .encode import base_codes
from .evaluate import (base_settings, check_keeps_hop, check_not_copied, gene_settings, load_base, load_run, made_by, made_with,
                       model_source, run_attrs)
from .inputs import InputError
from .loader import GeneReader
from .model import Readout
from .predict import autocast, check_finite
from .results import blank_result, read_result, write_result
from .splice import FullForward, TowerSplice
from .store import Store
from .train import choose_device


@dataclass(frozen=True)
class IsmConfig:
    """Which genes to score and how."""

    store: Path
    genes: tuple[str, ...] = ()
    batch: int = 32
    method: str = "splice"
    device: str = "auto"
    bf16: bool = False
    force: bool = False
    progress: bool = True


@dataclass(frozen=True)
class IsmModel:
    """A model to score with: its name in the store, kind, the folds its scores fill, its window, the module to
    put on a device, its readout from (batch, bins, features) embeddings to (batch,) predictions, what its results
    record of it, for a run its directory and checkpoint metadata (None for base Enformer), and whether its name was
    given (--name) rather than recorded at training."""

    name: str
    kind: str
    folds: tuple[int, ...]
    window: int
    module: nn.Module
    readout: Callable[[torch.Tensor], torch.Tensor]
    attrs: dict[str, Any]
    run: Path | None = None
    meta: dict[str, Any] | None = None
    settings: dict[str, str] | None = None
    named: bool = False

    @property
    def trunk(self) -> nn.Module:
        """The network that makes the embeddings (a run's backbone trunk, or base Enformer)."""
        return self.module.trunk if isinstance(self.module, Readout) else self.module

    @property
    def splices(self) -> bool:
        """Whether the conv-tower splice applies (Enformer's tower; Borzoi's U-net has none to splice)."""
        return isinstance(self.trunk, Enformer)

    def predictor(self, method: str, reference: torch.Tensor) -> FullForward | TowerSplice:
        """The REF/ALT embedding maker of a method for a reference window (window, 4)."""
        if method == "splice":
            return TowerSplice(self.trunk, reference)
        embed = self.module.embeddings if isinstance(self.module, Readout) else partial(self.module, return_only_embeddings=True)
        return FullForward(embed, reference)

    def gene_attrs(self, gene_id: str) -> dict[str, Any]:
        """What a gene's result records of this model: a run's folds also say HOP (it trained on the gene), HOGP or,
        for a run of another store, cross-cohort (`evaluate.gene_settings`)."""
        if self.settings is None:
            return self.attrs
        return {**self.attrs, "settings": {str(f): self.settings[gene_id] for f in self.folds}}

    def check_finite(self, gene_id: str, values: np.ndarray) -> None:
        """Refuse a gene's non-finite predictions or scores, naming the checkpoint or base model (`predict.check_finite`)."""
        check_finite(values, gene_id, *model_source(self.run, self.attrs))

    def check_keeps_hop(self, store: Store, gene_id: str, group: str) -> None:
        """A run may not replace a result another run made on its own gene under the same name (`evaluate.check_keeps_hop`),
        nor, under its recorded name, one of a run it was copied from (`evaluate.check_not_copied`)."""
        if self.run is not None and self.meta is not None:
            check_keeps_hop(store, gene_id, self.name, self.run, self.meta, group)
            if not self.named:
                check_not_copied(store, gene_id, self.name, self.run, self.meta, group)


def centre_track(head: nn.Module, embeddings: torch.Tensor) -> torch.Tensor:
    """A run's prediction from its embeddings: the linear track at the centre bin (as `Readout.forward`)."""
    return head(embeddings[:, embeddings.shape[1] // 2])[:, 0]


def cage_sum(head: nn.Module, track: int, embeddings: torch.Tensor) -> torch.Tensor:
    """Base Enformer's prediction from its embeddings: one human track summed over the 3 centre bins (as
    `model.cage_prediction`)."""
    centre = embeddings.shape[1] // 2
    return head(embeddings[:, centre - 1 : centre + 2])[..., track].sum(dim=1)


def performer_model(run: Path, store: Store, name: str | None = None) -> IsmModel:
    """A run's best checkpoint (either backbone and mode), under `name` (default the name recorded at training); its
    scores fill the run's fold."""
    model, meta = load_run(run, store, name)
    return IsmModel(name or meta["name"], "performer", (meta["fold"],), meta["window"], model, partial(centre_track, model.head),
                    run_attrs(run, meta), Path(run), meta, gene_settings(meta, store, list(store.genes.index)), name is not None)


def enformer_model(store: Store, weights: Path | None, model_config: str | None, track: int | None,
                   window: int | None) -> IsmModel:
    """Base Enformer and its CAGE track (as `pstore evaluate --base`); its scores fill every fold."""
    enformer, track, window = load_base(store, weights, model_config, track, window)
    folds = tuple(range(store.root["sample_split"].shape[0]))
    return IsmModel("enformer", "enformer", folds, window, enformer, partial(cage_sum, enformer.heads["human"], track),
                    base_settings(store, weights, model_config, track, window))


def gene_snvs(reader: GeneReader, gene_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A gene's reference one-hot in the reader's window (window, 4), and each variant's 0-based offset in that
    window and ALT code (0-3, ACGT), in variant-table order."""
    group = reader.group(gene_id)
    reference = group["reference_onehot"][reader.offset : reader.offset + reader.window]
    offsets = group["variant_position"][:].astype(np.int64) - 1 - int(group.attrs["window_start"]) - reader.offset
    alts = base_codes(group["variant_allele"][:, 1]).astype(np.int64) if len(offsets) else np.zeros(0, np.int64)
    return reference, offsets, alts


@torch.inference_mode()
def score_window(model: IsmModel, reference: torch.Tensor, offsets: torch.Tensor, alts: torch.Tensor, method: str = "splice",
                 batch: int = 32, bf16: bool = False, advance: Callable[[int], Any] | None = None) -> tuple[float, np.ndarray]:
    """Prediction of a reference window (window, 4) and the ALT-minus-REF scores (float64) of SNVs in it, given by
    0-based offsets and ALT codes, `batch` SNVs per forward pass; `advance(n)` is called after each batch."""
    with autocast(reference.device) if bf16 else nullcontext():
        predictor = model.predictor(method, reference)
        before = model.readout(predictor.reference_embeddings()).double()
        scores = [torch.zeros(0, dtype=torch.float64, device=reference.device)]
        for first in range(0, len(offsets), batch):
            part = slice(first, first + batch)
            scores.append(model.readout(predictor.embeddings(offsets[part], alts[part])).double() - before)
            if advance is not None:
                advance(len(scores[-1]))
    return float(before), torch.cat(scores).cpu().numpy()


def is_scored(store: Path, gene_id: str, model: IsmModel, method: str) -> bool:
    """True when the gene's ISM group of this model holds all of its folds, scored by this method and (for a run)
    by this run directory's current best checkpoint (for base Enformer: with its settings, `evaluate.made_with`)."""
    found = read_result(store, gene_id, model.name, schemas.ISM_GROUP)
    if found is None:
        return False
    arrays, attrs = found
    return all(arrays["status"][f] == "ok" and attrs.get("method", {}).get(str(f)) == method and made_by(attrs, model.attrs, f)
               for f in model.folds) and (model.run is not None or made_with(attrs, model.attrs))


def write_scores(store: Store, gene_id: str, model: IsmModel, method: str, reference: float, scores: np.ndarray) -> None:
    """Store a gene's scores (one per variant of its table) in the model's folds of `genes/<gene>/ism/<model>`."""
    folds = list(model.folds)
    values = blank_result({"folds": store.root["sample_split"].shape[0], "variants": len(scores)}, (schemas.ISM_RESULT,))
    values["ism_score"][folds], values["ism_reference"][folds], values["status"][folds] = scores, reference, "ok"
    write_result(store.path, gene_id, model.name, model.kind, folds, values, {**model.gene_attrs(gene_id), "method": {str(f): method for f in folds}},
                 specs=(schemas.ISM_RESULT,), group=schemas.ISM_GROUP)


def run_ism(config: IsmConfig, model: IsmModel) -> pd.DataFrame:
    """Score the SNVs of every chosen gene with a model and write them to the store; one row per gene.

    Genes whose ISM group already holds the model's folds by the same method are skipped unless `force`.
    """
    if config.method == "splice" and not model.splices:
        raise InputError(f"ism of {model.name}: the conv-tower splice is Enformer's; give --exact-full (whole-window passes) for a {model.module.backbone} run")
    store = Store(config.store)
    genes = list(config.genes) or list(store.genes.index)
    for gene_id in genes:
        store.gene(gene_id)  # an unknown gene stops the run before anything is computed or written
    reader = GeneReader(store.path, model.window)
    device = choose_device(config.device)
    if config.bf16 and device.type != "cuda":
        raise InputError(f"--bf16: bf16 autocast runs on CUDA only and the device is {device.type}; drop --bf16 (scores are float32)")
    done = {g for g in genes if not config.force and is_scored(store.path, g, model, config.method)}
    todo = [g for g in genes if g not in done]
    for gene_id in todo:
        model.check_keeps_hop(store, gene_id, schemas.ISM_GROUP)
    module = model.module.to(device).eval()
    dtype = next(module.parameters()).dtype
    records = [{"gene_id": g, "variants": int(store.genes.at[g, "gene_n_variants"]), "scored": 0, "status": "already complete"}
               for g in genes if g in done]
    total = int(store.genes.loc[todo, "gene_n_variants"].sum()) if todo else 0
    with tqdm(total=total, desc="ism", unit="SNV", disable=not config.progress, file=sys.stderr) as bar:
        for gene_id in todo:
            bar.set_postfix_str(gene_id)
            started = time.perf_counter()
            reference, offsets, alts = gene_snvs(reader, gene_id)
            inside = (offsets >= 0) & (offsets < model.window)
            bar.update(int((~inside).sum()))
            prediction, inside_scores = score_window(
                model, torch.from_numpy(reference).to(device, dtype), torch.from_numpy(offsets[inside]).to(device),
                torch.from_numpy(alts[inside]).to(device), config.method, config.batch, config.bf16, bar.update)
            model.check_finite(gene_id, np.append(inside_scores, prediction))
            scores = np.full(len(offsets), np.nan)
            scores[inside] = inside_scores
            write_scores(store, gene_id, model, config.method, prediction, scores)
            records.append({"gene_id": gene_id, "variants": len(offsets), "scored": int(inside.sum()), "status": "scored",
                            "reference": prediction, "max_abs_score": float(np.abs(inside_scores).max(initial=0.0)),
                            "seconds": time.perf_counter() - started})
    return pd.DataFrame(records, columns=["gene_id", "variants", "scored", "status", "reference", "max_abs_score", "seconds"])
