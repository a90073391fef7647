"""``plateau analyze`` as a user runs it: a real subprocess, real data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support.mnist import digits_like_mnist, write_mnist

PLATEAU = [sys.executable, "-c", "from cli.main import main; main()"]
ROOT = Path(__file__).resolve().parents[2]


def plateau(*args: str, data_dir: Path | None = None) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(ROOT)}
    if data_dir is not None:
        env["PLATEAU_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [*PLATEAU, *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_analyze_digits_writes_result_and_plot(tmp_path):
    out, png = tmp_path / "result.json", tmp_path / "curve.png"
    done = plateau(
        "analyze", "sklearn:digits", "--arch", "mlp:hidden=16,layers=2",
        "--epochs", "3", "--permutations", "20", "--budget", "3000",
        "--json", str(out), "--plot", str(png),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "verdict" in done.stdout and "training" in done.stderr
    result = json.loads(out.read_text())
    assert result["method"] == "point" and result["sample_size"] == 1797
    assert result["budget"]["limit"] == 3000
    assert result["budget"]["status"] in ("reached", "within", "exceeded")
    if not result["sufficient"]:
        low, high = result["projected_interval"]
        assert low <= result["projected_size"] <= high
        assert result["additional_samples_needed"] == result["projected_size"] - 1797
    curve = result["curve"]
    assert 100 < len(curve) <= 1001
    assert set(curve[0]) == {
        "k", "delta", "delta_low", "delta_high", "delta_expected", "smoothed"
    }  # fmt: skip
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_analyze_reads_mnist_files_through_torchvision(tmp_path):
    images, labels = digits_like_mnist(600, seed=1)
    write_mnist(tmp_path, images, labels)
    out = tmp_path / "r.json"
    done = plateau(
        "analyze", "torchvision:MNIST", "--epochs", "2", "--permutations", "10",
        "--quiet", "--json", str(out), data_dir=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text())["sample_size"] == 600


def test_file_reference_and_json_arch(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5))
    y = (x[:, 0] > 0).astype(np.int64)
    np.savez(tmp_path / "table.npz", x=x, y=y)
    done = plateau(
        "analyze", "file:table.npz", "--arch", '{"kind": "linear"}',
        "--epochs", "2", "--permutations", "5", "--quiet", data_dir=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "samples (m)" in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope:thing"], "unknown dataset reference"),
        (["file:../etc/passwd"], "'..'"),
        (["file:missing.npz"], "no file or folder"),
        (["sklearn:digits", "--arch", "mlp:hidden=0"], "architecture.hidden_size"),
        (["sklearn:digits", "--arch", "mlp:hidden"], "not key=value"),
        (["sklearn:digits", "--arch", "{oops"], "not valid JSON"),
        (["sklearn:digits", "--method", "magic"], "analysis.method"),
        (["sklearn:digits", "--tolerance", "-1"], "analysis.tolerance"),
        (["sklearn:digits", "--epochs", "many"], "Invalid value for '--epochs'"),
        (["sklearn:digits", "--device", "cuda"], "device"),
        (["sklearn:digits", "--arch", "cnn"], "image data"),
        (["sklearn:digits", "--limit", "5000"], "only 1797 samples"),
        (["sklearn:digits", "-o", "sigma"], "not key=value"),
        (["sklearn:digits", "-o", "warp=9"], "analysis.warp"),
        (["sklearn:digits", "--frobnicate"], "No such option"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    done = plateau("analyze", *args, "--quiet", data_dir=tmp_path)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("plateau: error: ")
    assert message in lines[0]
    assert "Traceback" not in done.stderr
