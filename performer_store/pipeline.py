"""`pstore run CONFIG`: the whole method from inputs to report, each step skipped when its work is done.

Steps: build -> enet -> train (single-gene and/or multi-gene runs, every fold asked for) -> evaluate (runs and base
Enformer; runs and elastic nets also on other cohorts' stores, `[evaluate].other_stores`) -> ism -> report. Every
step resumes by itself (the build skips complete genes, the elastic net fits missing folds, training continues from
`last.pt` and finished runs are skipped, ISM skips scored genes), and evaluation is skipped where a run's result for
its fold is already in the store, so an interrupted `pstore run` is resumed by running it again. The config is TOML;
`configs/example.toml` documents every key, and relative paths are relative to the config file. Every value
(`load_config`), every file the asked steps read and every run they use (`check_inputs`) is checked before the first
step runs, so no bad value stops a step after earlier ones ran for hours.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import tomllib
import types
import typing
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import click
import pandas as pd

from .inputs import InputError, name_too_long, unversioned
from .parallel import dying_with_this_process

if TYPE_CHECKING:
    from .store import Store
    from .train import TrainConfig, TrainState

STEPS = ("build", "enet", "train", "evaluate", "ism", "report")


def parse_steps(text: str | None) -> tuple[str, ...]:
    """The steps a comma-separated `--steps` names (None: every step), or a one-line error listing the steps (or
    naming a step given twice: each runs once, in the order of STEPS, so a repeat is a mistake)."""
    if text is None:
        return STEPS
    chosen = tuple(s.strip() for s in text.split(",") if s.strip())
    if not chosen:
        raise InputError(f"--steps {text!r} names no step; give some of {', '.join(STEPS)} (comma-separated), or leave "
                         "--steps out to run them all")
    unknown = [s for s in chosen if s not in STEPS]
    if unknown:
        raise InputError(f"--steps: unknown step {unknown[0]!r}; steps are {', '.join(STEPS)}")
    repeated = [s for i, s in enumerate(chosen) if s in chosen[:i]]
    if repeated:
        raise InputError(f"--steps {text!r} names step {repeated[0]!r} twice; name each step once")
    return chosen


@dataclass(frozen=True)
class Inputs:
    """The cohort's files (as `pstore build` reads them) and optional annotations for the analysis."""

    fasta: Path
    vcf: Path
    gtf: Path
    expression: Path
    tissue: str
    sample_map: Path | None = None
    mean_expression: Path | None = None  # TSV gene_id, mean_expression: the across-gene check (`evaluate --reference`)
    chromatin_states: Path | None = None  # BED: chrom start end state
    finemapped: Path | None = None  # fine-mapped eQTLs (TSV)
    truth: Path | None = None  # a simulated cohort's truth_variants.tsv
    truth_genes: Path | None = None  # a simulated cohort's truth_genes.tsv (per-gene h2 in the summary)


@dataclass(frozen=True)
class BuildStep:
    """`pstore build` settings."""

    genes: list[str] = field(default_factory=list)  # default: every gene of the expression BED
    window: int = 49_152
    seed: int = 0
    workers: int = 1
    scheduler: str | None = None  # Dask scheduler address


@dataclass(frozen=True)
class EnetStep:
    """`pstore enet` settings."""

    genes: list[str] = field(default_factory=list)  # default: every gene of the store
    folds: list[int] = field(default_factory=lambda: [0, 1, 2])
    workers: int = 1
    scheduler: str | None = None


@dataclass(frozen=True)
class TrainStep:
    """`pstore train` settings, shared by every run."""

    config: str | None = None  # a named random-init backbone (tiny, small, full) ...
    weights: Path | None = None  # ... or its local pretrained weights
    backbone: str = "enformer"  # or "borzoi"
    mode: str = "finetune"  # or "transfer": trunk frozen, linear track only
    folds: list[int] = field(default_factory=lambda: [0])
    genes: list[str] = field(default_factory=list)  # single-gene runs, one per gene (default: the store's genes)
    single_gene: bool = True
    multi_gene: bool = False  # one run over `genes` minus `held_out_genes` (scored HOP and HOGP)
    held_out_genes: list[str] = field(default_factory=list)
    train_fractions: list[float] = field(default_factory=lambda: [1.0])  # learning curves: nested shares of train people
    mask_variants: list[str] = field(default_factory=list)  # more runs, each with a variant mask: "top-enet:K" or a TSV
    window: int | None = None
    lr: float | None = None  # default: the mode's (finetune 5e-6, transfer 1e-3)
    micro_batch: int = 32
    accumulation: int = 4
    gradient_checkpointing: bool = False  # recompute activations in backward (196,608-bp windows)
    max_epochs: int = 150
    patience: int = 20
    seed: int = 0
    workers: int = 0
    device: str = "auto"
    processes: int = 1  # > 1: each run under torchrun (DDP; gloo on CPU, NCCL on GPUs)


@dataclass(frozen=True)
class EvaluateStep:
    """`pstore evaluate` settings: base Enformer beside the runs."""

    base: bool = True
    track: int | None = None  # default by tissue
    micro_batch: int = 32
    other_stores: list[Path] = field(default_factory=list)  # cross-cohort: other cohorts' stores the runs and enets also score
    reference: bool = True  # also predict every gene's reference window (runs: their genes; multi-gene runs: all)


