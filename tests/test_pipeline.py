"""`pstore run`: config checking, and the whole method end to end on a small simulated cohort, resumed."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import pstore

from performer_store.inputs import InputError
from performer_store.pipeline import STEPS, load_config
from performer_store.results import read_result
from performer_store import schemas
from performer_store.simulate import simulate_cohort
from performer_store.store import Store
from performer_store.validate import validate_store

REPO = Path(__file__).resolve().parents[1]

MINIMAL = """
store = "store.zarr"
out = "out"
[inputs]
fasta = "cohort/reference.fa"
vcf = "cohort/genotypes.vcf.gz"
gtf = "cohort/annotation.gtf.gz"
expression = "cohort/expression.bed.gz"
tissue = "whole_blood"
[train]
config = "tiny"
"""


def write(tmp_path: Path, text: str) -> Path:
    """A config file in tmp_path."""
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_example_config_is_valid_and_paths_are_relative_to_it():
    config = load_config(REPO / "configs" / "example.toml")
    assert config.store == REPO / "configs" / "out" / "whole_blood.zarr"
    assert config.inputs.fasta == REPO / "configs" / "cohort" / "reference.fa"
    assert config.train.config == "tiny" and config.enet.folds == [0, 1, 2] and config.train.lr is None


@pytest.mark.parametrize("change, message", [
    ("[train]\nconfig = \"tiny\"\nlrr = 1.0", "[train]: unknown key 'lrr'"),
    ("[train]\nconfig = \"tiny\"\nfolds = 0", "[train].folds: expected a list of int, got 0"),
    ("[train]\nconfig = \"tiny\"\nmax_epochs = \"ten\"", "[train].max_epochs: expected int, got 'ten'"),
    ("[train]\nconfig = \"tiny\"\nweights = \"w.safetensors\"", "give exactly one of config"),
    ("[trian]\nconfig = \"tiny\"", "unknown key or table 'trian'"),
    ("[train]\nconfig = \"tiny\"\ntrain_fractions = [0.5, 1.5]", "[train].train_fractions: 1.5 is not in the range 0<x<=1"),
    ("[train]\nconfig = \"tiny\"\n[inputs]\nfasta = 1", "not valid TOML"),
])
def test_bad_configs_get_one_line_errors(tmp_path, change, message):
    text = MINIMAL.replace('[train]\nconfig = "tiny"\n', change + "\n")
    result = pstore("run", str(write(tmp_path, text)), expect=1)
    assert message in result.output and str(tmp_path / "config.toml") in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "store.zarr").exists()


TRAIN = '[train]\nconfig = "tiny"\n'
BORZOI = '[train]\nbackbone = "borzoi"\n{}\n[evaluate]\nbase = false\n'


@pytest.mark.parametrize("change, message", [
    ('[train]\nconfig = "huge"', "[train].config: 'huge' is not one of 'tiny', 'small', 'full', as for `pstore train --config`"),
    (BORZOI.format('config = "small"'), "[train].config: config 'small' is not one of tiny, full for Borzoi"),
    (BORZOI.format('config = "tiny"\ngradient_checkpointing = true'), "[train].gradient_checkpointing: --gradient-checkpointing is written for Enformer's trunk"),
    (TRAIN + 'backbone = "bert"', "[train].backbone: 'bert' is not one of 'enformer', 'borzoi'"),
    (TRAIN + 'mode = "scratch"', "[train].mode: 'scratch' is not one of 'finetune', 'transfer'"),
    (TRAIN + "folds = [7]", "[train].folds: fold 7 does not exist; every store has folds 0-2"),
    (TRAIN + "folds = [-1]", "[train].folds: -1 is not in the range x>=0, as for `pstore train --fold`"),
    (TRAIN + "folds = [0, 0]", "[train].folds: 0 is listed twice; list each once"),
    (TRAIN + 'genes = ["G1", "G2", "G1"]', "[train].genes: 'G1' is listed twice"),
    (TRAIN + "[enet]\nfolds = [0, 3]", "[enet].folds: fold 3 does not exist; every store has folds 0-2"),
    (TRAIN + "[enet]\nfolds = []", "[enet].folds: no fold given; give some of 0-2, e.g. [0]"),
    (TRAIN + "folds = []", "[train].folds: no fold given; give some of 0-2, e.g. [0]"),
    (TRAIN + "[report]\nfold = 5", "[report].fold: fold 5 does not exist"),
    (TRAIN + "micro_batch = 0", "[train].micro_batch: 0 is not in the range x>=1, as for `pstore train --micro-batch`"),
    (TRAIN + "accumulation = -4", "[train].accumulation: -4 is not in the range x>=1"),
    (TRAIN + "max_epochs = 0", "[train].max_epochs: 0 is not in the range x>=1"),
    (TRAIN + "patience = 0", "[train].patience: 0 is not in the range x>=1"),
    (TRAIN + "workers = -1", "[train].workers: -1 is not in the range x>=0"),
    (TRAIN + "processes = 0", "[train].processes: 0 is not in the range x>=1"),
    (TRAIN + "lr = 0", "[train].lr: 0.0 is not in the range 0<x<=1, as for `pstore train --lr`"),
    (TRAIN + "lr = -1e-3", "[train].lr: -0.001 is not in the range 0<x<=1"),
    (TRAIN + "lr = nan", "[train].lr: nan is not a finite number, as for `pstore train --lr`"),
    (TRAIN + "lr = inf", "[train].lr: inf is not in the range 0<x<=1"),
    (TRAIN + "lr = 1e38", "[train].lr: 1e+38 is not in the range 0<x<=1, as for `pstore train --lr`"),
    (TRAIN + "lr = 1.5", "[train].lr: 1.5 is not in the range 0<x<=1"),
    (TRAIN + "train_fractions = [0.5, nan]", "[train].train_fractions: nan is not a finite number, as for `pstore train --train-fraction`"),
    (TRAIN + 'device = "gpu"', "[train].device: 'gpu' is not one of 'auto', 'cpu', 'cuda', as for `pstore train --device`"),
    (TRAIN + "window = 1000", "[train].window: window 1000 bp: Enformer needs a multiple of 256 bp"),
    (TRAIN + "window = 0", "[train].window: 0 is not in the range x>=1"),
    (TRAIN + "window = 98304", "[train].window 98304 is longer than [build].window 49152"),
    (TRAIN + "[build]\nwindow = 64", "[build].window: 64 is not in the range x>=128, as for `pstore build --window`"),
    (TRAIN + "[build]\nwindow = 1000", "[build].window: window 1000 bp: Enformer needs a multiple of 256 bp"),
    (TRAIN + "[build]\nworkers = 0", "[build].workers: 0 is not in the range x>=1"),
    (TRAIN + "[enet]\nworkers = 0", "[enet].workers: 0 is not in the range x>=1"),
    (TRAIN + "[evaluate]\nmicro_batch = 0", "[evaluate].micro_batch: 0 is not in the range x>=1"),
    (TRAIN + "[evaluate]\ntrack = -1", "[evaluate].track: -1 is not in the range x>=0"),
    (TRAIN + "[ism]\nbatch = 0", "[ism].batch: 0 is not in the range x>=1"),
])
def test_values_a_step_would_refuse_are_refused_before_any_step(tmp_path, change, message):
    """Each value `pstore train` (build, ...) would refuse when its step starts is a one-line error up front."""
    text = MINIMAL.replace(TRAIN, change + "\n")
    with pytest.raises(InputError) as error:
        load_config(write(tmp_path, text))
    assert message in str(error.value) and str(tmp_path / "config.toml") in str(error.value), str(error.value)
    assert "\n" not in str(error.value)
    assert list(tmp_path.iterdir()) == [tmp_path / "config.toml"]


def test_a_bad_value_stops_pstore_run_before_the_build(tmp_path):
    """The inputs exist, so the build would run first: the bad [train] value stops `pstore run` before it."""
    for path in inputs(tmp_path):
        path.touch()
    output = pstore("run", str(write(tmp_path, MINIMAL + "micro_batch = 0\n")), expect=1).output
    assert output.startswith("Error: config ") and "[train].micro_batch" in output and len(output.strip().splitlines()) == 1
    assert not (tmp_path / "store.zarr").exists() and not (tmp_path / "out").exists()


def inputs(tmp_path: Path) -> list[Path]:
    """MINIMAL's [inputs] files, in tmp_path/cohort (the folder made)."""
    (tmp_path / "cohort").mkdir(exist_ok=True)
    return [tmp_path / "cohort" / name for name in ("reference.fa", "genotypes.vcf.gz", "annotation.gtf.gz", "expression.bed.gz")]


