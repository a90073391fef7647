"""Benchmark: the paper's configuration on 10,000 MNIST-format samples.

    python bench/pipeline.py              # our pipeline, the point curve at scale
    python bench/pipeline.py --baseline   # also the reference-style pipeline

Writes MNIST IDX files to a temporary data directory, then runs the paper's
setup through ``torchvision:MNIST``: MLP h=16, L=3, no bias, 10 epochs,
batch 64, Adam 1e-3, P=100 orderings. Prints seconds per stage, from after
the imports to the written result, and peak memory. Each measurement runs in
a fresh subprocess so that peak memory is its own.
"""

from __future__ import annotations

import argparse
import importlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_data(data_dir: Path, n: int = 10_000) -> None:
    from tests.support.mnist import digits_like_mnist, write_mnist

    images, labels = digits_like_mnist(n, seed=0)
    write_mnist(data_dir, images, labels)


def run_pipeline(data_dir: Path, method: str, threads: int | None) -> dict:
    """Our pipeline: analyze() from the request to the written Result."""
    import torch

    from engine.analyze import analyze
    from engine.specs import AnalysisRequest

    # What a long-lived worker has imported already: the clock starts after.
    importlib.import_module("torchvision.datasets")
    importlib.import_module(f"engine.methods.{method.replace('-', '_')}")

    if threads:
        torch.set_num_threads(threads)
    request = AnalysisRequest.model_validate(
        {
            "dataset": {"uri": "torchvision:MNIST"},
            "architecture": {"kind": "mlp", "hidden_size": 16, "num_layers": 3},
            "training": {"epochs": 10, "batch_size": 64, "lr": 1e-3, "device": "cpu"},
            "analysis": {"method": method, "permutations": 100, "draws": 64},
        }
    )
    before = peak_mib()
    start = time.perf_counter()
    analysis = analyze(request, data_dir=data_dir)
    out = data_dir / f"result-{method}.json"
    document = analysis.result.model_dump(mode="json")
    document["curve"] = [p.model_dump() for p in analysis.curve]
    out.write_text(json.dumps(document))
    total = time.perf_counter() - start
    return {
        "method": method,
        "threads": torch.get_num_threads(),
        "stages": analysis.result.timings,
        "total_s": round(total, 3),
        "peak_mib": round(peak_mib(), 1),
        "peak_before_mib": round(before, 1),
        "sufficient_size": analysis.result.sufficient_size,
        "projected_size": analysis.result.projected_size,
    }


def run_point_curve(m: int) -> dict:
    """The point curve alone for m random per-sample losses, P = 100."""
    import torch

    from engine.methods.point import curve_from_losses
    from engine.specs import AnalysisSpec

    losses = torch.rand(
        m, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    before = peak_mib()
    start = time.perf_counter()
    curve_from_losses(losses, AnalysisSpec(permutations=100), seed=0)
    return {
        "m": m,
        "seconds": round(time.perf_counter() - start, 3),
        "peak_mib": round(peak_mib(), 1),
        "peak_growth_mib": round(peak_mib() - before, 1),
    }


def run_baseline(data_dir: Path) -> dict:
    """The same work done the reference way: a per-sample transform loader for
    training, then a Python loop over samples for the losses, then a Python
    loop over k for the deltas of each ordering."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from engine.models import build_model
    from engine.specs import ArchSpec

    torch.manual_seed(0)
    start = time.perf_counter()
    dataset = datasets.MNIST(data_dir, train=True, transform=transforms.ToTensor())
    loader = DataLoader(dataset, batch_size=64, shuffle=True)
    model = build_model(ArchSpec(), (1, 28, 28), 10)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(10):
        for x, y in loader:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
    trained = time.perf_counter()
    model.eval()
    losses = []
    with torch.no_grad():
        for x, y in DataLoader(dataset, batch_size=1):
            losses.append(F.cross_entropy(model(x), y).item())
    scored = time.perf_counter()
    losses = np.array(losses)
    rng = np.random.default_rng(0)
    for _ in range(100):
        ordered = losses[rng.permutation(losses.size)]
        total = np.cumsum(ordered)
        k = np.arange(1, losses.size)
        np.abs(total[1:] / (k + 1) - total[:-1] / k)
    done = time.perf_counter()
    return {
        "train_s": round(trained - start, 3),
        "losses_s": round(scored - trained, 3),
        "orderings_s": round(done - scored, 3),
        "total_s": round(done - start, 3),
    }


def child(args: list[str]) -> dict:
    """Run one measurement in a fresh interpreter; return its JSON line."""
    done = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", action="store_true")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        kind, *rest = args.child
        if kind == "pipeline":
            out = run_pipeline(Path(rest[0]), rest[1], int(rest[2]) or None)
        elif kind == "point":
            out = run_point_curve(int(rest[0]))
        else:
            out = run_baseline(Path(rest[0]))
        print(json.dumps(out))
        return

    with tempfile.TemporaryDirectory() as tmp:
        write_data(Path(tmp))
        print("# 10,000 MNIST-format samples, MLP h=16 L=3, 10 epochs, P=100")
        for threads in (1, 2):
            row = child(["pipeline", tmp, "point", str(threads)])
            print(f"point, {threads} thread(s): {row}")
        for method in ("neighbourhood", "hessian"):
            print(f"{method}: {child(['pipeline', tmp, method, '0'])}")
        if args.baseline:
            print(f"reference-style baseline: {child(['baseline', tmp])}")
    print("# the point curve alone, P = 100")
    for m in (100_000, 1_000_000):
        print(f"m = {m:,}: {child(['point', str(m)])}")


if __name__ == "__main__":
    main()
