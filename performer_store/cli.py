"""The `pstore` command: thin click wrappers, each calling one library function."""

from __future__ import annotations

import math
import os
import shlex
import sys
from pathlib import Path
from typing import Callable

import click

from . import __version__
from .inputs import InputError, name_too_long


class PathType(click.Path):
    """click.Path that refuses a path the file system cannot name (`inputs.name_too_long`: a name over 255 bytes) in one
    line naming the option and the limit, instead of the OSError traceback of its first use."""

    def convert(self, value, param, ctx) -> Path:
        """The path, or click's one-line 'Invalid value' when it is too long."""
        problem = name_too_long(Path(os.fsdecode(value)))
        if problem:
            self.fail(problem, param, ctx)
        return super().convert(value, param, ctx)


PathArg = PathType(path_type=Path)
ExistingFile = PathType(path_type=Path, exists=True, dir_okay=False)
DEVICE = dict(type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="auto (cuda when available), cpu or cuda.")
"""The --device option of train, evaluate and ism."""


class FiniteFloatRange(click.FloatRange):
    """click.FloatRange that also refuses nan and inf (nan passes every comparison of the range)."""

    def convert(self, value, param, ctx) -> float:
        """The value in range and finite, or click's one-line 'Invalid value'."""
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{number} is not a finite number.", param, ctx)
        return number