def refused(tmp_path: Path, text: str, *fragments: str, steps: str = ",".join(STEPS)) -> None:
    """`pstore run` stops with one line naming the config file and these fragments, writing nothing."""
    output = pstore("run", str(write(tmp_path, text)), "--steps", steps, expect=1).output
    assert all(f in output for f in (str(tmp_path / "config.toml"), *fragments)), output
    assert len(output.strip().splitlines()) == 1
    assert not (tmp_path / "store.zarr").exists() and not (tmp_path / "out").exists()


def test_missing_input_files_name_their_config_key(tmp_path):
    """A file of [inputs] (or [train].weights, [evaluate].other_stores) that is missing is named with its key
    before the first step; a step not asked for needs none of its files."""
    fasta, vcf, *_ = inputs(tmp_path)
    for path in inputs(tmp_path):
        path.touch()
    vcf.unlink()
    refused(tmp_path, MINIMAL, "[inputs].vcf", str(vcf), "no such file")
    vcf.touch()
    annotated = MINIMAL.replace('tissue = "whole_blood"\n', 'tissue = "whole_blood"\nfinemapped = "eqtls.tsv"\n')
    refused(tmp_path, annotated, "[inputs].finemapped", str(tmp_path / "eqtls.tsv"))  # read by the report, the last step
    weights = MINIMAL.replace('config = "tiny"', 'weights = "enformer-weights"')
    refused(tmp_path, weights, "[train].weights", str(tmp_path / "enformer-weights"), "no such file or directory")
    refused(tmp_path, MINIMAL + '[evaluate]\nother_stores = ["brain.zarr"]\n', "[evaluate].other_stores",
            str(tmp_path / "brain.zarr"), "not a Zarr store")
    fasta.unlink()
    refused(tmp_path, annotated, "[inputs].finemapped", steps="report")  # the build's files are not needed for it
    output = pstore("run", str(write(tmp_path, MINIMAL)), "--steps", "enet", expect=1).output
    assert f"store {tmp_path / 'store.zarr'}: not a Zarr store" in output and "fasta" not in output


