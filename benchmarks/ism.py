"""ISM speed: SNVs/s of the conv-tower splice (`pstore ism`) vs plain batched whole-window forward passes
(`pstore ism --exact-full`), run in the same process on the same SNVs, and (on CUDA) the bf16 score error.

A Performer of each config scores random SNVs of one random 49,152-bp reference window: random weights (attention
output projections randomized too: enformer-pytorch starts them at zero, so tokens would not mix), or for the full
config pretrained ones with --weights; speed does not depend on the weights, score sizes and so the bf16 error do.
Each method first predicts the reference window once (the reference pass: the same whole-window pass for both,
once per gene), then the SNVs in batches; SNVs/s counts the batches only. The per-gene rate adds the reference
pass to 622 SNVs (the demo cohort's mean per 49,152-bp window).

    python benchmarks/ism.py                          # tiny and full config on CPU (full: a few SNVs, slow)
    python benchmarks/ism.py --device cuda --weights enformer-official-rough/   # on a GPU, with the bf16 error
"""

from __future__ import annotations

import argparse
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import numpy as np
import torch
from enformer_pytorch.modeling_enformer import Attention
from torch import nn

from performer_store.ism import IsmModel, centre_track
from performer_store.model import Performer, enformer_from_config, enformer_from_weights
from performer_store.predict import autocast

SNVS_PER_GENE = 622
CPU_DEFAULTS = {"tiny": (128, 32), "full": (4, 4)}  # SNVs, batch: the full config runs ~30 s per SNV unspliced on 2 cores


def bench_model(config: str, weights: Path | None) -> IsmModel:
    """A Performer as ISM sees it: pretrained Enformer weights, or a named random config with mixing attention."""
    model = Performer(enformer_from_weights(weights) if weights else enformer_from_config(config))
    if not weights:
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, Attention):
                    nn.init.normal_(module.to_out.weight, std=0.02)
    return IsmModel(config, "performer", (0,), 0, model.eval(), partial(centre_track, model.net.to_tracks), {})


def random_snvs(window: int, variants: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A random reference one-hot (window, 4) and SNVs at random positions with an ALT unlike the reference base."""
    generator = torch.Generator().manual_seed(0)
    bases = torch.randint(0, 4, (window,), generator=generator)
    positions = torch.randint(0, window, (variants,), generator=generator)
    alts = (bases[positions] + torch.randint(1, 4, (variants,), generator=generator)) % 4
    return nn.functional.one_hot(bases, 4).float().to(device), positions.to(device), alts.to(device)


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def run_method(model: IsmModel, reference: torch.Tensor, positions: torch.Tensor, alts: torch.Tensor, method: str,
               batch: int, bf16: bool = False) -> tuple[float, float, np.ndarray]:
    """(setup seconds, SNVs/s over the batches, scores) of one method; on CUDA one untimed warm-up batch first."""
    device = reference.device
    with autocast(device) if bf16 else nullcontext():
        started = time.perf_counter()
        predictor = model.predictor(method, reference)
        before = model.readout(predictor.reference_embeddings()).double()
        synchronize(device)
        setup = time.perf_counter() - started
        if device.type == "cuda":
            predictor.embeddings(positions[:batch], alts[:batch])
            synchronize(device)
        started = time.perf_counter()
        scores = [model.readout(predictor.embeddings(positions[i : i + batch], alts[i : i + batch])).double() - before
                  for i in range(0, len(positions), batch)]
        synchronize(device)
    return setup, len(positions) / (time.perf_counter() - started), torch.cat(scores).cpu().numpy()


def bench_config(config: str, weights: Path | None, window: int, variants: int, batch: int, device: torch.device) -> None:
    """Print both methods' rates, their ratio, their score agreement and (on CUDA) the bf16 error."""
    model = bench_model(config, weights)
    model.module.to(device)
    reference, positions, alts = random_snvs(window, variants, device)
    print(f"config {config} (dim {model.trunk.dim}, depth {len(model.trunk.transformer)}, {'weights ' + str(weights) if weights else 'random weights'}), {window} bp, "
          f"{variants} SNVs, batch {batch}, {device.type}, float32")
    results = {method: run_method(model, reference, positions, alts, method, batch) for method in ("full", "splice")}
    for method, (setup, rate, _) in results.items():
        per_gene = SNVS_PER_GENE / (setup + SNVS_PER_GENE / rate)
        print(f"  {method:>6}: {rate:8.3f} SNVs/s; reference pass {setup:6.2f} s; {per_gene:8.3f} SNVs/s over a {SNVS_PER_GENE}-SNV gene")
    full, splice = results["full"][2], results["splice"][2]
    print(f"  speed ratio (splice / full): {results['splice'][1] / results['full'][1]:.1f}x")
    print(f"  splice vs full scores: max |difference| {np.abs(splice - full).max():.2e}, max |score| {np.abs(full).max():.2e}"
          + ("" if weights else " (random weights: SNV effects are tiny)"))
    if device.type != "cuda":
        print("  bf16 vs float32: not measured (bf16 autocast is CUDA-only and no CUDA device is in use)")
        return
    bf16 = run_method(model, reference, positions, alts, "splice", batch, bf16=True)
    error = np.abs(bf16[2] - splice)
    print(f"  bf16 splice: {bf16[1]:8.3f} SNVs/s; vs float32 scores: max |error| {error.max():.2e} "
          f"({error.max() / np.abs(splice).max():.1%} of max |score|), median {np.median(error):.2e}, "
          f"Pearson r {np.corrcoef(bf16[2], splice)[0, 1]:.4f}" + ("" if weights else " (random weights: give --weights for a realistic error)"))


def main() -> None:
    """Benchmark each requested config."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="tiny,full", help="Comma-separated configs (tiny, small, full).")
    parser.add_argument("--weights", type=Path, help="Pretrained Enformer weights for the full config (scores, and so the bf16 error, are only realistic with them).")
    parser.add_argument("--window", type=int, default=49_152)
    parser.add_argument("--variants", type=int, help="SNVs per config (default on CPU: tiny 128, full 4).")
    parser.add_argument("--batch", type=int, help="SNVs per forward pass (default on CPU: tiny 32, full 4).")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads" + (f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""))
    for config in args.configs.split(","):
        variants, batch = CPU_DEFAULTS.get(config, (32, 8)) if device.type == "cpu" else (512, 32)
        bench_config(config, args.weights if config == "full" else None, args.window, args.variants or variants, args.batch or batch, device)


if __name__ == "__main__":
    main()