class Group(click.Group):
    """A click group that turns InputError into a one-line 'Error: ...' and exit status 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except InputError as error:
            raise click.ClickException(str(error)) from None


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pstore")
def main() -> None:
    """performer-store: personal-genome sequence stores and the Performer method.

    Typical use: `pstore simulate demo/` (a GTEx-like cohort), then `pstore build` (the Zarr store),
    then `pstore info STORE`.
    """


@main.command()
@click.argument("out_dir", type=PathArg)
@click.option("--demo", is_flag=True, help="The demo cohort: 670 people, 24 genes, multi-allelic sites and indels included.")
@click.option("--individuals", type=click.IntRange(min=10), default=670, show_default=True, help="Diploid people in the VCF (GTEx Whole Blood size).")
@click.option("--genes", "n_genes", type=click.IntRange(min=1), default=24, show_default=True, help="Genes (one window each).")
@click.option("--window", type=click.IntRange(min=8_192), default=49_152, show_default=True,
              help="bp simulated around each TSS: genotypes, enhancers and causal variants (196608 = Enformer's full input).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed; the same seed gives identical files.")
@click.option("--multiallelic", is_flag=True, help="Add a few multi-allelic sites.")
@click.option("--indels", is_flag=True, help="Add a few indels and symbolic alleles (the build skips and counts them).")
@click.option("--reference", type=ExistingFile, help="Take windows from this real FASTA (plain or gzip) instead of synthetic contigs.")
@click.option("--second-cohort", type=PathArg, help="Also write a second cohort of other people of the same population into this folder (cross-cohort tests).")
@click.option("--second-individuals", type=click.IntRange(min=10), help="People of the second cohort (default: --individuals).")
@click.option("--force", is_flag=True, help="Replace the cohort files OUT_DIR (or --second-cohort) holds already.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def simulate(out_dir: Path, demo: bool, individuals: int, n_genes: int, seed: int, multiallelic: bool,
             indels: bool, reference: Path | None, window: int, second_cohort: Path | None,
             second_individuals: int | None, force: bool, quiet: bool) -> None:
    """Simulate a GTEx-like cohort with known causal variants into OUT_DIR.

    Coalescent genotypes (msprime, stdpopsim OutOfAfrica_2T12, 87% EUR / 13% AFR), a reference with
    planted JASPAR motifs, causal SNVs with per-gene heritability 0-0.6, and every file `pstore build`
    reads: reference.fa, genotypes.vcf.gz, annotation.gtf.gz, expression.bed.gz (+ truth tables).

    With --second-cohort DIR, one population of both cohorts' people is simulated and split: the two cohorts
    share reference, genes, causal variants and effects but no person; each VCF holds the records polymorphic
    among its people, each expression is inverse-normal within its cohort, and the second cohort's gene IDs
    have versions 3 higher (ENSG....11 -> ENSG....14), as two GENCODE releases would.
    """
    from .simulate import simulate_cohorts

    if second_individuals is not None and second_cohort is None:
        raise click.BadParameter("needs --second-cohort DIR; give the second cohort's folder or drop it", param_hint="--second-individuals")
    folders = [out_dir] + ([second_cohort] if second_cohort else [])
    counts = [individuals] + ([second_individuals or individuals] if second_cohort else [])
    try:
        written = simulate_cohorts(
            folders, individuals=counts, genes=n_genes, seed=seed, multiallelic=multiallelic or demo,
            indels=indels or demo, reference=reference, window=window, progress=not quiet, force=force,
        )
    except (ValueError, ImportError) as error:
        raise click.ClickException(str(error)) from None
    for files in written:
        stats = files.summary
        click.echo(f"wrote {files.out_dir}: {stats['individuals']} people, {stats['genes']} genes, "
                   f"{stats['snvs_per_window']:.0f} SNVs per {window:,}-bp window, "
                   f"{100 * stats['fraction_maf_below_1pct']:.0f}% with MAF < 1%")


@main.command()
@click.option("--store", required=True, type=PathArg, help="Zarr store directory to create or complete (e.g. whole_blood.zarr).")
@click.option("--fasta", required=True, type=PathArg, help="Reference FASTA (plain or bgzipped, .fai made if missing).")
@click.option("--vcf", required=True, type=PathArg, help="Multi-sample VCF/BCF, bgzipped and indexed (.tbi/.csi); SNVs only are used, whatever "
              "their FILTER (`bcftools view -f PASS` first to keep PASS records only).")
@click.option("--gtf", required=True, type=PathArg, help="GENCODE-style GTF with gene records (plain or gzip).")
@click.option("--expression", required=True, type=PathArg, help="GTEx-style normalized expression BED: #chr start end gene_id sample...")
@click.option("--tissue", required=True, help="Tissue name recorded in the store (e.g. whole_blood).")
@click.option("--gene", "gene_ids", multiple=True, help="Gene ID or name to build (repeatable). Default: every gene of the BED found in the GTF.")
@click.option("--genes", "genes_file", type=PathArg, help="File with one gene ID per line.")
@click.option("--window", type=click.IntRange(min=128), default=49_152, show_default=True, help="Window length in bp, centred on the TSS.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the people order and the 3 train/tune/test folds.")
@click.option("--sample-map", type=PathArg, help="TSV: expression sample ID, VCF sample ID (default: same IDs, or GTEx sample -> participant).")
@click.option("--mean-expression", type=PathArg, help="TSV with header gene_id, mean_expression: each gene's mean expression "
              "across people on a raw scale (e.g. mean log TPM), kept per gene for `pstore evaluate --reference`.")
@click.option("--skip-ref-mismatch", is_flag=True, help="Skip and count VCF records whose REF disagrees with the FASTA instead of stopping.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Local worker processes (Dask's multiprocessing scheduler; 1 = build in this process).")
@click.option("--scheduler", help="Address of a running dask.distributed scheduler to build on (store path must be shared).")
@click.option("--force", is_flag=True, help="Delete the store's contents and build it from scratch.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def build(store: Path, fasta: Path, vcf: Path, gtf: Path, expression: Path, tissue: str, gene_ids: tuple[str, ...],
          genes_file: Path | None, window: int, seed: int, sample_map: Path | None, mean_expression: Path | None, skip_ref_mismatch: bool,
          workers: int, scheduler: str | None, force: bool, quiet: bool) -> None:
    """Build a store: per gene, every person's dosage one-hot, target, and the window's variant table.

    Re-running on an existing store adds missing genes and skips complete ones; a killed build resumes.
    """
    from .build import BuildConfig, build_store

    config = BuildConfig(
        store=store, fasta=fasta, vcf=vcf, gtf=gtf, expression=expression, tissue=tissue, genes=_gene_list(gene_ids, genes_file),
        window=window, seed=seed, sample_map=sample_map, mean_expression=mean_expression, skip_ref_mismatch=skip_ref_mismatch, workers=workers,
        scheduler=scheduler, force=force, progress=not quiet, command_line=shlex.join(sys.argv),
    )
    report = build_store(config)
    samples = report.samples
    click.echo(f"{report.store}: {report.n_people} people ({samples['n_vcf_only']} in the VCF only and "
               f"{samples['n_expression_only']} in the expression BED only were left out); built "
               f"{len(report.built)} genes, {len(report.skipped)} already complete, in {report.seconds:.1f} s")
    if report.built:
        counts = report.counts
        click.echo(f"variants: {counts['variants']} SNV rows; left out {counts['indel_alleles']} indel, {counts['mnp_alleles']} MNP, "
                   f"{counts['non_acgt_alleles']} non-ACGT (N, IUPAC) and {counts['symbolic_alleles']} symbolic alleles, "
                   f"{counts['ref_mismatch_skipped']} REF mismatches, {counts['records_without_gt']} records without GT (uncalled); "
                   f"{counts['multiallelic_sites']} multi-allelic sites split; {counts['nan_targets']} NaN targets")
    for warning in report.left_out:
        click.echo(f"Warning: {warning}", err=True)


@main.command()
@click.argument("store", type=PathArg)
def info(store: Path) -> None:
    """People, genes, variants per gene, size on disk and compression of a store, and its models' results."""
    from .compare import model_summary
    from .validate import describe_store

    summary, table = describe_store(store)
    for key, value in summary.items():
        click.echo(f"{key:>36}: {value}")
    click.echo("")
    click.echo(table.to_string(index=False))
    models = model_summary(store)
    if len(models):
        click.echo("\nmodels (test-set metrics, mean over genes and folds):")
        click.echo(models.to_string(index=False, float_format=lambda v: f"{v:.4f}"))


