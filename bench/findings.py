"""The paper's width and depth findings on scikit-learn's digits, as a table.

    python bench/findings.py

Tail delta (mean over the last 500 k of the point curve, 20 orderings),
averaged over seeds 0, 1, 2; 10 epochs, Adam 1e-3, batch 64. The test
``tests/engine/test_findings.py`` asserts the ordering on part of this grid.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.engine.conftest import digits  # noqa: E402
from tests.engine.test_findings import tail_delta  # noqa: E402


def main() -> None:
    data = digits.__wrapped__()
    print("| width (3 layers) | tail delta |")
    print("| --- | --- |")
    for hidden in (4, 8, 16, 32, 64, 128):
        print(f"| {hidden} | {tail_delta(data, hidden, 3):.2e} |")
    print("\n| depth (width 16) | tail delta |")
    print("| --- | --- |")
    for layers in (1, 2, 3, 4, 6, 8):
        print(f"| {layers} | {tail_delta(data, 16, layers):.2e} |")


if __name__ == "__main__":
    main()
