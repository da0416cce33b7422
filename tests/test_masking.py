"""eQTL masking (`pstore train --mask-variants`): both read paths give the reference at masked positions, the
simulated causal SNVs become invisible, top-enet:K ranks coefficients, and a masked run trains and evaluates."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import pstore

from performer_store import evaluate
from performer_store.enet import run_enet
from performer_store.inputs import InputError
from performer_store.loader import GeneReader, evaluation_batches, iterate, split_rows
from performer_store.masking import masked_offsets, parse_mask, resolve_mask
from performer_store.model import load_checkpoint
from performer_store.results import read_result
from performer_store.store import Store

TINY_MASKED = [990, 1300, 1500, 1620]  # GENE1: an SNV, a split multi-allelic site, two records at one position, one more


def write_list(path: Path, rows: list[dict]) -> Path:
    """A variant-list TSV."""
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return path


def read_everyone(store_path: Path, window: int | None, read_path: str, mask: dict) -> dict[str, np.ndarray]:
    """Every person's one-hots of every gene through a GeneReader."""
    store = Store(store_path)
    everyone = {g: np.arange(len(store.sample_id)) for g in store.genes.index}
    reader = GeneReader(store_path, window, read_path, mask)
    out: dict[str, list] = {}
    for batch, onehot, _ in iterate(reader, evaluation_batches(everyone, micro_batch=5)):
        out.setdefault(batch.micro.gene_id, []).append(onehot.numpy())
    return {g: np.concatenate(parts) for g, parts in out.items()}


def expected_masked(store: Store, gene_id: str, offsets: np.ndarray) -> np.ndarray:
    """Reference + stored difference (Store.dosage_onehot), with the reference one-hot written at the offsets."""
    full = store.dosage_onehot(gene_id).copy()
    full[:, offsets] = store.gene(gene_id)["reference_onehot"][:][offsets]
    return full