@main.command()
@click.argument("store", type=PathArg)
@click.option("--deep", is_flag=True, help="Also recompute every dosage one-hot from the variant table and compare.")
def validate(store: Path, deep: bool) -> None:
    """Check a store against the schema; print each problem and exit 1 if there are any.

    Leftovers of interrupted writes are listed as warnings: nothing reads them, so they do not make a store invalid.
    """
    from .validate import leftovers, validate_store

    problems = validate_store(store, deep=deep)
    left = leftovers(store)
    for line in left:
        click.echo(f"Warning: {line}", err=True)
    for problem in problems:
        click.echo(problem)
    if problems:
        raise click.ClickException(f"store {store}: {len(problems)} problems")
    aside = f" (the {len(left)} leftover(s) of interrupted writes above are not part of it)" if left else ""
    click.echo(f"{store}: valid{aside}")


def _gene_list(gene_ids: tuple[str, ...], genes_file: Path | None) -> tuple[str, ...]:
    """Gene IDs from repeated --gene options and a --genes file (one per line; blank lines and # comments, indented
    or after an ID, skipped; `_gene_file`), each once in first-seen order (a repeat is used once, with a warning)."""
    from collections import Counter

    genes = list(gene_ids)
    if genes_file is not None:
        genes += _gene_file(genes_file)
    repeated = [gene for gene, count in Counter(genes).items() if count > 1]
    if repeated:
        click.echo(f"Warning: {len(repeated)} gene(s) given more than once (first: {repeated[0]}); each is used once", err=True)
    return tuple(dict.fromkeys(genes))


def _gene_file(path: Path) -> list[str]:
    """The gene IDs of a --genes file (a regular file, or one read as a stream: a pipe, /dev/null); one without any
    is an InputError (an empty list would mean every gene to some commands)."""
    from .inputs import require_file

    if path.is_file() or not path.exists() or path.is_dir():  # a stream (pipe, device) is read as it is
        require_file(path, "gene list")
    try:
        lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
        genes = [line for line in lines if line]
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"gene list {path}: cannot be read as text ({error}); give a file with one gene ID per line") from None
    if not genes:
        raise InputError(f"--genes {path}: empty gene list (no gene ID in it); give a file with one gene ID per line, "
                         "or drop --genes")
    return genes


@main.command()
@click.option("--store", required=True, type=PathArg, help="Store built by `pstore build`.")
@click.option("--gene", "gene_ids", multiple=True, help="Gene ID to train on (repeatable).")
@click.option("--genes", "genes_file", type=PathArg, help="File with one gene ID per line (multi-gene training).")
@click.option("--fold", type=click.IntRange(min=0), required=True, help="People split (fold) to train on: its train people fit, its tune people stop early.")
@click.option("--out", required=True, type=PathArg, help="Run directory: checkpoints (best.pt, last.pt), metrics.jsonl, run.json.")
@click.option("--backbone", type=click.Choice(["enformer", "borzoi"]), default="enformer", show_default=True,
              help="Model under the linear track: Enformer (128-bp bins) or Borzoi (32-bp bins, windows a multiple of 128 bp).")
@click.option("--mode", type=click.Choice(["finetune", "transfer"]), default="finetune", show_default=True,
              help="finetune: every layer but BatchNorm trains; transfer: the trunk is frozen and only the linear track trains.")
@click.option("--config", "model_config", type=click.Choice(["tiny", "small", "full"]), help="Randomly initialized backbone of this size (Borzoi: tiny or full).")
@click.option("--weights", type=PathArg, help="Pretrained backbone: a local directory (config.json + weights) or a .safetensors/.pt file.")
@click.option("--name", help="Name of the run's results in the store (default: the --out directory's name); runs of several folds may share it. "
              "Letters, digits, '.', '_', '-' (not first '.'); not enet, lasso or enformer.")
@click.option("--window", type=click.IntRange(min=1), help="Window in bp (default: the store's); a shorter one is the centre of the stored window.")
@click.option("--train-fraction", type=FiniteFloatRange(0, 1, min_open=True), default=1.0, show_default=True,
              help="Train on this share of the fold's train people (nested for one seed: 0.25 within 0.5 within 1), for learning curves; tune and test people are untouched.")
@click.option("--mask-variants", help="Set these SNVs to the reference in every input (training, tune, and `pstore evaluate`): "
              "top-enet:K (per gene the K largest |enet coefficients| of the fold; run `pstore enet` first) or a TSV of "
              "variants (header: contig, position (1-based); gene_id, ref, alt matched when present).")
@click.option("--lr", type=FiniteFloatRange(min=0, max=1, min_open=True),
              help="AdamW learning rate (default: 5e-6 finetune, 1e-3 transfer), at most 1: a step moves each weight by about lr.")
@click.option("--micro-batch", type=click.IntRange(min=1), default=32, show_default=True, help="People per forward pass (all of one gene).")
@click.option("--gradient-checkpointing", is_flag=True,
              help="Recompute activations in the backward pass instead of keeping them: much less memory per sample "
                   "(196,608-bp windows; see BENCHMARKS.md) for ~1.3x the compute; same results.")
@click.option("--accumulation", type=click.IntRange(min=1), default=4, show_default=True, help="Micro-batches per optimizer step.")
@click.option("--clip", type=FiniteFloatRange(min=0, min_open=True), default=0.05, show_default=True,
              help="Gradient-norm clip: the gradients of each optimizer step are scaled down to at most this norm.")