@dataclass(frozen=True)
class IsmStep:
    """`pstore ism` settings (for every run and base Enformer, on the runs' genes)."""

    enabled: bool = True
    batch: int = 32
    exact_full: bool = False


@dataclass(frozen=True)
class ReportStep:
    """`pstore report` settings."""

    fold: int = 0
    genes: list[str] = field(default_factory=list)  # genes of the observed-vs-predicted figure (default: a few)


@dataclass(frozen=True)
class PipelineConfig:
    """A whole `pstore run`."""

    path: Path
    store: Path
    out: Path
    inputs: Inputs
    build: BuildStep = BuildStep()
    enet: EnetStep = EnetStep()
    train: TrainStep = TrainStep()
    evaluate: EvaluateStep = EvaluateStep()
    ism: IsmStep = IsmStep()
    report: ReportStep = ReportStep()


# --- reading and checking the config --------------------------------------------------------------------


OPTION_NAMES = {"config": "model_config", "folds": "fold", "train_fractions": "train_fraction"}
"""Config keys whose `pstore <section>` option has another name (a list of folds: each as one --fold, not as
`pstore enet --folds 0,1`); every other key is checked by its namesake's."""

INPUT_STEPS = {"fasta": "build", "vcf": "build", "gtf": "build", "expression": "build", "sample_map": "build",
               "mean_expression": "build", "chromatin_states": "report", "finemapped": "report"}
"""The step that reads each [inputs] file; the others (`truth`, `truth_genes`) feed the summary table of every run."""

MODEL_STEPS = ("train", "evaluate", "ism")
"""The steps that run models: they need [train]'s weights and device."""

TABLE_STEPS = ("evaluate", "ism", "report")
"""The steps after which `pstore run` prints the per-gene summary table: it shows the test scores and the ISM that
they make or report (the build, elastic net and training alone write none of the deep models' scores)."""


@contextmanager
def _naming(where: str) -> Iterator[None]:
    """Prefix an InputError with the config file and key whose value caused it."""
    try:
        yield
    except InputError as error:
        raise InputError(f"{where}: {error}") from None


def _check_value(value: Any, kind: Any, where: str) -> Any:
    """`value` as the annotated type (paths from strings, with names the file system can hold), or a one-line error
    naming the key; lists hold no repeats."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        options = [k for k in typing.get_args(kind) if k is not type(None)]
        return _check_value(value, options[0], where)
    if typing.get_origin(kind) is list:
        (item,) = typing.get_args(kind)
        if not isinstance(value, list):
            raise InputError(f"{where}: expected a list of {item.__name__}, got {value!r}")
        repeated = [v for i, v in enumerate(value) if v in value[:i]]
        if repeated:
            raise InputError(f"{where}: {repeated[0]!r} is listed twice; list each once")
        return [_check_value(v, item, where) for v in value]
    if kind is Path:
        problem = name_too_long(Path(_check_value(value, str, where)))
        if problem:
            raise InputError(f"{where}: {problem}")
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InputError(f"{where}: expected {kind.__name__}, got {value!r}")
    return value


def _option(section: str, key: str) -> click.Parameter | None:
    """The option of `pstore SECTION` that checks a config key on the command line (None where it has none)."""
    from .cli import main

    command = main.commands.get(section)
    name = OPTION_NAMES.get(key, key)
    return next((p for p in command.params if p.name == name), None) if command else None


def _check_option(values: list[Any], option: click.Parameter, where: str, section: str) -> None:
    """Each value passes the option's own check (range, choice) as `pstore SECTION` would, or a one-line error."""
    for value in values:
        try:
            option.type.convert(value, None, None)
        except click.BadParameter as error:
            raise InputError(f"{where}: {error.message.rstrip('.')}, as for `pstore {section} {option.opts[0]}`") from None


