"""What the dashboard shows of a job: labels, the verdict in words, chart data.

Pure functions of a job's stored fields, so the templates stay free of logic
and the wording can be tested without a browser.
"""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.db.models import FINAL_STATUSES, Job, utcnow
from app.schemas import CurvePointPublic
from engine.result import Result
from engine.specs import AnalysisRequest

#: the most points handed to the browser's chart (the stored curve has ~1000)
MAX_CHART_POINTS = 2000
#: points of the dashed projection, log-spaced from m to the projected size
PROJECTION_POINTS = 40


@dataclass(frozen=True)
class Verdict:
    """A job's verdict: a few words for the list, a sentence for its page."""

    short: str
    #: ``ok`` (the data suffice), ``warn`` (more needed) or ``bad`` (over budget,
    #: or no size can be projected): the colour of the badge
    tone: str
    sentence: str


#: what to do next, by the error code a failed job carries
ERROR_HINTS = {
    "bad_data": "The data set could not be used as it is: fix it and submit again.",
    "bad_spec": "The request cannot run as asked: change the setting it names.",
    "training_failed": (
        "Training did not reach a minimum: lower the learning rate or rescale "
        "the features, then submit again."
    ),
    "worker_lost": (
        "The workers running this job stopped before it finished, more than "
        "once; check the workers' memory and logs, then submit again."
    ),
    "time_limit": "The job ran past the time limit: use fewer samples or epochs.",
    "internal_error": (
        "An unexpected error: the worker's log has the details on the lines "
        "marked with this job's id."
    ),
    "cancelled": "The job was cancelled; submit it again to run it.",
}


@dataclass(frozen=True)
class JobSummary:
    """One job as a row of the list and the head of its page."""

    id: str
    status: str
    dataset: str
    architecture: str
    method: str
    created_at: datetime
    duration: str
    #: the engine's current stage and how far into it, in percent
    stage: str | None
    percent: int
    verdict: Verdict | None
    error_code: str | None
    error_message: str | None
    final: bool


def summary(job: Job, now: datetime | None = None) -> JobSummary:
    request = job.request or {}
    result = result_of(job)
    return JobSummary(
        id=str(job.id),
        status=job.status,
        dataset=dataset_label(request.get("dataset", {})),
        architecture=architecture_label(request.get("architecture", {})),
        method=str(request.get("analysis", {}).get("method", "point")),
        created_at=job.created_at,
        duration=duration(job, now),
        stage=job.progress_stage,
        percent=round(100 * min(max(job.progress_fraction or 0.0, 0.0), 1.0)),
        verdict=verdict(result) if result is not None else None,
        error_code=job.error_code,
        error_message=job.error_message,
        final=job.status in FINAL_STATUSES,
    )


def count(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def samples(n: int | None) -> str:
    """``1 sample``, ``1,797 samples``."""
    return f"{count(n)} sample" if n == 1 else f"{count(n)} samples"


def sentence(text: str) -> str:
    """``text`` with its first letter capitalised (engine messages start small)."""
    return text[:1].upper() + text[1:]


def number(value: float | None) -> str:
    """A float in at most 4 significant digits (``0.000364``, ``1.2e-07``)."""
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:.4g}"


def architecture_label(architecture: dict[str, Any]) -> str:
    kind = architecture.get("kind", "mlp")
    if kind == "mlp":
        hidden = architecture.get("hidden_size", 16)
        layers = architecture.get("num_layers", 3)
        return f"mlp h={hidden} L={layers}"
    if kind == "cnn":
        channels = "/".join(str(c) for c in architecture.get("channels", (16, 32)))
        return f"cnn {channels} k={architecture.get('kernel_size', 3)}"
    return str(kind)


def dataset_label(dataset: dict[str, Any]) -> str:
    limit = dataset.get("limit")
    uri = str(dataset.get("uri", ""))
    return f"{uri} (n={limit:,})" if limit else uri


def duration(job: Job, now: datetime | None = None) -> str:
    """Run time so far (running) or in all (ended); blank before it starts."""
    if job.started_at is None:
        return ""
    end = job.finished_at or (None if job.status in FINAL_STATUSES else now or utcnow())
    if end is None:
        return ""
    seconds = max((end - job.started_at).total_seconds(), 0.0)
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, seconds = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def result_of(job: Job) -> Result | None:
    if job.status != "succeeded" or not job.result:
        return None
    try:
        return Result.model_validate(job.result)
    except ValueError:  # written by an older engine: show the job, not a 500
        return None


