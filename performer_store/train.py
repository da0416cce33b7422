"""`pstore train`: fine-tune Performer on people of one or many genes, with early stopping and resume.

Loss, optimizer and stopping follow the method: 0.5 x MSE + 0.5 x MSE of all pairwise differences within a
micro-batch; AdamW (weight decay 0.01), lr 5e-6 (1e-3 in transfer mode: trunk frozen, the linear track alone
trains), gradient-norm clip 0.05, micro-batch 32 x accumulation 4; the same for either backbone (Enformer,
Borzoi: see `model.py`);
after every epoch the tune people of every training gene are predicted, the mean per-gene R2 decides early
stopping (patience 20) and the best checkpoint. Multi-process training runs under torchrun (DDP: NCCL on
GPUs, gloo on CPU); each rank takes whole one-gene blocks.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from .inputs import InputError, make_directory
from . import schemas
from .loader import (BatchLoader, GeneReader, epoch_blocks, evaluation_batches, micro_batches, rank_blocks, split_rows,
                     train_people)
from .masking import masked_positions, parse_mask, resolve_mask
from .model import (MODES, Readout, backbone, build_readout, check_checkpointing, check_mode, load_checkpoint,
                    recompute_activations, save_checkpoint)
from .predict import autocast, gene_metrics, predict
from .results import RESERVED_NAMES, check_name, replace_atomically
from .store import Store, directory_lock


@dataclass(frozen=True)
class TrainConfig:
    """Everything `pstore train` was asked to do."""

    store: Path
    genes: tuple[str, ...]
    fold: int
    out: Path
    config: str | None = None  # a named random-init config (tiny, small, full) ...
    weights: Path | None = None  # ... or local pretrained weights of the backbone
    backbone: str = "enformer"  # enformer or borzoi (`model.BACKBONE_MODULES`)
    mode: str = "finetune"  # finetune: all but BatchNorm trains; transfer: trunk frozen, linear track only
    name: str | None = None  # results name in the store (default: the run directory's name)
    window: int | None = None  # default: the store's window
    train_fraction: float = 1.0  # a nested share of the train people (learning curves); tune and test untouched
    gradient_checkpointing: bool = False  # recompute activations in backward (long windows): less memory, same result
    mask_variants: str | None = None  # `top-enet:K` or a variant TSV: set to the reference in every input (masking.py)
    lr: float | None = None  # default: the mode's (finetune 5e-6, transfer 1e-3)
    weight_decay: float = 0.01
    micro_batch: int = 32
    accumulation: int = 4
    clip: float = 0.05
    max_epochs: int = 150
    patience: int = 20
    seed: int = 0
    workers: int = 0
    read_path: str = "expand"
    device: str = "auto"
    resume: bool = False
    progress: bool = True

    @property
    def block_size(self) -> int:
        """People per optimizer step."""
        return self.micro_batch * self.accumulation


@dataclass
class TrainState:
    """What a resumed run needs besides weights and optimizer: where it was and how it was going."""

    epoch: int = 0
    best_r2: float = -math.inf
    best_epoch: int = -1
    stale_epochs: int = 0
    history: list[dict] = field(default_factory=list)


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the message names the gene and step."""


def pairwise_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """0.5 x MSE + 0.5 x mean over pairs i < j of ((yhat_i - yhat_j) - (y_i - y_j))^2; NaN targets masked."""
    keep = ~torch.isnan(target)  # masked by weights, not indexing: a boolean index would sync with the GPU
    target = torch.where(keep, target, 0.0)
    mse = masked_mean((prediction - target) ** 2, keep)
    i, j = torch.triu_indices(len(target), len(target), offset=1, device=target.device)
    differences = (prediction[i] - prediction[j]) - (target[i] - target[j])
    pairs = keep[i] & keep[j]
    return 0.5 * mse + 0.5 * torch.where(pairs.any(), masked_mean(differences**2, pairs), 0.0)


