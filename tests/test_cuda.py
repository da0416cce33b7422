"""The CUDA paths: pinned host batches with non-blocking copies, expansion on the GPU, bf16-autocast training and
prediction. Each test also runs on CPU with the same assertions (exact there), so the checks themselves run
everywhere; the CUDA cases run where a GPU is (`benchmarks/device/checks.sh`)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from performer_store.loader import BatchLoader, GeneReader, evaluation_batches, iterate
from performer_store.model import load_checkpoint
from performer_store.predict import predict
from performer_store.store import Store
from performer_store.train import TrainConfig, train

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]
BF16_TOLERANCE = 0.03  # of the largest float32 prediction: bf16 keeps 8 mantissa bits (0.4%), a few layers add up


def everyone(store_path) -> list:
    """Micro-batches of 5 over every person of every gene of a store."""
    store = Store(store_path)
    return evaluation_batches({g: np.arange(len(store.sample_id)) for g in store.genes.index}, micro_batch=5)


@pytest.mark.parametrize("workers", [0, 1])
@pytest.mark.parametrize("device", DEVICES)
def test_batches_read_into_the_device_equal_host_reads(tiny_store, device, workers):
    """Both read paths delivered to `device` (on CUDA: pinned host batches, non-blocking copies, expansion on the
    GPU) give the stored array's tensors read on the host, for every person."""
    batches = everyone(tiny_store)
    host = list(iterate(GeneReader(tiny_store, None, "stored"), batches))
    for read_path in ("stored", "expand"):
        delivered = list(BatchLoader(GeneReader(tiny_store, None, read_path), workers, device)(batches))
        assert len(delivered) == len(host) == len(batches)
        for (batch, onehot, target), (_, host_onehot, host_target) in zip(delivered, host):
            assert onehot.device.type == target.device.type == device and onehot.dtype == torch.float16
            assert batch.values.is_pinned() == batch.target.is_pinned() == (device == "cuda")
            assert torch.equal(onehot.cpu(), host_onehot)
            torch.testing.assert_close(target.cpu(), host_target, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("device", DEVICES)
def test_training_on_the_device_and_its_checkpoint_predict_alike(tiny_store, tmp_path, device):
    """A short run on `device` (bf16 autocast on CUDA) has finite losses and a checkpoint whose predictions on the
    device match float32 predictions on the host within bf16 rounding (exactly on CPU). The tiny cohort has one tune
    person (no tune R2, so no best.pt): the last checkpoint is used."""
    genes = tuple(Store(tiny_store).genes.index[:2])
    state = train(TrainConfig(store=tiny_store, genes=genes, fold=0, out=tmp_path / "run", config="tiny", lr=1e-3,
                              micro_batch=4, accumulation=2, max_epochs=2, patience=5, progress=False, device=device))
    assert len(state.history) == 2 and all(math.isfinite(entry["train_loss"]) for entry in state.history)
    model, meta, _ = load_checkpoint(tmp_path / "run" / "last.pt")
    assert meta["genes"] == list(genes) and next(model.parameters()).device.type == "cpu"
    batches = everyone(tiny_store)
    reader = GeneReader(tiny_store, meta["window"], "expand")
    on_host = predict(model.eval(), BatchLoader(reader, 0, "cpu"), batches)
    on_device = predict(model.to(device).eval(), BatchLoader(reader, 0, device), batches)
    assert on_host.keys() == on_device.keys() == set(Store(tiny_store).genes.index)
    for gene, (rows, prediction, _) in on_host.items():
        np.testing.assert_array_equal(on_device[gene][0], rows)
        tolerance = 0.0 if device == "cpu" else BF16_TOLERANCE * float(np.abs(prediction).max())
        np.testing.assert_allclose(on_device[gene][1], prediction, rtol=0, atol=tolerance, err_msg=gene)