def _section(cls: type, table: dict[str, Any], where: str, section: str, base: Path) -> Any:
    """A settings dataclass from a TOML table: unknown keys, wrong types, values the step's `pstore` command would
    refuse and missing keys are errors."""
    if not isinstance(table, dict):
        raise InputError(f"{where}: expected a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(fields)})")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in table.items():
        value = _check_value(value, hints[name], f"{where}.{name}")
        option = _option(section, name)
        if option is not None:
            _check_option(value if isinstance(value, list) else [value], option, f"{where}.{name}", section)
        is_path = Path in typing.get_args(hints[name]) or hints[name] is Path
        values[name] = ([base / v for v in value] if isinstance(value, list) else base / value) if is_path else value
    missing = [n for n, f in fields.items() if n not in values and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise InputError(f"{where}: missing key {missing[0]!r}")
    return cls(**values)


def _check_model(train: TrainStep, build: BuildStep, evaluate: EvaluateStep, where: str) -> None:
    """[train]'s model as `pstore train` checks it when a run starts: one of config and weights, a config name of
    the backbone, a window it reads and the store holds, gradient checkpointing only for Enformer."""
    from .model import backbone, check_checkpointing

    if (train.config is None) == (train.weights is None):
        raise InputError(f"{where}: [train] give exactly one of config = \"tiny\" (random init) or weights = \"PATH\"")
    chosen = backbone(train.backbone)
    if train.config is not None:
        with _naming(f"{where}: [train].config"):
            chosen.check_config(train.config)
    with _naming(f"{where}: {'[train]' if train.window else '[build]'}.window"):
        chosen.check_window(train.window or build.window)
    if train.window and train.window > build.window:
        raise InputError(f"{where}: [train].window {train.window} is longer than [build].window {build.window} (the store's "
                         "windows): runs read the centre of the stored window; shorten [train].window or raise [build].window")
    with _naming(f"{where}: [train].gradient_checkpointing"):
        check_checkpointing(train.backbone, train.gradient_checkpointing)
    if train.processes < 1:
        raise InputError(f"{where}: [train].processes: {train.processes} is not in the range x>=1; give 1 (one process) or more (torchrun)")
    if train.backbone != "enformer" and evaluate.base:
        raise InputError(f"{where}: [evaluate] base = true scores base Enformer with [train]'s weights, which are {train.backbone}'s; set base = false")


def _check_folds(folds: list[int], where: str) -> None:
    """Folds of the people split, which has `schemas.N_FOLDS` in every store; at least one."""
    from .schemas import N_FOLDS

    if not folds:
        raise InputError(f"{where}: no fold given; give some of 0-{N_FOLDS - 1}, e.g. [0]")
    wrong = [fold for fold in folds if not 0 <= fold < N_FOLDS]
    if wrong:
        raise InputError(f"{where}: fold {wrong[0]} does not exist; every store has folds 0-{N_FOLDS - 1}")


def load_config(path: Path) -> PipelineConfig:
    """Read and check a `pstore run` config (TOML) whole, so that no value stops a step after earlier ones ran;
    paths become relative to its directory."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"config {path}: is a directory; give the TOML config file (see configs/example.toml)")
    if not path.is_file():
        raise InputError(f"config {path}: no such file; see configs/example.toml")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise InputError(f"config {path}: not valid TOML ({error})") from None
    base, where = path.parent, f"config {path}"
    sections = {"inputs": Inputs, "build": BuildStep, "enet": EnetStep, "train": TrainStep, "evaluate": EvaluateStep,
                "ism": IsmStep, "report": ReportStep}
    unknown = sorted(set(raw) - set(sections) - {"store", "out"})
    if unknown:
        raise InputError(f"{where}: unknown key or table {unknown[0]!r} (known: store, out, {', '.join(sections)})")
    for key in ("store", "out", "inputs"):
        if key not in raw:
            raise InputError(f"{where}: missing {key!r} (see configs/example.toml)")
    parsed = {name: _section(cls, raw.get(name, {}), f"{where}: [{name}]", name, base) for name, cls in sections.items()}
    train = parsed["train"]
    _check_model(train, parsed["build"], parsed["evaluate"], where)
    enet, report = parsed["enet"], parsed["report"]
    for key, folds in (("[train].folds", train.folds), ("[enet].folds", enet.folds), ("[report].fold", [report.fold])):
        _check_folds(folds, f"{where}: {key}")
    from .masking import TOP_ENET, parse_mask

    masks = [m if m.startswith(TOP_ENET) else str(base / m) for m in train.mask_variants]  # files relative to the config
    for mask in masks:
        with _naming(f"{where}: [train].mask_variants"):
            parse_mask(mask)
    parsed["train"] = dataclasses.replace(train, mask_variants=masks)
    _check_mask_names(parsed["train"], where)
    if not (train.single_gene or train.multi_gene):
        raise InputError(f"{where}: [train] single_gene and multi_gene are both false, so there is no run to train; set one "
                         "to true (or run `--steps build,enet` alone)")
    store = base / _check_value(raw["store"], Path, f"{where}: store")
    out = base / _check_value(raw["out"], Path, f"{where}: out")
    return PipelineConfig(path=path, store=store, out=out, **parsed)


def check_inputs(config: PipelineConfig, steps: tuple[str, ...]) -> None:
    """The files the asked steps read, the device their models run on and the runs they use (`check_runs`), checked
    before the first step (each error names the config key): a missing one would otherwise stop a step after earlier
    ones ran for hours."""
    from .inputs import require_file
    from .store import Store
    from .train import choose_device

    where = f"config {config.path}"
    for key, path in vars(config.inputs).items():
        reader = INPUT_STEPS.get(key)
        if isinstance(path, Path) and (reader is None or reader in steps):
            with _naming(f"{where}: [inputs].{key}"):
                require_file(path, "file")
    if config.train.weights is not None and not config.train.weights.exists() and set(MODEL_STEPS) & set(steps):
        raise InputError(f"{where}: [train].weights {config.train.weights}: no such file or directory; give the "
                         f"pretrained {config.train.backbone} weights (a directory or a file)")
    if "evaluate" in steps:
        for other in config.evaluate.other_stores:
            with _naming(f"{where}: [evaluate].other_stores"):
                Store(other)
    if set(MODEL_STEPS) & set(steps):
        with _naming(f"{where}: [train].device"):
            choose_device(config.train.device)
    store = existing_store(config, steps)
    check_genes(config, steps)
    if store is not None:
        runs = planned_runs(config, list(store.genes.index))
        check_runs(config, steps, runs, store)
        if "train" in steps and "enet" not in steps:  # else the enet step first fits what top-enet:K masks rank variants by
            check_masks(runs, store)


@contextmanager
def enet_step_advice(config: PipelineConfig) -> Iterator[None]:
    """Reword a top-enet:K mask's missing elastic net in the config's store (`masking.MissingEnet`, which advises
    `pstore enet`) to advise the config's enet step; other stores' (cross-cohort) keep the `pstore enet` advice."""
    from .masking import MissingEnet

    try:
        yield
    except MissingEnet as error:
        if Path(error.store).resolve() != config.store.resolve():
            raise
        raise InputError(f"config {config.path}: [train].mask_variants top-enet:{error.k}: gene {error.gene_id} has no "
                         f"elastic net for fold {error.fold} in store {error.store}, which it ranks variants by; run the "
                         f"enet step first (`pstore run {config.path} --steps enet,train`, or no --steps) with {error.fold} "
                         f"in [enet].folds and the gene in [enet].genes (or no [enet].genes)") from None


def check_masks(runs: list[Run], store: Store) -> None:
    """Resolve the top-enet:K masks of the runs in this process before any run trains, so that a missing elastic net
    stops `pstore run` here, where `enet_step_advice` rewords it, rather than in a `pstore train` process after the
    runs before it trained."""
    from .masking import TOP_ENET, parse_mask, resolve_mask

    for run in runs:
        if run.mask and run.mask.startswith(TOP_ENET):
            resolve_mask(store, run.genes, run.fold, parse_mask(run.mask))


def existing_store(config: PipelineConfig, steps: tuple[str, ...]) -> Store | None:
    """The config's store; None when the build step will make it or finish it (none yet, or a killed build left its
    gene index behind its genes), else a one-line error that says to run the build step."""
    from .store import NoStore, StaleIndex, Store

    build = f"run the build step first: `pstore run {config.path} --steps build` (or without --steps)"
    try:
        store = Store(config.store)
        store.genes  # noqa: B018 (read here: a stale index is for the build step to refresh)
        return store
    except NoStore:
        if "build" in steps:
            return None
        raise InputError(f"config {config.path}: store {config.store}: not a Zarr store (no zarr.json); {build}") from None
    except StaleIndex as error:
        if "build" in steps:
            return None
        raise InputError(f"config {config.path}: {error.facts}; {build}") from None


GENE_KEYS = (("train", "genes"), ("train", "held_out_genes"), ("enet", "genes"), ("report", "genes"))
"""Config keys that list genes of the store: exact gene IDs (only [build].genes, read against the GTF, takes names
and other versions)."""


def known_genes(config: PipelineConfig, steps: tuple[str, ...]) -> pd.DataFrame | None:
    """gene_id -> gene_name of the genes the steps can use: the store's and, when the build runs, the genes it
    may add ([build].genes as the GTF resolves them, else every GTF gene); None when there is neither yet."""
    from .inputs import read_gtf_genes, select_genes
    from .store import Store

    frames = []
    try:
        frames.append(Store(config.store).genes[["gene_name"]])
    except InputError:
        pass  # no store yet: the build makes it, or the first step says it is missing
    if "build" in steps:
        gtf = read_gtf_genes(config.inputs.gtf)
        with _naming(f"config {config.path}: [build].genes"):
            chosen = [g.gene_id for g in select_genes(gtf, config.build.genes, config.inputs.gtf)] if config.build.genes else list(gtf.index)
        frames.append(gtf.loc[chosen, ["gene_name"]])
    if not frames:
        return None
    known = pd.concat(frames)
    return known[~known.index.duplicated()]


def gene_fix(entry: str, known: pd.DataFrame) -> str:
    """How to write a gene entry that is not an exact gene ID: the one gene it means (another version, or its
    name), else where the IDs are."""
    matches = [g for g in known.index if unversioned(g) == unversioned(entry)] or list(known.index[known["gene_name"] == entry])
    return f"write {matches[0]!r}" if len(matches) == 1 else "give exact gene IDs as `pstore info STORE` lists them"


def check_genes(config: PipelineConfig, steps: tuple[str, ...]) -> None:
    """Every gene list (but [build]'s) holds exact gene IDs of the store or the build, and [train].held_out_genes
    leaves the multi-gene run genes to train on: a typo would silently train on a gene meant to be held out."""
    lists = {f"[{section}].{key}": getattr(getattr(config, section), key) for section, key in GENE_KEYS}
    known = known_genes(config, steps) if any(lists.values()) else None
    if known is None:
        return
    where, source = f"config {config.path}", f"store {config.store}" + (f" or GTF {config.inputs.gtf}" if "build" in steps else "")
    for key, genes in lists.items():
        for gene in genes:
            if gene not in known.index:
                raise InputError(f"{where}: {key}: {gene!r} is not a gene ID of {source}; {gene_fix(gene, known)}")
    train = config.train
    if train.multi_gene and train.held_out_genes and set(train.genes or known.index) <= set(train.held_out_genes):
        raise InputError(f"{where}: [train].held_out_genes holds every gene of the multi-gene run, leaving none to train on; "
                         "hold out fewer genes (or set multi_gene = false)")


# --- the steps ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One training run: its directory, results name, genes, fold and share of the train people."""

    out: Path
    name: str
    genes: tuple[str, ...]
    fold: int
    multi: bool = False
    fraction: float = 1.0
    mask: str | None = None  # --mask-variants


def planned_runs(config: PipelineConfig, store_genes: list[str]) -> list[Run]:
    """Single-gene runs (results name `performer`) and the multi-gene run (`performer_multi`) of every fold and
    train fraction (below 1 the name gets `_frac<F>`, e.g. `performer_frac0.5`), and of every variant mask on all
    train people (the name gets `_mask<K>` for top-enet:K, `_mask_<file stem>` for a file, e.g. `performer_mask5`).
    Other backbones and modes than Enformer fine-tuning name runs `<backbone>_<mode>` instead of `performer`
    (e.g. `borzoi_transfer_multi`)."""
    from .masking import mask_name

    train = config.train
    genes = train.genes or store_genes
    settings = [(f, None, "" if f == 1 else f"_frac{f:g}") for f in train.train_fractions]
    settings += [(1.0, m, f"_{mask_name(m)}") for m in train.mask_variants]
    runs = []
    for fraction, mask, suffix in settings:
        for fold in train.folds:
            if train.single_gene:
                name = run_name(train, suffix, multi=False)
                runs += [Run(config.out / "runs" / f"{name}_{gene}_fold{fold}", name, (gene,), fold,
                             fraction=fraction, mask=mask) for gene in genes]
            if train.multi_gene:
                chosen = tuple(g for g in genes if g not in train.held_out_genes)
                name = run_name(train, suffix, multi=True)
                runs.append(Run(config.out / "runs" / f"{name}_fold{fold}", name, chosen, fold, multi=True, fraction=fraction,
                                mask=mask))
    return runs


def run_name(train: TrainStep, suffix: str, multi: bool) -> str:
    """A run's results name: `performer` (Enformer fine-tuning, else `<backbone>_<mode>`), `_multi` for the multi-gene
    run, then the suffix of its train fraction or mask."""
    family = "performer" if (train.backbone, train.mode) == ("enformer", "finetune") else f"{train.backbone}_{train.mode}"
    return f"{family}{'_multi' if multi else ''}{suffix}"


def _check_mask_names(train: TrainStep, where: str) -> None:
    """The results names a mask file gives its runs (`_mask_<file stem>`) are results names (`results.check_name`: e.g.
    at most 128 characters, no spaces), refused here rather than when the train step reaches them."""
    from .masking import mask_name
    from .results import check_name

    for mask in train.mask_variants:
        for multi in [False] * train.single_gene + [True] * train.multi_gene:
            check_name(run_name(train, f"_{mask_name(mask)}", multi), f"{where}: [train].mask_variants {mask!r} gives the "
                       "results name", "rename the file: its name without the extension ends the results name")


def run_build(config: PipelineConfig) -> None:
    """Build the store (complete genes are skipped)."""
    from .build import BuildConfig, build_store

    inputs, step = config.inputs, config.build
    report = build_store(BuildConfig(store=config.store, fasta=inputs.fasta, vcf=inputs.vcf, gtf=inputs.gtf, expression=inputs.expression,
                                     tissue=inputs.tissue, genes=tuple(step.genes), window=step.window, seed=step.seed,
                                     sample_map=inputs.sample_map, mean_expression=inputs.mean_expression, workers=step.workers, scheduler=step.scheduler,
                                     command_line=f"pstore run {config.path}"))
    for warning in report.left_out:
        print(f"Warning: {warning}", file=sys.stderr, flush=True)


def run_enet_step(config: PipelineConfig) -> None:
    """Elastic net on every gene and fold asked for (fitted folds are skipped)."""
    from .enet import run_enet

    step = config.enet
    run_enet(config.store, step.genes, folds=step.folds, workers=step.workers, scheduler=step.scheduler)


def train_config(config: PipelineConfig, run: Run) -> TrainConfig:
    """The `pstore train` settings that `train_command` gives one run."""
    from .train import TrainConfig

    step = config.train
    return TrainConfig(store=config.store, genes=run.genes, fold=run.fold, out=run.out, config=step.config, weights=step.weights,
                       backbone=step.backbone, mode=step.mode, name=run.name, window=step.window, train_fraction=run.fraction,
                       gradient_checkpointing=step.gradient_checkpointing, mask_variants=run.mask, lr=step.lr,
                       micro_batch=step.micro_batch, accumulation=step.accumulation, max_epochs=step.max_epochs,
                       patience=step.patience, seed=step.seed, workers=step.workers, device=step.device, resume=True)


RUN_KEYS = {"lr": "[train].lr", "model_config": "[train].config", "weights": "[train].weights", "seed": "[train].seed",
            "micro_batch": "[train].micro_batch", "block_size": "[train].micro_batch x accumulation",
            "window": "[train].window", "genes": "[train].genes and held_out_genes", "mask": "[train].mask_variants"}
"""The config key behind each fact a run records (`train.run_meta`) that the config can change for an existing run
directory; the others are in its name (fold, backbone, mode, train fraction), or were given to `pstore train` by
hand (clip, read path), or come from the store (its identity; the variants a mask picked)."""


def short(value: Any) -> str:
    """A recorded value for a one-line message: its repr, cut at 80 characters."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_run(config: PipelineConfig, run: Run, store: Store, steps: tuple[str, ...] = ("train",)) -> bool:
    """A run with checkpoints was made with what the config asks (`train.run_difference` of its run.json, as
    `pstore train --resume` checks last.pt), else a one-line error naming the config key, both values and the fix
    (without the train step among `steps`: to run it); whether it was checked (False: no checkpoint or record yet,
    training starts anew or `pstore train` checks)."""
    from .masking import parse_mask, resolve_mask
    from .train import RESUME_KEYS, recorded_meta, run_difference, run_meta

    found = recorded_meta(run.out) if (run.out / "last.pt").is_file() else None
    if found is None:
        return False
    mask = parse_mask(run.mask) if run.mask else None
    expected = run_meta(train_config(config, run), store, mask, resolve_mask(store, run.genes, run.fold, mask))
    difference = run_difference(found, expected)
    if difference is None:
        return True
    key, made, value = difference
    setting, anew = RESUME_KEYS.get(key, key).removeprefix("--"), f"move or delete {run.out} (or set another `out`) " + (
        "to train it anew" if "train" in steps else f"and train it anew with the train step: {train_steps(config, steps)}")
    where = f"config {config.path}: {RUN_KEYS.get(key, setting)}: run {run.out}"
    use = "continue the run" if "train" in steps else "use the run as trained"
    fix = f"put the recorded {short(made)} back in {RUN_KEYS[key]} to {use}, or {anew}" if key in RUN_KEYS else anew
    raise InputError(f"{where} was trained with {setting} {short(made)}, this config gives {short(value)}; {fix}")


def train_steps(config: PipelineConfig, steps: tuple[str, ...]) -> str:
    """The command that runs the train step before the asked ones."""
    return f"`pstore run {config.path} --steps {','.join(s for s in STEPS if s == 'train' or s in steps)}`"


def used_runs(config: PipelineConfig, steps: tuple[str, ...], runs: list[Run]) -> list[Run]:
    """The runs whose models the asked evaluate and ism steps load."""
    if "evaluate" in steps:
        return runs
    return ism_runs(runs) if "ism" in steps and config.ism.enabled else []


def check_runs(config: PipelineConfig, steps: tuple[str, ...], runs: list[Run], store: Store) -> None:
    """The runs the asked steps use were made with the config's [train] settings (`check_run`): those the train step
    resumes, or without it those the evaluate and ism steps load, which must have a trained model; else one line
    naming the run and saying to run the train step."""
    if "train" in steps:
        for run in runs:
            check_run(config, run, store)
        return
    for run in used_runs(config, steps, runs):
        if not (run.out / "best.pt").is_file():
            raise InputError(f"config {config.path}: run {run.out} has no trained model (no best.pt); run the train step "
                             f"first: {train_steps(config, steps)} (or without --steps)")
        check_run(config, run, store, steps)


def train_command(config: PipelineConfig, run: Run) -> list[str]:
    """`pstore train` arguments of one run (resuming), under torchrun when several processes are asked for."""
    step = config.train
    args = ["train", "--store", str(config.store), "--fold", str(run.fold), "--out", str(run.out), "--name", run.name,
            "--backbone", step.backbone, "--mode", step.mode, "--micro-batch", str(step.micro_batch), "--accumulation", str(step.accumulation),
            "--max-epochs", str(step.max_epochs), "--patience", str(step.patience), "--seed", str(step.seed),
            "--workers", str(step.workers), "--device", step.device, "--train-fraction", str(run.fraction), "--resume"]
    args += ["--config", step.config] if step.config else ["--weights", str(step.weights)]
    args += ["--window", str(step.window)] if step.window else []
    args += ["--lr", str(step.lr)] if step.lr is not None else []
    args += ["--gradient-checkpointing"] if step.gradient_checkpointing else []
    args += ["--mask-variants", run.mask] if run.mask else []
    args += [a for gene in run.genes for a in ("--gene", gene)]
    if step.processes > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={step.processes}",
                "-m", "performer_store", *args]
    return [sys.executable, "-m", "performer_store", *args]


def finished(config: PipelineConfig, run: Run) -> TrainState | None:
    """The progress of a run that `pstore train --resume` would end at once (early stopping or `max_epochs`, as
    `train.stopped` decides) with a best checkpoint, read from its metrics.jsonl; None when it has work to do or
    its files do not say. Only for runs `check_run` found made with the config's settings."""
    from .train import logged_state, stopped

    if not (run.out / "best.pt").is_file():
        return None
    state = logged_state(run.out)
    return state if state is not None and state.best_epoch >= 0 and stopped(state, train_config(config, run)) else None


def run_training(config: PipelineConfig, runs: list[Run], store: Store) -> None:
    """Train (or finish) every run, each in its own process so a failure names its run; finished runs made with the
    config's settings are skipped without starting one; every mask is resolved before the first run starts."""
    check_masks(runs, store)
    for run in runs:
        state = finished(config, run) if check_run(config, run, store) else None
        if state is not None:
            print(f"train {run.out.name}: finished ({state.epoch} epoch(s), best tune R2 {state.best_r2:.4f} at epoch "
                  f"{state.best_epoch}), skipped", flush=True)
            continue
        print(f"train {run.out.name}: {len(run.genes)} gene(s), fold {run.fold}", flush=True)
        if subprocess.run(train_command(config, run), preexec_fn=dying_with_this_process()).returncode:
            raise InputError(f"training {run.out} failed (see above); fix the cause and run `pstore run {config.path}` again to resume")


def evaluated(store: Path, run: Run, gene_id: str, name: str | None = None) -> bool:
    """Whether the store holds this run's result (under its name, or a cross-cohort `name`) for the gene and fold,
    made by its current best checkpoint (resumed training that moved it makes the result stale) and, cross-cohort,
    with the people the run saw left out (results from before that check are made again)."""
    from .evaluate import current_source, made_by
    from .results import read_result

    result = read_result(store, gene_id, name or run.name)
    return (result is not None and made_by(result[1], current_source(run.out, run.fold), run.fold)
            and (name is None or str(run.fold) in result[1].get("seen_in_training", {})))  # cross-cohort: people checked


def run_evaluation(config: PipelineConfig, runs: list[Run], store_genes: list[str]) -> None:
    """Score each run on its genes' held-out people (multi-gene runs on every gene: HOP and HOGP); base Enformer;
    then the reference windows (`[evaluate] reference`)."""
    from .evaluate import EvaluateConfig, evaluate_base, evaluate_run

    for run in runs:
        genes = store_genes if run.multi else list(run.genes)
        missing = tuple(g for g in genes if not evaluated(config.store, run, g))
        if missing:
            evaluate_run(EvaluateConfig(store=config.store, genes=missing, micro_batch=config.evaluate.micro_batch,
                                        device=config.train.device), run.out)
    if config.evaluate.base:
        settings = base_settings(config)
        missing = tuple(g for g in store_genes if not has_base(config.store, g, settings))
        if missing:
            evaluate_base(EvaluateConfig(store=config.store, genes=missing, micro_batch=config.evaluate.micro_batch,
                                         device=config.train.device),
                          config.train.weights, config.train.config, config.evaluate.track, config.train.window)
    if config.evaluate.reference:
        run_references(config, runs, store_genes)


def base_settings(config: PipelineConfig) -> dict[str, Any]:
    """What base Enformer's results record of the config's track, window and model (`evaluate.base_settings`)."""
    from .evaluate import base_settings as settings
    from .store import Store

    return settings(Store(config.store), config.train.weights, config.train.config, config.evaluate.track, config.train.window)


def has_base(store: Path, gene_id: str, settings: dict[str, Any]) -> bool:
    """Whether the store holds base Enformer's result for the gene made with these settings (a changed [evaluate]
    track, window or model makes it stale)."""
    from .evaluate import made_with
    from .results import read_result

    found = read_result(store, gene_id, "enformer")
    return found is not None and made_with(found[1], settings)


def has_reference(store: Path, gene_id: str, name: str, fold: int, run: Path | None = None,
                  settings: dict[str, Any] | None = None) -> bool:
    """Whether the store holds a reference-window prediction of this model for the gene and fold, made by the run's
    current best checkpoint (base Enformer: with these settings)."""
    from . import schemas
    from .evaluate import current_source, made_by, made_with
    from .results import read_result

    found = read_result(store, gene_id, name, schemas.REFERENCE_GROUP)
    return (found is not None and found[0]["status"][fold] == "ok"
            and (run is None or made_by(found[1], current_source(run, fold), fold))
            and (settings is None or made_with(found[1], settings)))


def run_references(config: PipelineConfig, runs: list[Run], store_genes: list[str]) -> None:
    """Reference-window predictions of every run (multi-gene runs on every gene) and of base Enformer (every gene),
    skipping genes already predicted."""
    from .ism import enformer_model, performer_model
    from .reference import predict_references
    from .store import Store

    store = Store(config.store)
    for run in runs:
        missing = [g for g in (store_genes if run.multi else run.genes) if not has_reference(config.store, g, run.name, run.fold, run.out)]
        if missing:
            predict_references(config.store, performer_model(run.out, store), missing, config.train.device)
    if config.evaluate.base:
        settings = base_settings(config)
        missing = [g for g in store_genes if not has_reference(config.store, g, "enformer", 0, settings=settings)]
        if missing:
            base = enformer_model(store, config.train.weights, config.train.config, config.evaluate.track, config.train.window)
            predict_references(config.store, base, missing, config.train.device)


def run_cross_cohort(config: PipelineConfig, runs: list[Run]) -> None:
    """Every run and the elastic nets of this store score each other store's people ([evaluate].other_stores):
    results `<run name>_from_<store>` and `enet_from_<store>` there; genes matched by ID with versions ignored."""
    from .crosscohort import match_genes
    from .evaluate import EvaluateConfig, evaluate_run
    from .store import Store
    from .transfer import run_transfer

    source = config.store.name.removesuffix(".zarr")
    for other in config.evaluate.other_stores:
        other_genes = list(Store(other).genes.index)
        run_transfer(other, config.store, folds=config.enet.folds)
        for run in runs:
            name = f"{run.name}_from_{source}"
            genes = other_genes if run.multi else list(match_genes(run.genes, other_genes).pairs)
            missing = tuple(g for g in genes if not evaluated(other, run, g, name))
            if missing:
                evaluate_run(EvaluateConfig(store=other, genes=missing, micro_batch=config.evaluate.micro_batch,
                                            device=config.train.device), run.out, name)


def ism_runs(runs: list[Run]) -> list[Run]:
    """The runs ISM scores: those trained on all their train people (learning-curve runs are only evaluated)."""
    return [run for run in runs if run.fraction == 1]


def run_ism_step(config: PipelineConfig, runs: list[Run]) -> None:
    """ISM of every run trained on all its train people (learning-curve runs are only evaluated) and of base
    Enformer on their genes (scored genes are skipped)."""
    from .ism import IsmConfig, enformer_model, performer_model, run_ism
    from .store import Store

    store = Store(config.store)
    method = "full" if config.ism.exact_full or config.train.backbone != "enformer" else "splice"  # splice: Enformer's
    runs = ism_runs(runs)
    for run in runs:
        run_ism(IsmConfig(store=config.store, genes=run.genes, batch=config.ism.batch, method=method,
                          device=config.train.device), performer_model(run.out, store))
    if config.evaluate.base:
        genes = tuple(dict.fromkeys(g for run in runs for g in run.genes))
        base = enformer_model(store, config.train.weights, config.train.config, config.evaluate.track, config.train.window)
        run_ism(IsmConfig(store=config.store, genes=genes, batch=config.ism.batch, method=method, device=config.train.device), base)


def run_report(config: PipelineConfig) -> Path:
    """Render the HTML report from the store."""
    from .report import write_report

    inputs = config.inputs
    return write_report(config.store, config.out / "report", fold=config.report.fold, genes=config.report.genes,
                        finemapped=inputs.finemapped, states=inputs.chromatin_states, truth=inputs.truth)


def run_pipeline(config: PipelineConfig, steps: tuple[str, ...] = STEPS,
                 log: Callable[[str], None] = print) -> pd.DataFrame | None:
    """Run the asked steps in order; returns the per-gene summary table (None unless a step of `TABLE_STEPS` ran)."""
    from .store import Store

    with enet_step_advice(config):
        check_inputs(config, steps)
    if "build" in steps:
        log("== build")
        run_build(config)
    store = Store(config.store)  # the store exists only after the build
    store_genes = list(store.genes.index)
    runs = planned_runs(config, store_genes)
    if "build" in steps:  # checked again: the build may have made the store or added genes (more runs)
        check_runs(config, steps, runs, store)
    actions: dict[str, Callable[[], Any]] = {
        "enet": lambda: run_enet_step(config),
        "train": lambda: run_training(config, runs, store),
        "evaluate": lambda: (run_evaluation(config, runs, store_genes), run_cross_cohort(config, runs)),
        "ism": lambda: run_ism_step(config, runs) if config.ism.enabled else None,
        "report": lambda: log(f"report: {run_report(config) / 'index.html'}"),
    }
    for name, action in actions.items():
        if name in steps:
            log(f"== {name}")
            with enet_step_advice(config):
                action()
    return summary_table(config, runs) if set(TABLE_STEPS) & set(steps) else None


def summary_table(config: PipelineConfig, runs: list[Run]) -> pd.DataFrame:
    """Per trained gene: simulated h2 (when given), test r and R2 of enet, Performer and base Enformer (fold means),
    and causal-variant auROC per model (when a truth table is given)."""
    from .compare import fold_metrics
    from .store import Store

    genes = list(dict.fromkeys(g for run in runs for g in run.genes))
    metrics = fold_metrics(Store(config.store))
    metrics = metrics[metrics["gene_id"].isin(genes)]
    table = metrics.pivot_table(index="gene_id", columns="model", values=["pearson_r", "r2"], aggfunc="mean")
    table.columns = [f"{model} {'r' if value == 'pearson_r' else 'R2'}" for value, model in table.columns]
    table = table[sorted(table.columns)].reindex(genes)  # each model's r beside its R2
    if config.inputs.truth_genes is not None:
        h2 = pd.read_csv(config.inputs.truth_genes, sep="\t").set_index("gene_id")[["gene_name", "h2"]]
        table = h2.join(table, how="right")
    if config.inputs.truth is not None:
        table = table.join(causal_auroc(config, genes))
    return table.reset_index()


def causal_auroc(config: PipelineConfig, genes: list[str]) -> pd.DataFrame:
    """auROC of each model's |weight| (enet coefficient, ISM scores) for the truth table's causal variants, per gene."""
    from .analysis import compute, read_variant_list, recovery_auroc, variant_weights

    weights = compute(variant_weights(config.store, config.report.fold, genes=genes))
    auroc = recovery_auroc(weights, read_variant_list(config.inputs.truth))
    return auroc.pivot(index="gene_id", columns="weight", values="auroc").add_suffix(" auROC")
