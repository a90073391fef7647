"""The convergence plot: log-scale delta against sample size."""

from __future__ import annotations

from typing import IO

import matplotlib

matplotlib.use("Agg")  # no display: plots are files or bytes

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from engine.result import CurvePoint, Result  # noqa: E402


def plot_curve(result: Result, curve: list[CurvePoint], out: str | IO[bytes]) -> None:
    """Write a PNG of the curve: band, expected curve, tolerance, k* or projection.

    ``out`` is a path or a binary file object.
    """
    k = np.array([p.k for p in curve], dtype=float)
    delta = np.array([p.delta for p in curve])
    smoothed = np.array([p.smoothed for p in curve])

    fig = Figure(figsize=(8, 4.8), dpi=110)
    ax = fig.add_subplot()
    if curve and curve[0].delta_low is not None:
        low = np.array([p.delta_low for p in curve], dtype=float)
        high = np.array([p.delta_high for p in curve], dtype=float)
        ax.fill_between(
            k, low, high, color="tab:blue", alpha=0.15, label="band across replicates"
        )
    ax.plot(k, delta, color="tab:blue", lw=0.8, alpha=0.6, label="delta (mean)")
    ax.plot(k, smoothed, color="tab:blue", lw=2, label="smoothed")
    if curve and curve[0].delta_expected is not None:
        expected = np.array([p.delta_expected for p in curve], dtype=float)
        ax.plot(
            k, expected, color="grey", ls=":", lw=1.5, label="expected (closed form)"
        )
    ax.axhline(
        result.tolerance, color="tab:red", lw=1, label=f"tolerance {result.tolerance:g}"
    )

    if result.sufficient and result.sufficient_size is not None:
        ax.axvline(
            result.sufficient_size,
            color="tab:green",
            lw=1.5,
            label=f"k* = {result.sufficient_size:,}",
        )
    elif result.projected_size and result.tail_fit and result.tail_fit.get("exponent"):
        c, alpha = result.tail_fit["constant"], result.tail_fit["exponent"]
        ks = np.geomspace(k[-1], result.projected_size, 50)
        ax.plot(
            ks,
            c * ks ** (-alpha),
            color="tab:orange",
            ls="--",
            lw=1.5,
            label=f"projection: k* ≈ {result.projected_size:,}",
        )
        if result.projected_interval:
            lo, hi = result.projected_interval
            ax.axvspan(
                lo, hi, color="tab:orange", alpha=0.1, label="projection interval"
            )

    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("sample size k")
    ax.set_ylabel("delta")
    verdict = (
        f"sufficient from k* = {result.sufficient_size:,}"
        if result.sufficient
        else "not yet sufficient"
    )
    ax.set_title(f"{result.method}: m = {result.sample_size:,}, {verdict}")
    ax.grid(True, which="both", alpha=0.2)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(out, format="png")
