"""Benchmark: the neighbourhood and Hessian methods on MNIST-shaped data.

    python bench/methods_scaling.py                  # defaults below
    python bench/methods_scaling.py --repeats 3 --sizes 5000 10000 20000

Random images ``(m, 1, 28, 28)`` in ``[0, 1]`` with random labels, and the
method's MLP (``ArchSpec()``: hidden 16, 3 layers, no bias) at its initial
weights. Prints, in seconds (best of ``--repeats``):

1. the ``(S, m)`` loss matrix for 64 draws on 10,000 samples, both forms;
2. the whole neighbourhood method (64 draws, ``--permutations`` orderings)
   and the whole Hessian method (rank 10) at each size, split by stage, and
   the ratio of each time to the one at the previous size (2 = linear in m
   when the sizes double).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from engine.dataset import Dataset  # noqa: E402
from engine.methods import hessian, neighbourhood  # noqa: E402
from engine.models import build_model  # noqa: E402
from engine.specs import AnalysisSpec, ArchSpec  # noqa: E402

CPU = torch.device("cpu")


def mnist_shaped(m: int, seed: int = 0) -> Dataset:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (m, 1, 28, 28), generator=generator) / 255.0
    y = torch.randint(0, 10, (m,), generator=generator)
    return Dataset("random-mnist", x.float(), y, 10)


def best_of(repeats: int, work) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best


def staged(repeats: int, method, model, data, spec) -> dict[str, float]:
    """Best total time of ``method.run`` and the time spent in each stage."""
    best: dict[str, float] = {"total": float("inf")}
    for _ in range(repeats):
        marks: list[tuple[str, float]] = []

        def progress(stage: str, fraction: float, marks=marks) -> None:
            if not marks or marks[-1][0] != stage:
                marks.append((stage, time.perf_counter()))

        start = time.perf_counter()
        method.run(model, data, spec, seed=0, device=CPU, progress=progress)
        end = time.perf_counter()
        if end - start < best["total"]:
            best = {"total": end - start}
            bounds = [start] + [t for _, t in marks[1:]] + [end]
            names = ["setup+" + marks[0][0]] + [n for n, _ in marks[1:]]
            for name, a, b in zip(names, bounds[:-1], bounds[1:], strict=True):
                best[name] = best.get(name, 0.0) + b - a
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 10000, 20000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--permutations", type=int, default=100)
    parser.add_argument("--draws", type=int, default=64)
    parser.add_argument("--rank", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(ArchSpec(), (1, 28, 28), 10).eval()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    data = mnist_shaped(10_000)
    layout = neighbourhood.ParameterLayout(model)
    theta = neighbourhood.flat_parameters(model, layout)
    print(f"\nloss matrix, {args.draws} draws x 10,000 samples, P = {layout.size}")
    for form in ("subspace", "isotropic"):
        spec = AnalysisSpec(method="neighbourhood", perturbation=form, draws=args.draws)

        def work(spec=spec) -> None:
            draws = neighbourhood.Draws(layout, theta, spec, seed=0)
            neighbourhood.loss_matrix(model, data, draws, device=CPU)

        work()  # warm-up
        print(f"  {form:10s} {best_of(args.repeats * 2, work):.3f} s")

    specs = {
        "neighbourhood": (
            neighbourhood,
            AnalysisSpec(
                method="neighbourhood",
                draws=args.draws,
                permutations=args.permutations,
            ),
        ),
        "hessian": (
            hessian,
            AnalysisSpec(
                method="hessian", rank=args.rank, permutations=args.permutations
            ),
        ),
    }
    for name, (method, spec) in specs.items():
        print(f"\n{name}: {args.permutations} orderings")
        previous = None
        for m in args.sizes:
            figures = staged(args.repeats, method, model, mnist_shaped(m), spec)
            stages = ", ".join(
                f"{k} {v:.2f}" for k, v in figures.items() if k != "total"
            )
            ratio = (
                f"  x{figures['total'] / previous:.2f} vs previous size"
                if previous
                else ""
            )
            print(f"  m={m:>6}: {figures['total']:.2f} s ({stages}){ratio}")
            previous = figures["total"]


if __name__ == "__main__":
    main()
