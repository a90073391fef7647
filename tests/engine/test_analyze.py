"""``analyze``: every method end to end on real data, checkpoints, validation."""

from __future__ import annotations

import numpy as np
import pytest

from engine.analyze import analyze, validate_request
from engine.errors import AnalysisCancelled, DataError, SpecError
from engine.specs import AnalysisRequest, Limits


def request(method: str = "point", **analysis) -> AnalysisRequest:
    return AnalysisRequest.model_validate({
        "dataset": {"uri": "sklearn:digits"},
        "architecture": {"kind": "mlp", "hidden_size": 16, "num_layers": 2},
        "training": {"epochs": 3, "device": "cpu"},
        "analysis": {"method": method, "permutations": 10, **analysis},
        "budget": 2500,
    })  # fmt: skip


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("point", {}),
        ("neighbourhood", {"draws": 8, "sigma": 0.05, "tolerance": 1e-8}),
        ("neighbourhood", {"draws": 8, "perturbation": "isotropic", "squared": False}),
        ("hessian", {"rank": 4, "radius": 0.5}),
        ("learning-curve", {"subset_sizes": 4, "seeds": 2, "tolerance": 1e-5}),
    ],
)
def test_every_method_runs_end_to_end_on_digits(tmp_path, method, options):
    stages = []
    analysis = analyze(
        request(method, **options),
        data_dir=tmp_path,
        progress=lambda stage, fraction: stages.append(stage),
    )
    result, curve = analysis.result, analysis.curve
    assert result.method == method and result.sample_size == 1797
    assert stages[0] == "loading" and stages[-1] == "verdict"
    assert "training" in stages
    assert result.train.epochs == 3 and 0 < result.train.accuracy <= 1
    assert result.budget.limit == 2500
    ks = [p.k for p in curve]
    assert ks == sorted(ks) and all(np.isfinite(p.delta) for p in curve)
    if result.sufficient:
        assert result.sufficient_size in ks and result.budget.status == "reached"
        assert result.projected_size is None
    else:
        assert result.sufficient_size is None
        if result.projected_size is not None:
            low, high = result.projected_interval
            assert result.sample_size < low <= result.projected_size <= high
    assert set(result.timings) == {"loading", "training", "method", "verdict"}


def test_hessian_reports_its_eigenvalues(tmp_path):
    result = analyze(request("hessian", rank=3), data_dir=tmp_path).result
    eigenvalues = result.details["eigenvalues"]
    assert len(eigenvalues) == 3 and eigenvalues == sorted(eigenvalues, reverse=True)
    assert eigenvalues[0] > 0


def test_checkpoint_skips_training_on_a_retry(tmp_path):
    checkpoint = tmp_path / "ckpt" / "job.safetensors"
    first = analyze(request(), data_dir=tmp_path, checkpoint=checkpoint)
    assert checkpoint.is_file()
    stages = []
    second = analyze(
        request(),
        data_dir=tmp_path,
        checkpoint=checkpoint,
        progress=lambda stage, fraction: stages.append((stage, fraction)),
    )
    # restored, not retrained: one progress call for training, at 100 %
    assert [f for s, f in stages if s == "training"] == [1.0]
    assert second.result.train == first.result.train
    assert second.result.final_delta == first.result.final_delta


def test_a_raising_progress_callback_cancels(tmp_path):
    def cancel(stage: str, fraction: float) -> None:
        if stage == "training" and fraction > 0.3:
            raise AnalysisCancelled("cancelled by the user")

    with pytest.raises(AnalysisCancelled):
        analyze(request(), data_dir=tmp_path, progress=cancel)


def test_validate_request_checks_before_queueing(tmp_path):
    validate_request(request(), data_dir=tmp_path)
    with pytest.raises(DataError, match="no file or folder"):
        validate_request(
            AnalysisRequest.model_validate({"dataset": {"uri": "file:x.csv"}}),
            data_dir=tmp_path,
        )
    huge = AnalysisRequest.model_validate({
        "dataset": {"uri": "torchvision:CIFAR10"},
        "architecture": {"hidden_size": 65536, "num_layers": 20},
    })  # fmt: skip
    with pytest.raises(DataError, match="PLATEAU_ALLOW_DOWNLOAD"):
        validate_request(huge, data_dir=tmp_path)
    with pytest.raises(SpecError, match="parameters") as info:
        validate_request(huge, data_dir=tmp_path, allow_download=True)
    assert info.value.field == "architecture"


def test_method_memory_is_checked_before_allocation(tmp_path):
    with pytest.raises(SpecError, match="draws"):
        analyze(
            request("neighbourhood", draws=4096),
            data_dir=tmp_path,
            limits=Limits(max_dataset_bytes=10 * 2**20),
        )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"a,b,label\n", "header but no rows"),
        (b"a,b,label\n1,2,0\n3,4,5,1\n", "ragged rows: line 3"),
        (b"a,b,label\n1,\xff\xfe,0\n", "not UTF-8"),
    ],
)
def test_broken_csv_is_refused_before_queueing(tmp_path, content, message):
    (tmp_path / "t.csv").write_bytes(content)
    spec = AnalysisRequest.model_validate({"dataset": {"uri": "file:t.csv"}})
    with pytest.raises(DataError, match=message) as info:
        validate_request(spec, data_dir=tmp_path)
    assert info.value.field == "dataset.uri"
