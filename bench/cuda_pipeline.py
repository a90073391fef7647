"""Benchmark: the paper's configuration on CUDA, and the heavier methods at 60k.

    python bench/cuda_pipeline.py

Writes MNIST-format files locally (10,000 samples for the paper's job, 60,000
for the neighbourhood and Hessian methods), runs ``analyze`` with
``device=cuda`` and prints seconds per stage and peak GPU memory. Exits with
a message, not an error, where no CUDA device is visible.
"""

from __future__ import annotations

import importlib
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run(data_dir: Path, method: str, **analysis) -> dict:
    import torch

    from engine.analyze import analyze
    from engine.specs import AnalysisRequest

    importlib.import_module(f"engine.methods.{method}")
    request = AnalysisRequest.model_validate(
        {
            "dataset": {"uri": "torchvision:MNIST"},
            "architecture": {"kind": "mlp", "hidden_size": 16, "num_layers": 3},
            "training": {"epochs": 10, "batch_size": 64, "lr": 1e-3, "device": "cuda"},
            "analysis": {"method": method, "permutations": 100, **analysis},
        }
    )
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.synchronize()
    start = time.perf_counter()
    result = analyze(request, data_dir=data_dir).result
    torch.cuda.synchronize()
    return {
        "method": method,
        "stages": result.timings,
        "total_s": round(time.perf_counter() - start, 3),
        "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1),
        "device": torch.cuda.get_device_name(),
    }


def main() -> None:
    import torch

    from tests.support.mnist import digits_like_mnist, write_mnist

    if not torch.cuda.is_available():
        print("no CUDA device is visible: nothing to measure")
        return
    torch.zeros(1, device="cuda")  # CUDA context before the clock, like imports
    for n, methods in ((10_000, ("point",)), (60_000, ("neighbourhood", "hessian"))):
        with tempfile.TemporaryDirectory() as tmp:
            images, labels = digits_like_mnist(n, seed=0)
            write_mnist(Path(tmp), images, labels)
            for method in methods:
                extra = {"draws": 64} if method == "neighbourhood" else {}
                print(f"m = {n:,}: {run(Path(tmp), method, **extra)}")


if __name__ == "__main__":
    main()