@click.option("--max-epochs", type=click.IntRange(min=1), default=150, show_default=True)
@click.option("--patience", type=click.IntRange(min=1), default=20, show_default=True, help="Epochs without a better mean tune R2 before stopping.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of initialization, people draws and dropout.")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True, help="DataLoader worker processes.")
@click.option("--read-path", type=click.Choice(["expand", "stored"]), default="expand", show_default=True,
              help="expand: reference + variant changes, scattered on the device; stored: the stored one-hot array.")
@click.option("--device", **DEVICE)
@click.option("--resume", is_flag=True, help="Continue from --out/last.pt (same result as an uninterrupted run); without last.pt, "
              "a run with run.json alone (killed in its first epoch) starts afresh if run.json records these settings, "
              "and one with best.pt or metrics.jsonl is refused.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(store: Path, gene_ids: tuple[str, ...], genes_file: Path | None, fold: int, out: Path, backbone: str, mode: str,
          model_config: str | None, weights: Path | None, name: str | None, window: int | None, train_fraction: float,
          mask_variants: str | None, lr: float | None, micro_batch: int, gradient_checkpointing: bool, accumulation: int,
          clip: float, max_epochs: int, patience: int, seed: int, workers: int, read_path: str, device: str,
          resume: bool, quiet: bool) -> None:
    """Fine-tune Performer (Enformer + one linear track; or Borzoi + one linear track) on the people of one or many genes.

    Run it under torchrun for several processes (DDP; gloo on CPU, NCCL on GPUs), e.g.
    `torchrun --nproc_per_node 8 -m performer_store train ...`.
    """
    from .train import TrainConfig, TrainingError
    from .train import train as run_training

    config = TrainConfig(
        store=store, genes=_gene_list(gene_ids, genes_file), fold=fold, out=out, config=model_config, weights=weights,
        backbone=backbone, mode=mode, name=name, window=window, train_fraction=train_fraction, mask_variants=mask_variants,
        lr=lr, micro_batch=micro_batch, gradient_checkpointing=gradient_checkpointing, accumulation=accumulation, clip=clip,
        max_epochs=max_epochs, patience=patience, seed=seed, workers=workers, read_path=read_path, device=device,
        resume=resume, progress=not quiet,
    )
    try:
        state = run_training(config)
    except TrainingError as error:
        raise click.ClickException(str(error)) from None
    if state.best_epoch < 0:
        raise click.ClickException(f"{out}: {state.epoch} epochs, none with a finite mean tune R2 (each gene needs 2+ tune people "
                                   f"with differing targets), so no best.pt was written; {out / 'last.pt'} holds the final weights")
    click.echo(f"{out}: {state.epoch} epochs; best mean tune R2 {state.best_r2:.4f} at epoch {state.best_epoch}")