@pytest.mark.parametrize("steps", ["enet", "train,evaluate", "report"])
def test_a_missing_store_without_the_build_step_says_to_run_it(tmp_path, steps):
    """Inside `pstore run` the fix for a missing store is the build step, not `pstore build`."""
    output = pstore("run", str(write(tmp_path, MINIMAL)), "--steps", steps, expect=1).output
    assert f"config {tmp_path / 'config.toml'}: store {tmp_path / 'store.zarr'}: not a Zarr store" in output, output
    assert f"run the build step first: `pstore run {tmp_path / 'config.toml'} --steps build` (or without --steps)" in output
    assert "pstore build" not in output and len(output.strip().splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_refused_before_the_build(tmp_path):
    for path in inputs(tmp_path):
        path.touch()
    refused(tmp_path, MINIMAL + 'device = "cuda"\n', "[train].device: --device cuda: no CUDA device is available")


def test_mask_variants_add_named_runs_with_their_mask(tmp_path):
    """Each mask adds single- and multi-gene runs named after it; a file is relative to the config; a bad mask is an error."""
    from performer_store.pipeline import planned_runs, train_command

    (tmp_path / "eqtls.tsv").write_text("contig\tposition\nchr1\t100\n")
    text = MINIMAL + 'multi_gene = true\nmask_variants = ["top-enet:3", "eqtls.tsv"]\n'
    config = load_config(write(tmp_path, text))
    assert config.train.mask_variants == ["top-enet:3", str(tmp_path / "eqtls.tsv")]
    runs = planned_runs(config, ["G1", "G2"])
    assert [(r.name, r.genes, r.mask) for r in runs] == [
        ("performer", ("G1",), None), ("performer", ("G2",), None), ("performer_multi", ("G1", "G2"), None),
        ("performer_mask3", ("G1",), "top-enet:3"), ("performer_mask3", ("G2",), "top-enet:3"),
        ("performer_multi_mask3", ("G1", "G2"), "top-enet:3"),
        ("performer_mask_eqtls", ("G1",), str(tmp_path / "eqtls.tsv")), ("performer_mask_eqtls", ("G2",), str(tmp_path / "eqtls.tsv")),
        ("performer_multi_mask_eqtls", ("G1", "G2"), str(tmp_path / "eqtls.tsv"))]
    args = train_command(config, runs[3])
    assert args[args.index("--mask-variants") + 1] == "top-enet:3"
    assert "--mask-variants" not in train_command(config, runs[0])
    for bad, message in (("top-enet:x", "give top-enet:K"), ("nope.tsv", "no such file")):
        output = pstore("run", str(write(tmp_path, MINIMAL + f'mask_variants = ["{bad}"]\n')), expect=1).output
        assert "[train].mask_variants" in output and message in output and len(output.strip().splitlines()) == 1


def test_missing_input_key_and_missing_file(tmp_path):
    result = pstore("run", str(write(tmp_path, MINIMAL.replace('tissue = "whole_blood"\n', ""))), expect=1)
    assert "[inputs]: missing key 'tissue'" in result.output
    assert "no such file" in pstore("run", str(tmp_path / "nope.toml"), expect=1).output


@pytest.mark.parametrize("steps, message", [
    ("build,trian", "--steps: unknown step 'trian'; steps are build, enet, train, evaluate, ism, report"),
    ("", "--steps '' names no step; give some of build, enet, train, evaluate, ism, report"),
    (" , ", "--steps ' , ' names no step; give some of build, enet, train, evaluate, ism, report"),
    ("train,train", "--steps 'train,train' names step 'train' twice; name each step once"),
    ("build, enet,build", "--steps 'build, enet,build' names step 'build' twice; name each step once"),
])
def test_steps_that_name_no_known_step_are_one_line_errors(tmp_path, steps, message):
    """An empty --steps runs nothing rather than every step, and a step named twice runs once: refused before the config
    is read, listing the steps or naming the repeat."""
    output = pstore("run", str(write(tmp_path, MINIMAL)), "--steps", steps, expect=1).output
    assert message in output and len(output.strip().splitlines()) == 1, output


def test_a_directory_as_config_is_refused_as_one(tmp_path):
    output = pstore("run", str(tmp_path), expect=1).output
    assert f"config {tmp_path}: is a directory; give the TOML config file" in output and "no such file" not in output
    assert len(output.strip().splitlines()) == 1


def test_steps_that_score_nothing_print_no_summary_table(tmp_path, tiny):
    """`--steps build` (or enet, train) writes no test scores of the deep models: no per-gene table after it."""
    text = (f'store = "store.zarr"\nout = "out"\n[inputs]\nfasta = "{tiny.fasta}"\nvcf = "{tiny.vcf}"\ngtf = "{tiny.gtf}"\n'
            f'expression = "{tiny.expression}"\ntissue = "whole_blood"\n[build]\nwindow = 1024\n[train]\nconfig = "tiny"\n')
    output = pstore("run", str(write(tmp_path, text)), "--steps", "build").output
    assert "== build" in output and (tmp_path / "store.zarr" / "zarr.json").is_file()
    assert "per gene" not in output and "gene_id" not in output, output


def test_run_end_to_end_then_resume_skips_finished_work(tmp_path):
    simulate_cohort(tmp_path / "cohort", individuals=60, genes=2, seed=5, progress=False)
    annotations = "".join(f'{key} = "cohort/{name}"\n' for key, name in (
        ("truth", "truth_variants.tsv"), ("truth_genes", "truth_genes.tsv"),
        ("chromatin_states", "chromatin_states.bed"), ("finemapped", "finemapped_eqtls.tsv"),
        ("mean_expression", "mean_expression.tsv")))
    text = MINIMAL.replace('tissue = "whole_blood"\n', 'tissue = "whole_blood"\n' + annotations) + """max_epochs = 1
micro_batch = 16
accumulation = 1
lr = 5e-4
device = "cpu"
multi_gene = true
train_fractions = [0.5, 1.0]
[build]
window = 1024
[enet]
folds = [0]
[ism]
batch = 16
"""
    config = write(tmp_path, text)
    first = pstore("run", str(config))
    store = Store(tmp_path / "store.zarr")
    assert validate_store(store.path) == []
    gene_ids = list(store.genes.index)
    runs = tmp_path / "out" / "runs"
    suffixes = ("", "_frac0.5")
    assert sorted(p.name for p in runs.iterdir()) == sorted([f"performer{s}_{g}_fold0" for g in gene_ids for s in suffixes]
                                                            + [f"performer_multi{s}_fold0" for s in suffixes])
    for gene in gene_ids:
        for model in ("enet", "enformer", *(f"performer{m}{s}" for m in ("", "_multi") for s in suffixes)):
            arrays, attrs = read_result(store.path, gene, model)
            assert arrays["status"][0].startswith("ok"), (gene, model)
            if model != "enet":
                assert read_result(store.path, gene, model, schemas.REFERENCE_GROUP)[0]["status"][0] == "ok", (gene, model)
        assert Store(store.path).gene(gene).attrs["mean_expression"] is not None
        for model in ("performer", "performer_multi", "enformer"):
            assert read_result(store.path, gene, model, schemas.ISM_GROUP) is not None, (gene, model)
    assert (tmp_path / "out" / "report" / "index.html").is_file()
    header = next(l for l in first.output.splitlines() if l.strip().startswith("gene_id")).split()
    assert header[3:11] == ["enet", "R2", "enet", "r", "enformer", "R2", "enformer", "r"]  # then performer(_multi)
    for gene in gene_ids:  # every model's test R2 is a number for every gene (r may be NaN for constant predictions)
        line = next(l for l in first.output.splitlines() if l.strip().startswith(gene)).split()
        assert all(value != "nan" for value in line[3:11:2]), line
    stamps = {p: p.stat().st_mtime_ns for p in [*runs.glob("*/best.pt"), *runs.glob("*/metrics.jsonl"),
                                                  *(store.path / "genes").glob("*/results/*/zarr.json"),
                                                  *(store.path / "genes").glob("*/ism/*/zarr.json"),
                                                  *(store.path / "genes").glob("*/reference/*/zarr.json")]}
    history = {p: p.read_text() for p in runs.glob("*/metrics.jsonl")}
    pstore("run", str(config))
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert {p: p.read_text() for p in history} == history
    assert all([json.loads(line)["epoch"] for line in t.splitlines()] == [0] for t in history.values())  # max_epochs 1


def store_config(store: Path, extra: str) -> str:
    """MINIMAL on an existing store, with these [train] lines."""
    return MINIMAL.replace('store = "store.zarr"', f'store = "{store}"') + extra


def test_gene_lists_need_exact_ids_of_the_store(tmp_path, sim_store):
    """A held-out gene given without its version (or mistyped) would silently be trained on: refused up front,
    naming the key and, for another version or a gene name, the ID to write; so are names in [train]/[enet]/[report]."""
    genes = Store(sim_store).genes
    first, name = genes.index[0], genes["gene_name"].iloc[1]
    multi = "single_gene = false\nmulti_gene = true\n"
    refused(tmp_path, store_config(sim_store, multi + f'held_out_genes = ["{first.split(".")[0]}"]\n'),
            "[train].held_out_genes", repr(first.split(".")[0]), f"write {first!r}", steps="train")
    refused(tmp_path, store_config(sim_store, multi + 'held_out_genes = ["ENSG_TYPO"]\n'),
            "[train].held_out_genes", "'ENSG_TYPO' is not a gene ID of store", steps="train")
    every = ", ".join(f'"{g}"' for g in genes.index)
    refused(tmp_path, store_config(sim_store, multi + f"held_out_genes = [{every}]\n"),
            "[train].held_out_genes holds every gene of the multi-gene run", steps="train")
    for section in ("train", "enet", "report"):
        text = store_config(sim_store, "") + (f'genes = ["{name}"]\n' if section == "train" else f'[{section}]\ngenes = ["{name}"]\n')
        refused(tmp_path, text, f"[{section}].genes", f"write {genes.index[1]!r}", steps="train,enet,report")
    load_config(write(tmp_path, store_config(sim_store, multi + f'held_out_genes = ["{first}"]\n')))


def test_gene_names_are_checked_against_the_gtf_when_the_build_runs(tmp_path, tiny):
    """Before the store exists, [train].genes are checked against the genes the build makes ([build].genes may be names)."""
    text = (f'store = "store.zarr"\nout = "out"\n[inputs]\nfasta = "{tiny.fasta}"\nvcf = "{tiny.vcf}"\ngtf = "{tiny.gtf}"\n'
            f'expression = "{tiny.expression}"\ntissue = "whole_blood"\n[build]\ngenes = ["GENE1", "GENE2"]\n'
            '[train]\nconfig = "tiny"\ngenes = ["GENE1"]\n')
    refused(tmp_path, text, "[train].genes", "'GENE1' is not a gene ID of store", "write 'ENSG00000000001.1'")
    refused(tmp_path, text.replace('"GENE1"]\n', '"ENSG00000000003.2"]\n'), "[train].genes", "'ENSG00000000003.2'",
            "give exact gene IDs")  # in the GTF, but [build].genes leaves it out


def test_no_runs_is_refused(tmp_path):
    with pytest.raises(InputError, match=r"\[train\] single_gene and multi_gene are both false"):
        load_config(write(tmp_path, MINIMAL + "single_gene = false\n"))


def test_base_enformer_is_scored_again_when_its_settings_change(tmp_path, sim_store):
    """Base Enformer's results, reference predictions and ISM record their track, window and model: a config
    with another [evaluate] track scores it again; the same config skips it."""
    from performer_store.ism import IsmConfig, enformer_model, is_scored, run_ism
    from performer_store.pipeline import run_evaluation

    store = tmp_path / "store.zarr"
    shutil.copytree(sim_store, store)
    gene = Store(store).genes.index[0]
    result = store / "genes" / gene / "results" / "enformer" / "zarr.json"

    def evaluate(extra: str) -> list[int]:
        run_evaluation(load_config(write(tmp_path, store_config(store, 'device = "cpu"\n') + extra)), [], [gene])
        return [read_result(store, gene, "enformer", group)[1]["track"] for group in (schemas.RESULTS_GROUP, schemas.REFERENCE_GROUP)]

    assert evaluate("") == [4950, 4950]
    stamp = result.stat().st_mtime_ns
    assert evaluate("") == [4950, 4950] and result.stat().st_mtime_ns == stamp
    assert evaluate("[evaluate]\ntrack = 4980\n") == [4980, 4980]
    assert read_result(store, gene, "enformer")[1]["model"] == "config tiny"
    opened = Store(store)
    run_ism(IsmConfig(store=store, genes=(gene,), batch=16, device="cpu", progress=False), enformer_model(opened, None, "tiny", None, None))
    assert is_scored(store, gene, enformer_model(opened, None, "tiny", None, None), "splice")
    assert not is_scored(store, gene, enformer_model(opened, None, "tiny", 4980, None), "splice")


TRAINED = 'genes = ["{gene}"]\nmax_epochs = 1\nmicro_batch = 16\naccumulation = 1\nlr = 5e-4\ndevice = "cpu"\n'
"""[train] of the one-epoch run that `trained_run` makes on the simulated store."""


def run_config(store: Path, out: Path, train: str) -> str:
    """MINIMAL on an existing store and run directory (`out`), with this [train] table in place of MINIMAL's."""
    return MINIMAL.replace('store = "store.zarr"\nout = "out"', f'store = "{store}"\nout = "{out}"').replace(TRAIN, train)


@pytest.fixture(scope="module")
def trained_run(sim_store, tmp_path_factory) -> tuple[Path, str, Path]:
    """A finished one-epoch single-gene run of `pstore run --steps train` on the simulated store: (out, its [train]
    table, the run directory); tests only read it."""
    out = tmp_path_factory.mktemp("trained") / "out"
    train = TRAIN + TRAINED.format(gene=Store(sim_store).genes.index[0])
    output = pstore("run", str(write(out.parent, run_config(sim_store, out, train))), "--steps", "train").output
    (run,) = (out / "runs").iterdir()
    assert (run / "best.pt").is_file(), output
    return out, train, run


@pytest.mark.parametrize("old, new, key, recorded, asked", [
    ("lr = 5e-4", "lr = 1e-3", "[train].lr", "lr 0.0005", "0.001"),
    ('config = "tiny"', 'config = "small"', "[train].config", "config 'tiny'", "'small'"),
    ("seed = 0", "seed = 1", "[train].seed", "seed 0", "1"),
    ("accumulation = 1", "accumulation = 2", "[train].micro_batch x accumulation", "block_size 16", "32"),
])
def test_a_changed_setting_of_an_existing_run_is_refused_before_any_step(tmp_path, sim_store, trained_run, old, new, key,
                                                                          recorded, asked):
    """A setting `pstore train --resume` would refuse at the train step is refused up front, naming the config key,
    the run, both values and what a config user can do."""
    out, train, run = trained_run
    text = run_config(sim_store, out, (train if old in train else train + old + "\n").replace(old, new))
    output = pstore("run", str(write(tmp_path, text)), "--steps", "train", expect=1).output
    assert output.startswith(f"Error: config {tmp_path / 'config.toml'}: {key}: run {run} was trained with {recorded}, "
                             f"this config gives {asked}; put the recorded "), output
    assert f"move or delete {run} (or set another `out`) to train it anew" in output and "--resume" not in output
    assert len(output.strip().splitlines()) == 1


@pytest.mark.parametrize("steps", ["evaluate", "ism", "evaluate,ism,report"])
def test_evaluate_and_ism_refuse_a_run_trained_with_other_settings(tmp_path, sim_store, trained_run, steps):
    """Without the train step, the runs the evaluate and ism steps would load are checked against [train] as the
    train step checks them: one line naming the key, the run, both values and the train step to run; nothing written."""
    out, train, run = trained_run
    store = tmp_path / "store.zarr"
    shutil.copytree(sim_store, store)  # a copy is the run's own store (same cohort digest)
    before = sorted(store.rglob("*"))
    config = write(tmp_path, run_config(store, out, train.replace("lr = 5e-4", "lr = 1e-3")))
    output = pstore("run", str(config), "--steps", steps, expect=1).output
    assert output.startswith(f"Error: config {config}: [train].lr: run {run} was trained with lr 0.0005, this config gives 0.001; "
                             f"put the recorded 0.0005 back in [train].lr to use the run as trained, or move or delete {run} (or "
                             f"set another `out`) and train it anew with the train step: `pstore run {config} --steps train,{steps}`"), output
    assert len(output.strip().splitlines()) == 1 and sorted(store.rglob("*")) == before


def test_evaluate_without_the_train_step_needs_every_run_trained(tmp_path, sim_store, trained_run):
    """A run the config plans but nobody trained (here fold 1) is one line saying to run the train step, before any
    step; with the config the run was trained with, `--steps evaluate` scores it."""
    out, train, run = trained_run
    store = tmp_path / "store.zarr"
    shutil.copytree(sim_store, store)
    before = sorted(store.rglob("*"))
    config = write(tmp_path, run_config(store, out, train + "folds = [0, 1]\n"))
    output = pstore("run", str(config), "--steps", "evaluate", expect=1).output
    missing = out / "runs" / run.name.replace("fold0", "fold1")
    assert output.startswith(f"Error: config {config}: run {missing} has no trained model (no best.pt); run the train step "
                             f"first: `pstore run {config} --steps train,evaluate` (or without --steps)"), output
    assert len(output.strip().splitlines()) == 1 and sorted(store.rglob("*")) == before
    write(tmp_path, run_config(store, out, train) + "[evaluate]\nbase = false\nreference = false\n")
    pstore("run", str(config), "--steps", "evaluate")
    gene = Store(store).genes.index[0]
    assert read_result(store, gene, "performer")[1]["runs"] == {"0": str(run.resolve())}


def test_a_finished_run_is_skipped_without_starting_pstore_train(tmp_path, sim_store, trained_run, monkeypatch):
    """Running the same config again decides in-process that the run is over (its log as `pstore train` would
    resume it): one line, no `pstore train` process, no progress bar."""
    from performer_store import pipeline

    out, train, run = trained_run
    monkeypatch.setattr(pipeline.subprocess, "run", lambda *args, **kwargs: pytest.fail(f"started {args}"))
    output = pstore("run", str(write(tmp_path, run_config(sim_store, out, train))), "--steps", "train").output
    assert f"train {run.name}: finished (1 epoch(s), best tune R2 " in output and "at epoch 0), skipped" in output, output
    assert "gene(s), fold" not in output


@pytest.mark.parametrize("change", ["max_epochs", "run.json", "metrics.jsonl"])
def test_a_run_not_known_to_be_finished_still_goes_to_pstore_train(tmp_path, sim_store, trained_run, monkeypatch, change):
    """More epochs asked, or a run whose run.json or log is missing: `pstore train --resume` decides."""
    from performer_store import pipeline

    out, train, run = trained_run
    shutil.copytree(out, tmp_path / "out")
    copy = tmp_path / "out" / "runs" / run.name
    if change in ("run.json", "metrics.jsonl"):
        (copy / change).unlink()
    else:
        train = train.replace("max_epochs = 1", "max_epochs = 3")
    started = []
    monkeypatch.setattr(pipeline.subprocess, "run", lambda args, **kwargs: started.append(args) or subprocess.CompletedProcess(args, 0))
    output = pstore("run", str(write(tmp_path, run_config(sim_store, tmp_path / "out", train))), "--steps", "train").output
    assert len(started) == 1 and "--resume" in started[0] and str(copy) in started[0], output
    assert f"train {run.name}: 1 gene(s), fold 0" in output and "skipped" not in output


def test_the_logged_progress_is_the_progress_last_pt_resumes_from(trained_run):
    """`train.logged_state` (metrics.jsonl, read cheaply) equals the state in last.pt that `--resume` continues."""
    from performer_store.model import load_checkpoint
    from performer_store.train import TrainState, logged_state

    _, _, run = trained_run
    assert logged_state(run) == TrainState(**json.loads(load_checkpoint(run / "last.pt")[2]["state"]))
    assert logged_state(run.parent) is None



def test_train_config_is_what_train_command_passes(tmp_path):
    """The settings `pstore run` checks a run against in-process are those its `pstore train` process gets."""
    from performer_store.cli import main
    from performer_store.pipeline import planned_runs, train_command, train_config
    from performer_store.train import TrainConfig

    (tmp_path / "w").mkdir()
    text = MINIMAL.replace('config = "tiny"', 'weights = "w"') + (
        'lr = 1e-4\nwindow = 2048\nseed = 3\nmicro_batch = 8\naccumulation = 2\ntrain_fractions = [0.5]\n'
        'mask_variants = ["top-enet:2"]\ngradient_checkpointing = true\nmax_epochs = 7\npatience = 2\nworkers = 1\n')
    config = load_config(write(tmp_path, text))
    names = {"config": "model_config", "genes": "gene_ids", "progress": None}
    for run in planned_runs(config, ["G1", "G2"]):
        params = main.commands["train"].make_context("train", train_command(config, run)[4:]).params
        expected = train_config(config, run)
        for field in dataclasses.fields(TrainConfig):
            name = names.get(field.name, field.name)
            if name is not None:
                assert params.get(name, field.default) == getattr(expected, field.name), field.name


@pytest.mark.parametrize("steps, enet", [("train", ""), ("enet,train", "[enet]\nfolds = [1]\n")])
def test_a_top_enet_mask_without_its_enet_advises_the_enet_step(tmp_path, sim_store, monkeypatch, steps, enet):
    """Inside `pstore run` the fix for a missing elastic net is the config's enet step, not `pstore enet`: said up front
    when the steps leave the enet out, else when the run's turn comes (here [enet] fits fold 1 only), in this process
    (no `pstore train` started) and in one line."""
    from performer_store import pipeline

    store = tmp_path / "store.zarr"
    shutil.copytree(sim_store, store)
    gene = Store(store).genes.index[0]
    config = write(tmp_path, run_config(store, tmp_path / "out", TRAIN + TRAINED.format(gene=gene) + 'mask_variants = ["top-enet:3"]\n' + enet))
    monkeypatch.setattr(pipeline.subprocess, "run", lambda *args, **kwargs: pytest.fail(f"started {args}"))
    output = pstore("run", str(config), "--steps", steps, expect=1).output
    assert output.splitlines()[-1] == (
        f"Error: config {config}: [train].mask_variants top-enet:3: gene {gene} has no elastic net for fold 0 in store "
        f"{store}, which it ranks variants by; run the enet step first (`pstore run {config} --steps enet,train`, or no "
        "--steps) with 0 in [enet].folds and the gene in [enet].genes (or no [enet].genes)"), output
    assert "pstore enet --store" not in output and not (tmp_path / "out").exists()


def test_names_too_long_or_not_results_names_are_refused_up_front(tmp_path):
    """A config path with a name over NAME_MAX, and a mask file whose name makes its runs' results name one that `pstore
    train --name` refuses (spaces, over 128 characters), are one-line errors naming the key before any step; they used
    to stop the run with an OSError traceback, or its train step after the build and the elastic nets."""
    import os

    long = "n" * 256
    with pytest.raises(InputError) as error:
        load_config(write(tmp_path, MINIMAL.replace('out = "out"', f'out = "{long}"')))
    assert str(error.value) == (f"config {tmp_path / 'config.toml'}: out: '{long[:21]}...' is 256 bytes, longer than the "
                                f"{os.pathconf(tmp_path, 'PC_NAME_MAX')} bytes a file or folder name can have; choose a shorter name")
    for stem in ("my eqtls", "e" * 114):
        (tmp_path / f"{stem}.tsv").write_text("contig\tposition\nchr1\t100\n")
        with pytest.raises(InputError) as error:
            load_config(write(tmp_path, MINIMAL + f'multi_gene = true\nmask_variants = ["{stem}.tsv"]\n'))
        assert str(error.value) == (
            f"config {tmp_path / 'config.toml'}: [train].mask_variants '{tmp_path / stem}.tsv' gives the results name "
            f"'performer_mask_{stem}': not a results name; use letters, digits, '.', '_' and '-', not starting with '.', "
            "at most 128 characters; rename the file: its name without the extension ends the results name")
    assert len(f"performer_multi_mask_{'e' * 113}") == 134 and len(f"performer_mask_{'e' * 113}") == 128
    (tmp_path / f"{'e' * 113}.tsv").write_text("contig\tposition\nchr1\t100\n")
    with pytest.raises(InputError, match=f"gives the results name 'performer_multi_mask_{'e' * 113}'"):
        load_config(write(tmp_path, MINIMAL + f'multi_gene = true\nmask_variants = ["{"e" * 113}.tsv"]\n'))
    assert load_config(write(tmp_path, MINIMAL + f'mask_variants = ["{"e" * 113}.tsv"]\n')).train.mask_variants  # single-gene only: 128