@pytest.mark.parametrize("window", [None, 512])
def test_both_read_paths_give_the_reference_at_masked_positions(tiny_store, tmp_path, window):
    """A file mask (contig, position) on the tiny store: stored and expand paths are equal, masked positions hold
    the reference one-hot for every person, every other position the person's own dosage one-hot."""
    mask_file = write_list(tmp_path / "mask.tsv", [{"contig": "chr1", "position": p} for p in TINY_MASKED])
    store = Store(tiny_store)
    mask = resolve_mask(store, list(store.genes.index), 0, parse_mask(str(mask_file)))
    gene1 = "ENSG00000000001.1"
    np.testing.assert_array_equal(mask[gene1], np.array(TINY_MASKED) - 1 - 988)
    assert all(len(mask[g]) == 0 for g in store.genes.index if g != gene1)
    stored = read_everyone(tiny_store, window, "stored", mask)
    expanded = read_everyone(tiny_store, window, "expand", mask)
    unmasked = read_everyone(tiny_store, window, "stored", {})
    width = window or 1024
    crop = slice(512 - width // 2, 512 + width // 2)
    for gene_id in store.genes.index:
        np.testing.assert_array_equal(stored[gene_id], expanded[gene_id])
        np.testing.assert_array_equal(stored[gene_id], expected_masked(store, gene_id, mask[gene_id])[:, crop])
    inside = mask[gene1][(mask[gene1] >= crop.start) & (mask[gene1] < crop.stop)] - crop.start
    assert len(inside) == (3 if window else 4)
    reference = store.gene(gene1)["reference_onehot"][crop]
    assert (stored[gene1][:, inside] == reference[inside]).all()
    assert (unmasked[gene1][:, inside] != reference[inside]).any(axis=(0, 2)).all()  # someone carries each masked SNV


@pytest.fixture(scope="module")
def causal(sim_store) -> Path:
    """The simulated cohort's truth_variants.tsv (the causal SNVs) next to the store's FASTA."""
    fasta = Path(Store(sim_store).attrs["provenance"]["inputs"]["fasta"]["path"])
    return fasta.parent / "truth_variants.tsv"


def test_masked_causal_variants_are_invisible(sim_store, causal):
    """With the causal SNVs masked, no person's input differs from another's or from the reference at a causal
    position, and the inputs differ from the unmasked ones only at causal positions someone carries."""
    store = Store(sim_store)
    genes = list(store.genes.index)
    mask = resolve_mask(store, genes, 0, parse_mask(str(causal)))
    masked, plain = read_everyone(sim_store, None, "expand", mask), read_everyone(sim_store, None, "expand", {})
    truth = pd.read_csv(causal, sep="\t")
    seen = 0
    for gene_id in genes:
        start = int(store.gene(gene_id).attrs["window_start"])
        offsets = truth.loc[truth["gene_id"] == gene_id, "position"].to_numpy() - 1 - start
        offsets = offsets[(offsets >= 0) & (offsets < store.window)]
        reference = store.gene(gene_id)["reference_onehot"][:]
        assert (masked[gene_id][:, offsets] == reference[offsets]).all()
        changed = np.flatnonzero((masked[gene_id] != plain[gene_id]).any(axis=(0, 2)))
        carried = offsets[(plain[gene_id][:, offsets] != reference[offsets]).any(axis=(0, 2))]
        np.testing.assert_array_equal(changed, np.sort(carried))
        seen += len(carried)
    assert seen > 0  # the windows hold causal SNVs that people carry, so the test can fail


def test_top_enet_masks_the_largest_coefficients(sim_store, tmp_path):
    """top-enet:K: the K largest non-zero |coefficients| of the fold (checked by a sort in plain Python); without
    an elastic net the error names the command to run."""
    store_path = tmp_path / "store.zarr"
    shutil.copytree(sim_store, store_path)
    store = Store(store_path)
    gene_id = store.genes.index[0]
    with pytest.raises(InputError, match=r"no elastic net for fold 0.*pstore enet"):
        masked_offsets(store, gene_id, 0, parse_mask("top-enet:3"))
    run_enet(store_path, folds=[0], progress=False)
    for gene_id in store.genes.index:
        coefficients = [float(c) for c in read_result(store_path, gene_id, "enet")[0]["enet_coefficient"][0]]
        ranked = sorted((i for i, c in enumerate(coefficients) if abs(c) > 0), key=lambda i: (-abs(coefficients[i]), i))[:3]
        position = store.gene(gene_id)["variant_position"][:]
        start = int(store.gene(gene_id).attrs["window_start"])
        expected = sorted({int(position[i]) - 1 - start for i in ranked})
        assert masked_offsets(store, gene_id, 0, parse_mask("top-enet:3")).tolist() == expected
    assert "positive integer" in pstore("train", "--store", str(store_path), "--gene", gene_id, "--fold", "0", "--out",
                                        str(tmp_path / "bad"), "--config", "tiny", "--mask-variants", "top-enet:0", expect=1).output


def test_masked_run_trains_and_evaluates_with_its_mask(sim_store, causal, tmp_path, monkeypatch):
    """`pstore train --mask-variants` records the mask; `pstore evaluate` reads with it again (its reader gets every
    scored gene's causal offsets) and the stored predictions equal the checkpoint's predictions of one-hots built here
    with the reference at the causal positions (a tiny random model barely reacts to one SNV, hence the reader check)."""
    store_path = tmp_path / "store.zarr"
    shutil.copytree(sim_store, store_path)
    store = Store(store_path)
    genes = list(store.genes.index[:2])
    run = tmp_path / "masked"
    pstore("train", "--store", str(store_path), *[a for g in genes for a in ("--gene", g)], "--fold", "0", "--out", str(run),
           "--config", "tiny", "--mask-variants", str(causal), "--max-epochs", "1", "--micro-batch", "8", "--accumulation", "1",
           "--lr", "1e-3", "--device", "cpu", "--quiet")
    recorded = json.loads((run / "run.json").read_text())
    truth = pd.read_csv(causal, sep="\t")
    for gene_id in genes:
        attrs = store.gene(gene_id).attrs
        inside = truth[(truth["gene_id"] == gene_id) & (truth["position"] > attrs["window_start"])
                       & (truth["position"] <= attrs["window_stop"])]
        assert recorded["masked_positions"][gene_id] == sorted(inside["position"].tolist())
    assert recorded["mask"]["file"] == str(causal.resolve())
    readers = []
    monkeypatch.setattr(evaluate, "GeneReader", lambda *args: readers.append(GeneReader(*args)) or readers[-1])
    pstore("evaluate", "--store", str(store_path), "--run", str(run), "--device", "cpu")
    model, meta, _ = load_checkpoint(run / "best.pt")
    expected_mask = resolve_mask(store, list(store.genes.index), 0, parse_mask(str(causal)))
    assert sum(map(len, expected_mask.values())) > 0 and len(readers) == 1
    assert {g: o.tolist() for g, o in readers[0].mask.items()} == {g: o.tolist() for g, o in expected_mask.items()}
    assert meta["mask"] == recorded["mask"]
    model.eval()
    for gene_id in store.genes.index:  # HOP genes and the HOGP gene alike
        arrays, attrs = read_result(store_path, gene_id, "masked")
        assert attrs["mask"] == {"0": str(causal.resolve())}
        test = split_rows(store, gene_id, 0, "test")
        offsets = masked_offsets(store, gene_id, 0, meta["mask"])
        with torch.no_grad():
            expected = model(torch.from_numpy(expected_masked(store, gene_id, offsets)[test])).numpy()
        np.testing.assert_allclose(arrays["prediction"][0, test], expected, rtol=1e-4, atol=1e-5)