def model_choice(command: Callable) -> Callable:
    """The options that pick a model for `evaluate` and `ism`: a run, or base Enformer and how to build it."""
    options = [
        click.option("--run", "run_dir", type=PathArg, help="Run directory of `pstore train` (its best.pt): results fill the run's fold."),
        click.option("--base", is_flag=True, help="Base Enformer (CAGE track, 3 centre bins) instead of a run: the same results fill every fold."),
        click.option("--weights", type=PathArg, help="With --base: pretrained Enformer weights (directory or file)."),
        click.option("--config", "model_config", type=click.Choice(["tiny", "small", "full"]), help="With --base: a random-init Enformer (tests, demo)."),
        click.option("--track", type=click.IntRange(min=0), help="With --base: human CAGE track (default by tissue: whole_blood 4950, brain 4980)."),
        click.option("--window", type=click.IntRange(min=1), help="With --base: window in bp (default: the store's)."),
        click.option("--gene", "gene_ids", multiple=True, help="Gene to use (repeatable). Default: every gene of the store."),
        click.option("--genes", "genes_file", type=PathArg, help="File with one gene ID per line."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _check_model_choice(base: bool, run_dir: Path | None, name: str | None, **base_options: object) -> None:
    """Exactly one of --run and --base; --name only with --run (and a results name), the base Enformer options
    (weights, model_config, track, window: given as keywords) only with --base."""
    from .results import check_name

    if base == (run_dir is not None):
        raise click.UsageError("give --run RUN or --base")
    if base and name is not None:
        raise InputError("--name applies to --run only: base Enformer's results are always named 'enformer'; drop --name")
    if name is not None:
        check_name(name, "--name")
    given = [option for option, value in base_options.items() if value is not None]
    if run_dir is not None and given:
        flag = "--" + ("config" if given[0] == "model_config" else given[0])
        raise InputError(f"{flag} applies to --base only (a run is read with the backbone, track and window it was "
                         f"trained with); drop {flag}")


@main.command()
@click.option("--store", required=True, type=PathArg, help="Store whose people to predict.")
@model_choice
@click.option("--name", help="With --run: name of the results in the store (default: the results name recorded at "
              "training, i.e. train's --name or its --out directory's name; a copied run keeps the original's).")
@click.option("--micro-batch", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--device", **DEVICE)
@click.option("--reference", is_flag=True, help="Predict each gene's reference window instead of its people (into "
              "genes/<gene>/reference/<model>; default genes: the run's, or all for --base) and print the across-gene "
              "Pearson and Spearman r with the store's mean expression (`pstore build --mean-expression`).")
def evaluate(store: Path, run_dir: Path | None, base: bool, weights: Path | None, model_config: str | None, track: int | None,
             window: int | None, gene_ids: tuple[str, ...], genes_file: Path | None, name: str | None, micro_batch: int,
             workers: int, device: str, reference: bool) -> None:
    """Predict held-out people and write predictions, Pearson r and R2 per gene into the store.

    Genes a run trained on are scored as HOP (held-out people), the others as HOGP (held-out genes and people).
    A run trained on another store (cross-cohort) predicts every person of this one: genes are matched by ID
    with versions ignored, the run's fold f fills this store's fold f (r and R2 on its test people, as this
    store's own models; cross_r and cross_R2 on everyone), and the result records its source store. People
    who were, by sample ID, train or tune people of the run's fold in its store (which must be where run.json
    says) are left out and counted; a store of mostly such people is refused.
    With --reference: the across-gene check of the paper (fine-tuned models lose the gene-level signal base Enformer has).
    """
    from .evaluate import EvaluateConfig, evaluate_base, evaluate_run, mean_metrics

    _check_model_choice(base, run_dir, name, weights=weights, model_config=model_config, track=track, window=window)
    if reference:
        _evaluate_reference(store, run_dir, name, weights, model_config, track, window, _gene_list(gene_ids, genes_file), device)
        return
    config = EvaluateConfig(store=store, genes=_gene_list(gene_ids, genes_file), micro_batch=micro_batch, workers=workers, device=device)
    table = evaluate_base(config, weights, model_config, track, window) if base else evaluate_run(config, run_dir, name)
    click.echo(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if "genes" in table.attrs:
        click.echo(table.attrs["genes"])
    for setting, part in table.groupby("setting"):
        means = mean_metrics(part)
        click.echo(f"{setting}: {part['gene_id'].nunique()} genes, mean r {means['pearson_r']:.4f}, mean R2 {means['r2']:.4f}")


def _evaluate_reference(store: Path, run_dir: Path | None, name: str | None, weights: Path | None, model_config: str | None,
                        track: int | None, window: int | None, genes: tuple[str, ...], device: str) -> None:
    """`pstore evaluate --reference`: reference-window predictions and the across-gene correlation, printed."""
    from .ism import enformer_model, performer_model
    from .reference import MIN_GENES, evaluate_reference
    from .store import Store

    opened = Store(store)
    model = performer_model(run_dir, opened, name) if run_dir else enformer_model(opened, weights, model_config, track, window)
    table, correlation = evaluate_reference(store, model, genes, run_dir, device)
    click.echo(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    for row in correlation.itertuples():
        click.echo(f"{row.model}: reference prediction vs mean expression across {row.genes} genes: "
                   f"Pearson r {row.pearson_r:.4f}, Spearman r {row.spearman_r:.4f}")
    if correlation["genes"].lt(MIN_GENES).all():
        click.echo(f"a correlation needs at least {MIN_GENES} predicted genes with a mean expression: build the store with "
                   "--mean-expression TSV and predict more genes (--gene, or a multi-gene run)")


@main.command()
@click.option("--store", required=True, type=PathArg, help="Store built by `pstore build`; scores go to genes/<gene>/ism/<model>.")
@model_choice
@click.option("--name", help="With --run: name of the scores in the store (default: the results name recorded at training, "
              "i.e. train's --name or its --out directory's name).")
@click.option("--batch", type=click.IntRange(min=1), default=32, show_default=True, help="SNVs per forward pass (lower it on CPU for the full-size model).")
@click.option("--exact-full", is_flag=True, help="Whole-window forward passes instead of the conv-tower splice (slower; same scores up to float rounding).")
@click.option("--bf16", is_flag=True, help="bf16 autocast (CUDA only). Default: float32.")
@click.option("--device", **DEVICE)
@click.option("--force", is_flag=True, help="Score genes again even when their scores for these folds and method are stored.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def ism(store: Path, run_dir: Path | None, base: bool, weights: Path | None, model_config: str | None, track: int | None,
        window: int | None, gene_ids: tuple[str, ...], genes_file: Path | None, name: str | None, batch: int, exact_full: bool,
        bf16: bool, device: str, force: bool, quiet: bool) -> None:
    """In-silico mutagenesis: ALT minus REF prediction of every SNV in each gene's variant table.

    Per gene, the reference window (cropped to the model's window, centred, when the model reads a shorter one)
    is predicted once, then that window with each SNV's ALT base. Only SNVs inside the model's window are
    scored; the others hold NaN. By default the conv tower is recomputed only on ~1.7 kb around each SNV and
    spliced into the reference window's (exact: an SNV changes no tower output beyond 259 bp of its bin);
    --exact-full runs whole windows. Genes already scored for the model's folds by the same method are skipped.
    A run trained with --mask-variants scores masked SNVs too (from the reference window, as every SNV).
    """
    from .ism import IsmConfig, enformer_model, performer_model, run_ism
    from .store import Store

    _check_model_choice(base, run_dir, name, weights=weights, model_config=model_config, track=track, window=window)
    config = IsmConfig(store=store, genes=_gene_list(gene_ids, genes_file), batch=batch, method="full" if exact_full else "splice",
                       device=device, bf16=bf16, force=force, progress=not quiet)
    opened = Store(store)
    model = enformer_model(opened, weights, model_config, track, window) if base else performer_model(run_dir, opened, name)
    table = run_ism(config, model)
    scored = table[table["status"] == "scored"]
    click.echo(f"{store}: scored {scored['scored'].sum()} SNVs of {len(scored)} genes with {model.name} ({config.method}, "
               f"folds {','.join(map(str, model.folds))}) into genes/<gene>/ism/{model.name}; "
               f"{(scored['variants'] - scored['scored']).sum()} SNVs outside its {model.window} bp window left NaN; "
               f"{len(table) - len(scored)} genes already complete (--force scores them again)")


@main.command("run")
@click.argument("config_file", type=PathArg)
@click.option("--steps", help="Only these steps, comma-separated (build, enet, train, evaluate, ism, report). Default: all.")
def run_command(config_file: Path, steps: str | None) -> None:
    """Run the whole method from a TOML config: build -> enet -> train -> evaluate -> ism -> report.

    Finished work is skipped, so running the same config again resumes an interrupted run. Every key is
    documented in configs/example.toml; relative paths are relative to the config file. Every value (with the
    checks of the step's own `pstore` command) and every input file the steps read is checked before the first
    step runs.
    """
    from .pipeline import load_config, parse_steps, run_pipeline

    chosen = parse_steps(steps)
    table = run_pipeline(load_config(config_file), chosen, log=click.echo)
    if table is None:
        return
    click.echo("\nper gene: simulated h2 (when known), test-set Pearson r and R2 per model (fold means), causal-variant auROC per model")
    click.echo(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def _fold_list(value: str | None) -> tuple[int, ...] | None:
    """Folds from a comma-separated list such as '0,1,2' (None = every fold)."""
    if value is None:
        return None
    try:
        folds = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r}: give fold numbers separated by commas, e.g. 0,1,2", param_hint="--folds") from None
    if not folds:
        raise click.BadParameter(f"{value!r} names no fold; give fold numbers separated by commas, e.g. 0,1,2, or leave "
                                 "--folds out for every fold", param_hint="--folds")
    return folds


@main.command()
@click.option("--store", required=True, type=PathArg, help="Store built by `pstore build`.")
@click.option("--gene", "gene_ids", multiple=True, help="Gene ID to fit (repeatable). Default: every gene of the store.")
@click.option("--folds", help="Folds to fit, comma-separated (e.g. 0,1,2). Default: every fold of the store.")
@click.option("--model", type=click.Choice(["enet", "lasso"]), default="enet", show_default=True,
              help="enet: ElasticNetCV, l1_ratio 0.5; lasso: LassoCV. Results go to genes/<gene>/results/<model>.")
@click.option("--solver", type=click.Choice(["early", "gram", "sklearn"]),
              help="early: scikit-learn's Gram coordinate descent down the alpha grid until the validation error has "
                   "clearly risen past its minimum; gram: the same over the whole grid; sklearn: scikit-learn's defaults. "
                   "Default: early for folds not yet fitted, stored folds kept whatever their solver; a named solver "
                   "refuses requested folds stored with another one (--force refits them).")
@click.option("--force", is_flag=True, help="Refit the requested folds (replacing the stored ones), with --solver (default early).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Local worker processes (1 = fit in this process).")
@click.option("--scheduler", help="Address of a running dask.distributed scheduler (store path must be shared).")
@click.option("--from-store", type=PathArg, help="Fit nothing: this other store's --model results predict every person of --store (cross-cohort).")
@click.option("--name", help="With --from-store: name of the results in --store (default: <model>_from_<other store's name>).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def enet(store: Path, gene_ids: tuple[str, ...], folds: str | None, model: str, solver: str | None, force: bool, workers: int,
         scheduler: str | None, from_store: Path | None, name: str | None, quiet: bool) -> None:
    """Elastic-net (or lasso) baselines per gene and fold, on the same people as the deep models.

    Per gene and fold: the 0/1/2 ALT dosage of every SNV in the window (missing = 0), the fold's train people
    with a target, VarianceThreshold + ElasticNetCV (100 alphas, 5-fold inner CV, max_iter 2000). Stored:
    coefficients aligned with the variant table, intercept, alpha, predictions of the tune and test people,
    test Pearson r and R2. Folds already in the store are kept and skipped (--force refits them); a killed run resumes.

    A fold with fewer than 10 train people predicts nothing; with no SNV varying among its train people, or a
    constant target, it predicts the train mean with NaN metrics; its status says which.

    With --from-store A, the models fitted in store A predict every person of --store (cross-cohort): genes matched
    by ID with versions ignored, A's fold f into this store's fold f, variants matched by position, REF and ALT
    (swapped alleles count A's ALT; a variant this store lacks contributes 0); the share of each model's
    non-zero coefficients found is stored and printed. Windows must be as long in both stores. People of --store
    who are, by sample ID, train or tune people of A's fold are left out of that fold and counted; a store of
    mostly such people is refused.
    """
    gene_ids = _gene_list(gene_ids, None)
    if from_store is not None:
        for option, given in (("--solver", solver is not None), ("--force", force)):
            if given:
                raise click.BadParameter("applies to fitting only; --from-store fits nothing (it predicts with the other "
                                         f"store's models): drop {option}", param_hint=option)
        return _enet_transfer(store, from_store, gene_ids, _fold_list(folds), model, name)
    if name is not None:
        raise click.BadParameter("applies to --from-store only (fitted results are named by --model: enet or lasso); "
                                 "drop --name, or add --from-store STORE", param_hint="--name")
    from .enet import run_enet

    table, fitted = run_enet(store, gene_ids, _fold_list(folds), model, solver, workers, scheduler, progress=not quiet, force=force)
    solvers = ", ".join(sorted(set(table["solver"])))
    click.echo(f"{store}: fitted {fitted} genes, {table['gene_id'].nunique() - fitted} already complete ({model}; solver {solvers})")
    statuses = table["status"].str.split(":").str[0].value_counts()
    click.echo("folds: " + ", ".join(f"{count} {status}" for status, count in statuses.items()))
    scored, correlated = table["r2"].notna(), table["pearson_r"].notna()
    click.echo(f"test R2 of {scored.sum()} folds: mean {table['r2'][scored].mean():.4f}; test r of {correlated.sum()} "
               f"folds: mean {table['pearson_r'][correlated].mean():.4f}; median non-zero coefficients "
               f"{table['n_nonzero'][table['n_nonzero'] >= 0].median():.0f}" if scored.any() else "no fold has test metrics")
    for row in table[table["status"] != "ok"].itertuples():
        click.echo(f"{row.gene_id} fold {row.fold}: {row.status}")


def _enet_transfer(store: Path, source: Path, gene_ids: tuple[str, ...], folds: tuple[int, ...] | None, model: str,
                   name: str | None) -> None:
    """`pstore enet --from-store`: transfer the other store's linear models and print what was found."""
    from .crosscohort import seen_summary
    from .transfer import run_transfer

    report = run_transfer(store, source, gene_ids, folds, model, name)
    click.echo(report.table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    click.echo(report.genes.summary(source.name, store.name))
    click.echo(seen_summary(report.seen, store.name, source.name))
    for gene_id, why in report.skipped.items():
        click.echo(f"{gene_id}: skipped, {why}")
    table = report.table
    click.echo(f"{store}: {report.name} ({model} of {source}) on {table['gene_id'].nunique()} genes, {report.transferred} "
               f"transferred now; mean test R2 {table['r2'].mean():.4f}, mean R2 on everyone {table['cross_r2'].mean():.4f}; "
               f"{table['n_found'].clip(lower=0).sum()} of {table['n_nonzero'].clip(lower=0).sum()} non-zero coefficients' "
               f"variants found ({table['n_flipped'].clip(lower=0).sum()} with REF and ALT swapped)")


def _check_table_out(out: Path) -> None:
    """Refuse a table --out that is not a .tsv or .parquet file name before anything is computed."""
    if out.suffix not in (".parquet", ".tsv"):
        raise click.BadParameter(f"{out}: give a .tsv or .parquet file name", param_hint="--out")
    if out.is_dir():
        raise click.BadParameter(f"{out} is a directory; give a .tsv or .parquet file name", param_hint="--out")


@main.command()
@click.option("--store", required=True, type=PathArg, help="Store with results of `pstore enet` and other models.")
@click.option("--runs", help="Results to compare, comma-separated (e.g. my_run,enformer). Default: every result in the store.")
@click.option("--baseline", default="enet", show_default=True, help="Result the others are compared against.")
@click.option("--out", "outputs", multiple=True, type=PathArg, help="Also write the per-gene table to FILE (.tsv or .parquet; repeatable).")
def compare(store: Path, runs: str | None, baseline: str, outputs: tuple[Path, ...]) -> None:
    """Per gene: test Pearson r and R2 of every model, averaged over folds, minus the elastic net's.

    Genes are grouped by the baseline's R2 (none <= 0, low 0-0.06, medium/high > 0.06, as in the paper); the
    summary gives the fraction of genes where each model is within 0.02 R2 of the baseline or better.
    """
    from .compare import compare_models, write_table

    for out in outputs:
        _check_table_out(out)
    comparison = compare_models(store, [r for r in runs.split(",") if r] if runs else None, baseline)
    click.echo(comparison.table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    click.echo("")
    click.echo(comparison.summary.to_string(index=False, float_format=lambda v: f"{v:.4f}") if len(comparison.summary)
               else f"no results besides {baseline} yet: add them with `pstore evaluate` (or `pstore enet --model lasso`)")
    for out in outputs:
        write_table(comparison.table, out)
        click.echo(f"wrote {out}")


@main.group()
def export() -> None:
    """Write a store's models in other tools' formats."""


@export.command("predictdb")
@click.option("--store", required=True, type=PathArg, help="Store with results of `pstore enet`.")
@click.option("--out", required=True, type=PathArg, help="SQLite file to write (e.g. model.db); replaced if it exists.")
@click.option("--model", type=click.Choice(["enet", "lasso"]), default="enet", show_default=True, help="Which linear models to export.")
@click.option("--fold", type=click.IntRange(min=0), default=0, show_default=True, help="Fold whose models are exported.")
def export_predictdb_command(store: Path, out: Path, model: str, fold: int) -> None:
    """The elastic nets as a PredictDB database (tables weights and extra) for PrediXcan and S-PrediXcan."""
    from .predictdb import export_predictdb

    report = export_predictdb(store, out, model, fold)
    click.echo(f"wrote {report.out}: {report.genes} genes, {report.weights} weights; "
               f"{len(report.left_out)} genes left out")
    for gene_id, reason in report.left_out.items():
        click.echo(f"{gene_id}: {reason}")


@main.command("query")
@click.option("--store", required=True, type=PathArg, help="Store with `pstore enet` and `pstore ism` results.")
@click.option("--fold", type=click.IntRange(min=0), default=0, show_default=True, help="Fold whose coefficients, scores and flags are read.")
@click.option("--gene", "gene_ids", multiple=True, help="Gene ID to export (repeatable). Default: every gene.")
@click.option("--min-maf", type=FiniteFloatRange(0, 0.5), help="Keep SNVs with MAF >= this.")
@click.option("--max-maf", type=FiniteFloatRange(0, 0.5), help="Keep SNVs with MAF <= this.")
@click.option("--flag", "flags", multiple=True, help="Keep SNVs with this flag, e.g. hsv_<model> or driver_<model> (repeatable: all must hold).")
@click.option("--scheduler", help="Address of a running dask.distributed scheduler (store path must be shared).")
@click.option("--out", required=True, type=PathArg, help="File to write: .parquet or .tsv.")
def query_command(store: Path, fold: int, gene_ids: tuple[str, ...], min_maf: float | None, max_maf: float | None,
                  flags: tuple[str, ...], scheduler: str | None, out: Path) -> None:
    """Export variant weights: per gene and SNV, position, alleles, MAF, signed TSS distance, elastic-net
    coefficient, each model's ISM score, and its HSV and driver flags (see `performer_store.analysis`)."""
    from .analysis import query
    from .compare import write_table
    from .parallel import connected

    _check_table_out(out)
    if min_maf is not None and max_maf is not None and min_maf > max_maf:
        raise click.BadParameter(f"{min_maf} is above --max-maf {max_maf}, which keeps no SNV; give --min-maf <= --max-maf",
                                 param_hint="--min-maf")
    genes = _gene_list(gene_ids, None)
    with connected(scheduler) as client:
        table = query(store, fold, genes, min_maf, max_maf, flags, client)
    write_table(table, out)
    click.echo(f"wrote {out}: {len(table)} variants of {table['gene_id'].nunique()} genes (fold {fold})")


@main.command("report")
@click.option("--store", required=True, type=PathArg, help="Store with results (`pstore enet`, `pstore evaluate`, `pstore ism`).")
@click.option("--out", required=True, type=PathArg, help="Directory to write index.html into (created if missing).")
@click.option("--fold", type=click.IntRange(min=0), default=0, show_default=True, help="Fold whose test people, runs and variant weights are shown (the per-gene table and figures 2-3 average all folds, like `pstore compare`).")
@click.option("--gene", "gene_ids", multiple=True, help="Gene of the per-gene figures (repeatable). Default: up to 4 with the most models scored.")
@click.option("--genes", "genes_file", type=PathArg, help="File with one gene ID per line (per-gene figures).")
@click.option("--finemapped", type=PathArg, help="TSV of fine-mapped eQTLs (contig, position; optionally gene_id, ref, alt) for the auROC figure.")
@click.option("--states", type=PathArg, help="Chromatin-state BED (chrom, start, end, state) for the enrichment figure.")
@click.option("--truth", type=PathArg, help="Simulated cohorts: truth_variants.tsv, for the causal-variant auROC.")
def report_command(store: Path, out: Path, fold: int, gene_ids: tuple[str, ...], genes_file: Path | None,
                   finemapped: Path | None, states: Path | None, truth: Path | None) -> None:
    """A self-contained HTML page of the method's figures, rebuilt from the store (OUT/index.html, opens offline).

    Figures: observed vs predicted expression, per-gene r and R2 against the elastic net, difference by
    heritability group, variant weights around the TSS, MAF and TSS distance of HSVs and drivers, direction
    agreement, chromatin-state enrichment, motif disruption, fine-mapped (and causal) variant auROC, training
    curves, multi- vs single-gene runs, learning curves, mean expression across genes. A figure the store lacks
    data for says what to run instead.
    """
    from .report import write_report

    written = write_report(store, out, fold, _gene_list(gene_ids, genes_file), finemapped, states, truth)
    click.echo(f"wrote {written / 'index.html'}")
