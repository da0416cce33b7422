"""Training memory per sample at 49,152 and 196,608 bp, with and without gradient checkpointing.

Each probe runs in a fresh process (peak memory is per process): it builds a Performer of one config, takes
one `pstore train` micro-batch step (forward, pairwise loss, backward, AdamW) and reports the peak memory
above what the model and optimizer hold (CPU: peak RSS; CUDA: `torch.cuda.max_memory_allocated`). Probes of
batch 1 and 3 give memory per sample as half their difference. The baseline of each row is the same step without
gradient checkpointing, run by the same command, so the printed ratios are what checkpointing buys.

    python benchmarks/long_window.py --configs tiny,small --device cpu
    python benchmarks/long_window.py --configs full --device cuda     # on a GPU machine
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

from performer_store.model import Performer, enformer_from_config, recompute_activations
from train import random_batch, step  # benchmarks/train.py: the same step as its throughput benchmark

WINDOWS = (49_152, 196_608)


def rss_gib() -> float:
    """Current resident memory of this process."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**30


def probe(config: str, window: int, batch: int, checkpointing: bool, device: str) -> dict:
    """One training step in this process: seconds and peak memory above the model and optimizer."""
    model = Performer(enformer_from_config(config)).to(device).train()
    if checkpointing:
        recompute_activations(model.enformer)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    onehot, target = random_batch(batch, window, torch.device(device))
    step(model, optimizer, *random_batch(1, 2_048, torch.device(device)))  # optimizer state and allocator warm
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**30
    else:
        base = rss_gib()
    started = time.perf_counter()
    step(model, optimizer, onehot, target)
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"seconds": time.perf_counter() - started, "extra_gib": peak - base}


def run_probe(config: str, window: int, batch: int, checkpointing: bool, device: str) -> dict:
    """A probe in a fresh Python process; large blocks are mmapped so freed activations leave RSS at once."""
    command = [sys.executable, __file__, "--probe", json.dumps([config, window, batch, checkpointing, device])]
    environment = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    result = subprocess.run(command, check=True, capture_output=True, text=True, env=environment)
    return json.loads(result.stdout.splitlines()[-1])


def main() -> None:
    """Print memory per sample and seconds per sample for each config and window, plain vs checkpointed."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="tiny,small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        print(json.dumps(probe(*json.loads(args.probe))))
        return
    print(f"device {args.device}, {torch.get_num_threads()} threads; memory above model + optimizer; per sample = (batch 3 - batch 1) / 2")
    print(f"{'config':6} {'window':>8} {'checkpointing':>13} {'GiB/sample':>10} {'s/sample':>9} {'memory x':>9} {'time x':>7}")
    for config in args.configs.split(","):
        for window in WINDOWS:
            rows = {}
            for checkpointing in (False, True):
                one, three = (run_probe(config, window, b, checkpointing, args.device) for b in (1, 3))
                rows[checkpointing] = ((three["extra_gib"] - one["extra_gib"]) / 2, three["seconds"] / 3)
            for checkpointing, (gib, seconds) in rows.items():
                memory_ratio, time_ratio = gib / rows[False][0], seconds / rows[False][1]
                print(f"{config:6} {window:8} {str(checkpointing):>13} {gib:10.3f} {seconds:9.2f} {memory_ratio:9.3f} {time_ratio:7.2f}")


if __name__ == "__main__":
    main()
