"""Training throughput of Performer: samples/s, peak memory, FLOPs per sample and (on CUDA) model FLOP utilization.

Each step is what `pstore train` does per micro-batch: forward (bf16 autocast on CUDA), the pairwise loss,
backward, gradient clipping and an AdamW step, on dosage one-hots of the given window. The baseline, run in
the same process, is the same work one sample at a time (how the method's reference code validates), so the
printed ratio is what batching buys on this machine. With `--store`, the same steps are also fed by the loader
from that store (expansion path, `--workers` processes; on CUDA pinned batches expanded on the GPU), and the ratio
to the random-input rate says whether loading limits training (1.0 = it does not).

    python benchmarks/train.py --config tiny --window 49152 --batch 32 --device cpu
    python benchmarks/train.py --config full --window 49152 --batch 32 --device cuda --store demo/whole_blood.zarr --workers 4
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from performer_store.loader import BatchLoader, GeneReader, epoch_blocks, micro_batches, split_rows
from performer_store.model import Performer, enformer_from_config
from performer_store.predict import autocast
from performer_store.store import Store
from performer_store.train import pairwise_loss

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16 tensor-core peaks


def random_batch(batch: int, window: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Dosage-one-hot-like inputs (reference one-hots with a few het sites) and N(0,1) targets."""
    bases = torch.randint(0, 4, (batch, window), device=device)
    onehot = torch.nn.functional.one_hot(bases, 4).to(torch.float16)
    onehot[:, :: window // 50] = 0.5
    return onehot, torch.randn(batch, device=device)


def step(model: Performer, optimizer: torch.optim.Optimizer, onehot: torch.Tensor, target: torch.Tensor) -> None:
    """One training micro-batch with an optimizer step."""
    with autocast(onehot.device):
        prediction = model(onehot).float()
    pairwise_loss(prediction, target).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 0.05)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def samples_per_second(model: Performer, optimizer: torch.optim.Optimizer, batch: int, window: int,
                       device: torch.device, steps: int) -> float:
    """Training samples/s over `steps` steps after one warm-up step."""
    onehot, target = random_batch(batch, window, device)
    step(model, optimizer, onehot, target)
    synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        step(model, optimizer, onehot, target)
    synchronize(device)
    return steps * batch / (time.perf_counter() - started)


def store_samples_per_second(model: Performer, optimizer: torch.optim.Optimizer, store: Path, batch: int, window: int,
                             device: torch.device, steps: int, workers: int) -> float:
    """Training samples/s over `steps` micro-batches of fold 0's train people read from a store, after one warm-up."""
    opened = Store(store)
    rows = {gene: split_rows(opened, gene, 0, "train") for gene in opened.genes.index}
    batches = micro_batches(epoch_blocks(rows, 0, 0, batch), batch)[: steps + 1]
    feed = BatchLoader(GeneReader(store, window, "expand"), workers, device)
    samples, started = 0, 0.0
    for index, (_, onehot, target) in enumerate(feed(batches)):
        step(model, optimizer, onehot, target)
        if index == 0:
            synchronize(device)
            started = time.perf_counter()
        else:
            samples += len(target)
    synchronize(device)
    return samples / (time.perf_counter() - started)


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def flops_per_sample(model: Performer, window: int, device: torch.device) -> float:
    """Forward + backward FLOPs of one sample, counted by torch.utils.flop_counter."""
    onehot, target = random_batch(2, window, device)
    with FlopCounterMode(display=False) as counter:
        with autocast(device):
            prediction = model(onehot).float()
        pairwise_loss(prediction, target).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 2


def main() -> None:
    """Print samples/s for the batch and for batch 1, peak memory, FLOPs per sample and utilization."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="tiny", choices=["tiny", "small", "full"])
    parser.add_argument("--window", type=int, default=49_152)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--store", type=Path, help="also time the steps fed from this store by the loader")
    parser.add_argument("--workers", type=int, default=2, help="loader worker processes with --store")
    args = parser.parse_args()
    device = torch.device(args.device)
    model = Performer(enformer_from_config(args.config)).to(device)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-6)
    flops = flops_per_sample(model, args.window, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    batched = samples_per_second(model, optimizer, args.batch, args.window, device, args.steps)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    single = samples_per_second(model, optimizer, 1, args.window, device, args.steps)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{args.config} Enformer, {args.window} bp, {name}; {flops / 1e9:,.1f} GFLOP per sample (forward + backward)")
    print(f"batch {args.batch}: {batched:,.2f} samples/s; batch 1 (baseline): {single:,.2f} samples/s; ratio {batched / single:,.1f}x")
    print(f"peak {'GPU' if device.type == 'cuda' else 'process RSS'} memory: {peak / 2**30:,.2f} GiB")
    if args.store:
        fed = store_samples_per_second(model, optimizer, args.store, args.batch, args.window, device, args.steps, args.workers)
        print(f"batch {args.batch} fed from {args.store} ({args.workers} loader workers): {fed:,.2f} samples/s; "
              f"{fed / batched:.2f}x the random-input rate")
    peak_tflops = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    if peak_tflops:
        print(f"model FLOP utilization: {100 * batched * flops / (peak_tflops * 1e12):.1f}% of {peak_tflops:.0f} TFLOP/s bf16")


if __name__ == "__main__":
    main()