def masked_mean(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean of the kept values (NaN when none is kept, as torch.mean of nothing)."""
    return torch.where(keep, values, 0.0).sum() / keep.sum()


def choose_device(name: str, local_rank: int = 0) -> torch.device:
    """cuda (this rank's GPU) when asked or available under 'auto', else cpu."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise InputError("--device cuda: no CUDA device is available; use --device cpu")
        return torch.device("cuda", local_rank)
    return torch.device(name)


def store_identity(store: Store) -> str:
    """What ties a run to the store it was trained on: the digest of its inputs, people and splits (stores built
    before the digest was recorded: their creation time and input checksums)."""
    provenance = store.attrs["provenance"]
    if "cohort" in provenance:
        return provenance["cohort"]
    checksums = ",".join(v["checksum"][:12] for v in provenance["inputs"].values())
    return f"{provenance['created']}|{checksums}"


class Distributed:
    """This process's place among torchrun's processes (a single process when not under torchrun)."""

    def __init__(self, device_name: str):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.device = choose_device(device_name, int(os.environ.get("LOCAL_RANK", "0")))
        if self.world_size > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        """Rank 0 writes checkpoints and logs."""
        return self.rank == 0

    def close(self) -> None:
        """Wait for every rank, then leave the process group (drop DDP wrappers first)."""
        if self.world_size > 1 and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()

    def barrier(self) -> None:
        """Wait for every rank (nothing when alone)."""
        if self.world_size > 1:
            dist.barrier()

    def gather(self, value):
        """Every rank's value, in rank order (the value itself when alone)."""
        if self.world_size == 1:
            return [value]
        values = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values


def build_model(config: TrainConfig, meta: dict, distributed: Distributed) -> tuple[Readout, torch.optim.Optimizer, TrainState]:
    """A fresh or resumed model (its checkpoint's metadata must equal `meta`) with its optimizer and progress."""
    last = config.out / "last.pt"
    if config.resume and last.is_file():
        model, found, payload = load_checkpoint(last)
        check_same_run({**recorded_arguments(config.out), **found}, meta, last)
        optimizer = make_optimizer(model.to(distributed.device), config)
        optimizer.load_state_dict(payload["optimizer"])
        return model, optimizer, TrainState(**json.loads(payload["state"]))
    if config.resume:
        check_restart(config, meta)
    if (config.config is None) == (config.weights is None):
        raise InputError(f"give exactly one of --config NAME (random init) or --weights PATH (pretrained {config.backbone})")
    chosen = backbone(config.backbone)
    trunk = chosen.from_weights(config.weights) if config.weights else chosen.from_config(config.config, config.seed)
    model = build_readout(config.backbone, trunk, config.mode).to(distributed.device)
    return model, make_optimizer(model, config), TrainState()


def check_restart(config: TrainConfig, meta: dict) -> None:
    """A --resume without last.pt starts afresh only where no run is lost: run.json (if any) records the asked
    settings, and no best.pt or metrics.jsonl is there (a run killed in its first epoch leaves run.json alone)."""
    found = recorded_meta(config.out)
    if found is not None:
        check_same_run(found, meta, config.out / "run.json")
    kept = [name for name in ("best.pt", "metrics.jsonl") if (config.out / name).exists()]
    if kept:
        raise InputError(f"--out {config.out}: --resume needs last.pt, which is missing, and starting afresh would overwrite "
                         f"the run's {' and '.join(kept)}; move the folder away or choose another --out to train anew")


def make_optimizer(model: Readout, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters (everything but BatchNorm; the linear track alone in transfer mode)."""
    lr = config.lr if config.lr is not None else MODES[config.mode]
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=config.weight_decay)


def run_meta(config: TrainConfig, store: Store, mask: dict | None = None, masked: dict[str, np.ndarray] | None = None) -> dict:
    """The facts a checkpoint must agree on with a resumed run or an evaluated store (a variant mask: its spec, applied
    again by `pstore evaluate`, and the positions it masked in the training genes)."""
    meta = {"genes": list(config.genes), "fold": config.fold, "window": config.window or store.window,
            "store": store_identity(store), "name": config.name or config.out.name, "seed": config.seed,
            "block_size": config.block_size, "micro_batch": config.micro_batch, "train_fraction": config.train_fraction,
            "backbone": config.backbone, "mode": config.mode}
    meta.update(resume_meta(config))
    if mask is not None:
        meta.update(mask=mask, masked_positions=masked_positions(store, masked or {}))
    return meta


RESUME_KEYS = {"lr": "--lr", "model_config": "--config", "weights": "--weights", "clip": "--clip", "read_path": "--read-path"}
"""Arguments a resumed run must repeat (the checkpoint's optimizer and weights would silently win otherwise);
checkpoints written before they were recorded are not checked on them. --workers and --device may differ (--workers
changes no result: `loader.BatchLoader`)."""


def resume_meta(config: TrainConfig) -> dict:
    """The training arguments recorded for resume checks (lr resolved to the mode's default, weights as an absolute path)."""
    return {"lr": config.lr if config.lr is not None else MODES.get(config.mode), "model_config": config.config,
            "weights": str(Path(config.weights).resolve()) if config.weights else None, "clip": config.clip,
            "read_path": config.read_path}


def recorded_arguments(out: Path) -> dict:
    """For checkpoints written before the resume keys were recorded: those of run.json's arguments ({} without one)."""
    try:
        given = json.loads((out / "run.json").read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    if not isinstance(given, dict):
        return {}
    found = {key: given[key] for key in ("clip", "read_path") if key in given}
    if "config" in given:
        found["model_config"] = given["config"]
    if "lr" in given:
        found["lr"] = given["lr"] if given["lr"] is not None else MODES.get(given.get("mode", "finetune"))
    if given.get("weights") is None or Path(given["weights"]).is_absolute():  # a relative path depends on the directory
        found["weights"] = str(Path(given["weights"]).resolve()) if given.get("weights") else None
    return found


LEGACY_META = {"train_fraction": 1.0, "backbone": "enformer", "mode": "finetune"}
"""What checkpoints written before these keys existed were made with (so their runs still resume)."""


def run_difference(found: dict, expected: dict) -> tuple[str, Any, Any] | None:
    """The first fact of `expected` that a run's record `found` differs on, as (key, recorded, asked); None when the
    run may resume (resume keys that older checkpoints lack are not checked)."""
    for key, value in expected.items():
        if key in RESUME_KEYS and key not in found:
            continue
        made = found.get(key, LEGACY_META.get(key))
        if made != value:
            return key, made, value
    return None


def check_same_run(found: dict, expected: dict, path: Path) -> None:
    """Refuse to resume a run (its last.pt, or the run.json of one without it) made with other settings."""
    difference = run_difference(found, expected)
    if difference is not None:
        key, made, value = difference
        fix = f"give --name {made!r} to resume a moved run (the default is the --out directory's name)" if key == "name" else \
            "use another --out to train with these settings"
        raise InputError(f"{path}: was made with {RESUME_KEYS.get(key, key)} {made!r}, this run asks {value!r}; {fix}")


def recorded_meta(out: Path) -> dict | None:
    """What a run directory's run.json records of the facts a resume checks (with the arguments of older runs,
    `recorded_arguments`); run.json is written only once they passed against last.pt. None without a readable one."""
    try:
        found = json.loads((out / "run.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(found, dict):
        return None
    return {**recorded_arguments(out), **{k: v for k, v in found.items() if k != "config"}}


def logged_state(out: Path) -> TrainState | None:
    """The progress a run's metrics.jsonl records (written after last.pt, so never ahead of it), replayed through
    `advance`; None when there is none or it does not replay to its own best epochs."""
    try:
        history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        state = TrainState()
        for entry in history:
            advance(state, float(entry["tune_r2"]))
            if entry["epoch"] != state.epoch or entry["best_epoch"] != state.best_epoch:
                return None
            state.history.append(entry)
            state.epoch += 1
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return state


def stopped(state: TrainState, config: TrainConfig) -> bool:
    """Whether training is over: `max_epochs` epochs run, or `patience` epochs without a better mean tune R2."""
    return state.epoch >= config.max_epochs or state.stale_epochs >= config.patience


def check_run_name(config: TrainConfig) -> None:
    """Refuse, before training, a results name (--name, default the --out directory's name) that `pstore evaluate`
    would refuse: not a results name (`results.check_name`), or a baseline's (`results.RESERVED_NAMES`)."""
    name = config.name if config.name is not None else config.out.name
    source = "--name" if config.name is not None else f"--out {config.out}: its directory's name (the default results name)"
    check_name(name, source, "give --name" if config.name is None else "")
    if name in RESERVED_NAMES:
        raise InputError(f"{source} {name!r}: reserved for a baseline ({', '.join(RESERVED_NAMES)}); give another --name")


RUN_FILES = ("run.json", "last.pt", "best.pt", "metrics.jsonl")
"""What makes a directory hold a run (another run's files are never overwritten without --resume)."""


PARTIAL_FILE = re.compile(r"\..+\.[0-9]+\.tmp")
"""The partial file `results.temporary_path` writes beside a checkpoint or log before renaming it into place."""


@contextmanager
def run_directory(out: Path, main: bool) -> Iterator[None]:
    """On the main process, hold the run directory's lock for the whole run (a second `pstore train` of it is refused)
    and delete the partial files of killed runs; a directory made here is removed again if the run stops before
    writing into it, so a refused start leaves nothing."""
    if not main:
        yield
        return
    made = not out.exists()
    make_directory(out)
    try:
        with directory_lock(out, f"--out {out}: another pstore train is running in it; wait for it or stop it"):
            for partial in (p for p in out.iterdir() if PARTIAL_FILE.fullmatch(p.name)):
                partial.unlink()
            yield
    finally:
        if made and out.is_dir() and not any(out.iterdir()):
            out.rmdir()


def check_fresh_out(config: TrainConfig) -> None:
    """Without --resume, --out must not hold a run already."""
    if not config.resume and any((config.out / name).exists() for name in RUN_FILES):
        raise InputError(f"--out {config.out} holds a run; pass --resume to continue it or choose another --out")


def check_train_people(train_rows: dict[str, np.ndarray], config: TrainConfig) -> None:
    """Every training gene needs train people (a small --train-fraction may leave none)."""
    for gene, rows in train_rows.items():
        if not len(rows):
            raise InputError(f"gene {gene}: --train-fraction {config.train_fraction} leaves no train people in fold {config.fold}; "
                             "raise --train-fraction or drop the gene")


def train(config: TrainConfig) -> TrainState:
    """Fine-tune until early stopping or max epochs; returns the run's history and best epoch."""
    check_run_name(config)
    distributed = Distributed(config.device)
    with run_directory(config.out, distributed.main):
        return fit(config, distributed)


def fit(config: TrainConfig, distributed: Distributed) -> TrainState:
    """Check the run's inputs, then train until early stopping or max epochs (inside the run directory's lock)."""
    store = Store(config.store)
    window = config.window or store.window
    backbone(config.backbone).check_window(window)
    check_mode(config.mode)
    check_checkpointing(config.backbone, config.gradient_checkpointing)
    genes = list(config.genes)
    if not genes:
        raise InputError("no genes to train on; give --gene or --genes")
    mask = parse_mask(config.mask_variants) if config.mask_variants else None
    masked = resolve_mask(store, genes, config.fold, mask)
    reader = GeneReader(config.store, window, config.read_path, masked)
    chosen = train_people(store, config.fold, config.train_fraction, config.seed)
    train_rows = {g: np.intersect1d(split_rows(store, g, config.fold, "train"), chosen) for g in genes}
    tune_rows = {g: split_rows(store, g, config.fold, "tune") for g in genes}
    check_train_people(train_rows, config)
    check_fresh_out(config)
    meta = run_meta(config, store, mask, masked)
    model, optimizer, state = build_model(config, meta, distributed)
    distributed.barrier()  # every rank has checked --out before rank 0 writes into it
    if distributed.main:  # only once every check passed: a refused start leaves the directory as it was
        write_atomically(config.out / "run.json", json.dumps({**meta, "config": _jsonable(asdict(config))}, indent=1))
        if state.history:  # resumed: a kill between the saves of last.pt and of the log left the log an epoch behind
            write_log(config.out, state)
    chunk = schemas.PEOPLE_PER_CHUNK if config.read_path == "stored" else None  # stored reads: chunk-local draws
    train_loader = BatchLoader(reader, config.workers, distributed.device)
    tune_loader = BatchLoader(reader, config.workers, distributed.device)
    if config.gradient_checkpointing:
        recompute_activations(model.enformer)
    step_model = torch.nn.parallel.DistributedDataParallel(model) if distributed.world_size > 1 else model
    bar = tqdm(total=config.max_epochs, initial=state.epoch, desc="epochs", unit="epoch", file=sys.stderr,
               disable=not (config.progress and distributed.main))
    while not stopped(state, config):
        torch.manual_seed(config.seed * 100_003 + state.epoch)  # dropout draws depend only on (seed, epoch)
        started = time.perf_counter()
        blocks = rank_blocks(epoch_blocks(train_rows, state.epoch, config.seed, config.block_size, chunk),
                             distributed.rank, distributed.world_size)
        loss = run_epoch(step_model, optimizer, train_loader, micro_batches(blocks, config.micro_batch), config, distributed)
        tune_r, tune_r2 = validate(model, tune_loader, tune_rows, config, distributed, state.epoch)
        record_epoch(state, loss, tune_r, tune_r2, time.perf_counter() - started, model, optimizer, config, meta, distributed)
        bar.set_postfix(loss=f"{loss:.4f}", tune_r=f"{tune_r:.3f}", tune_r2=f"{tune_r2:.4f}")
        bar.update()
    bar.close()
    del step_model
    distributed.close()
    return state


def run_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loader: BatchLoader, batches: list,
              config: TrainConfig, distributed: Distributed) -> float:
    """One pass over this rank's micro-batches; the optimizer steps at the end of every block."""
    model.train()
    losses, block, step = [], [], 0
    steps = sum(b.step_end for b in batches)
    for batch, onehot, target in loader(batches):
        with autocast(distributed.device):
            prediction = model(onehot).float()
        loss = pairwise_loss(prediction, target)
        syncing = batch.micro.step_end or not isinstance(model, torch.nn.parallel.DistributedDataParallel)
        with nullcontext() if syncing else model.no_sync():  # DDP averages gradients once per block
            (loss / batch.micro.block_parts).backward()
        block.append(loss.detach())
        if batch.micro.step_end:  # the block's losses reach the host once per step: one GPU sync, not one per micro-batch
            values, block, step = torch.stack(block).tolist(), [], step + 1
            if not np.isfinite(values).all():
                raise TrainingError(f"loss is {next(v for v in values if not math.isfinite(v))} on gene {batch.micro.gene_id} at optimizer step {step} of {steps}; lower --lr or check the gene's targets")
            losses.extend(values)
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            check_finite_weights(model, batch.micro.gene_id, step, steps)
    mean = float(np.mean(losses)) if losses else math.nan
    return float(np.mean(distributed.gather(mean)))


DIVERGED = "the weights diverged: lower --lr and train anew into another --out"
"""The fix a non-finite weight or prediction asks for (a resume repeats the same steps; `--resume` refuses another --lr)."""


def check_finite_weights(model: torch.nn.Module, gene: str, step: int, steps: int) -> None:
    """Stop a run whose optimizer step made a trainable weight nan or inf, naming the step and its gene."""
    finite = torch.stack([torch.isfinite(p).all() for p in model.parameters() if p.requires_grad]).all()
    if not finite.item():  # every rank holds the same weights after a step, so all stop here together
        raise TrainingError(f"weights are not finite after optimizer step {step} of {steps} (gene {gene}); {DIVERGED}")


def validate(model: Readout, loader: BatchLoader, tune_rows: dict[str, np.ndarray], config: TrainConfig,
             distributed: Distributed, epoch: int) -> tuple[float, float]:
    """Mean over training genes of Pearson r and of R2 across tune people (genes shared out among ranks); a gene
    whose predictions are not finite (weights finite but far too large) stops the run on every rank."""
    model.eval()
    mine = dict(list(tune_rows.items())[distributed.rank :: distributed.world_size])
    predictions = predict(model, loader, evaluation_batches(mine, config.micro_batch))
    diverged = next((gene for gene, (_, p, _) in predictions.items() if not np.isfinite(p).all()), None)
    scores = {gene: gene_metrics(p, t) for gene, (_, p, t) in predictions.items()} if diverged is None else {}
    parts = distributed.gather((scores, diverged))
    diverged = next((gene for _, gene in parts if gene is not None), None)
    if diverged is not None:
        raise TrainingError(f"tune predictions of gene {diverged} are not finite after epoch {epoch}; {DIVERGED}")
    merged = np.array([v for part, _ in parts for v in part.values()], dtype=float).reshape(-1, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN genes (constant targets) give NaN, not a warning
        r, r2 = np.nanmean(merged, axis=0) if len(merged) else (math.nan, math.nan)
    return float(r), float(r2)


def record_epoch(state: TrainState, loss: float, tune_r: float, tune_r2: float, seconds: float, model: Readout,
                 optimizer: torch.optim.Optimizer, config: TrainConfig, meta: dict, distributed: Distributed) -> None:
    """Log the epoch, update early stopping, and save the last (and maybe best) checkpoint atomically."""
    improved = advance(state, tune_r2)
    entry = {"epoch": state.epoch, "train_loss": loss, "tune_r": tune_r, "tune_r2": tune_r2, "best_epoch": state.best_epoch,
             "seconds": round(seconds, 3)}
    state.history.append(entry)
    state.epoch += 1
    if distributed.main:
        if improved:
            save_checkpoint(config.out / "best.pt", model, {**meta, "epoch": entry["epoch"], "tune_r2": tune_r2})
        save_checkpoint(config.out / "last.pt", model, meta,
                        {"optimizer": optimizer.state_dict(), "state": json.dumps(asdict(state))})
        write_log(config.out, state)


def write_log(out: Path, state: TrainState) -> None:
    """metrics.jsonl: one line per epoch of the run's history (the history `last.pt` saves too)."""
    write_atomically(out / "metrics.jsonl", "".join(json.dumps(e) + "\n" for e in state.history))


def advance(state: TrainState, tune_r2: float) -> bool:
    """Early stopping's record of this epoch's mean tune R2: a better one is the new best, else one more stale epoch;
    whether it was better."""
    improved = not math.isnan(tune_r2) and tune_r2 > state.best_r2
    if improved:
        state.best_r2, state.best_epoch, state.stale_epochs = tune_r2, state.epoch, 0
    else:
        state.stale_epochs += 1
    return improved


def write_atomically(path: Path, text: str) -> None:
    """Replace a text file in one step (a kill leaves the old or the new file, never half of one)."""
    replace_atomically(path, lambda temporary: temporary.write_text(text))


def _jsonable(values: dict) -> dict:
    """Paths and tuples as JSON-friendly values."""
    return {k: str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v for k, v in values.items()}