def verdict(result: Result) -> Verdict:
    """The answer to "have we labelled enough?", for someone who owns the budget."""
    m = result.sample_size
    budget = result.budget
    if result.sufficient:
        k_star = result.sufficient_size
        spare = f"; you have {m:,}" if k_star is not None and k_star < m else ""
        text = (
            f"Yes: you have labelled enough. The model stopped changing "
            f"meaningfully at about {samples(k_star)}{spare}, so labelling "
            "more data of this kind would not change what it learns. "
            "Labelling can stop."
        )
        return Verdict(f"sufficient at k* = {count(k_star)}", "ok", text)

    over_budget = budget is not None and budget.status == "exceeded"
    if result.projected_size is None:
        text = (
            f"Not yet, and no one can say how many more samples would do: with "
            f"{m:,} samples the curve does not fall towards the tolerance fast "
            "enough to project, so more data of this kind may not settle the "
            "model. Check the tolerance, the architecture or the data before "
            "labelling more."
        )
        short = "budget exceeded" if over_budget else "not converging"
        return Verdict(short, "bad", text)

    needed = result.additional_samples_needed
    if needed is None:
        needed = result.projected_size - m
    noun = "sample" if needed == 1 else "samples"
    text = (
        f"Not yet: label about {needed:,} more {noun} "
        f"(about {result.projected_size:,} in total"
    )
    if result.projected_interval is not None:
        low, high = result.projected_interval
        if low != high:
            text += f", most likely between {low:,} and {high:,}"
    text += ") before more data stops changing what the model learns."
    if budget is not None and budget.status == "within":
        text += f" That fits your budget of {budget.limit:,} samples."
    elif over_budget:
        assert budget is not None
        text += (
            f" That is more than your budget of {budget.limit:,} samples: "
            "the budget runs out first."
        )
    short = f"needs ~{needed:,} more"
    if over_budget:
        return Verdict(f"budget exceeded · {short}", "bad", text)
    return Verdict(short, "warn", text)


def _positive(value: float | None) -> float | None:
    """A value a log axis can show: None for missing, zero or negative."""
    return value if value is not None and value > 0 and math.isfinite(value) else None


def chart_data(result: Result, points: list[CurvePointPublic]) -> dict[str, Any]:
    """Column arrays for the browser's chart, sharing one ``k`` axis.

    Beyond ``m`` only the projection has values: ``C·k^(−α)`` from ``m`` to
    the projected size (or the interval's upper end), when the data do not
    suffice and the tail falls.
    """
    if len(points) > MAX_CHART_POINTS:
        last = points[-1]
        points = points[:: math.ceil(len(points) / MAX_CHART_POINTS)]
        if points[-1] is not last:
            points.append(last)
    k = [float(p.k) for p in points]
    columns: dict[str, list[float | None]] = {
        "delta": [_positive(p.delta) for p in points],
        "smoothed": [_positive(p.smoothed) for p in points],
        "low": [_positive(p.delta_low) for p in points],
        "high": [_positive(p.delta_high) for p in points],
        "expected": [_positive(p.delta_expected) for p in points],
    }
    projection: list[float | None] = [None] * len(k)
    fit = result.tail_fit or {}
    constant, exponent = fit.get("constant"), fit.get("exponent")
    if (
        not result.sufficient
        and result.projected_size
        and constant
        and exponent
        and exponent > 0
        and k
    ):
        start = k[-1]
        ends = [result.projected_size, *(result.projected_interval or ())]
        # the interval's upper end, but not so far that the measured part shrinks
        end = float(min(max(e for e in ends if e), 100 * result.projected_size))
        projection[-1] = constant * start ** (-exponent)
        for i in range(1, PROJECTION_POINTS + 1):
            x = start * (end / start) ** (i / PROJECTION_POINTS)
            k.append(x)
            projection.append(constant * x ** (-exponent))
            for column in columns.values():
                column.append(None)
    return {
        "k": k,
        **columns,
        "projection": projection,
        "tolerance": result.tolerance,
        "sufficient_size": result.sufficient_size if result.sufficient else None,
        "sample_size": result.sample_size,
        "projected_size": None if result.sufficient else result.projected_size,
        "projected_interval": (
            None if result.sufficient else result.projected_interval
        ),
        "has_band": any(v is not None for v in columns["low"]),
        "has_expected": any(v is not None for v in columns["expected"]),
    }


def curl_command(base_url: str, job: Job, *, needs_key: bool) -> str:
    """The ``curl`` that submits this job's request again (secrets left out)."""
    request = AnalysisRequest.model_validate(job.request)
    body: dict[str, Any] = request.model_dump(mode="json", exclude_defaults=True)
    body["dataset"] = request.dataset.model_dump(mode="json", exclude_none=True)
    if job.webhook_url:
        body["webhook"] = {"url": job.webhook_url}
    lines = [f"curl -X POST {shlex.quote(base_url.rstrip('/') + '/v1/jobs')}"]
    if needs_key:
        lines.append('-H "Authorization: Bearer $PLATEAU_API_KEY"')
    lines.append("-H 'Content-Type: application/json'")
    lines.append("-d " + shlex.quote(json.dumps(body, indent=2)))
    return " \\\n  ".join(lines)
