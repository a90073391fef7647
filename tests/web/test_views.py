"""What the dashboard says about a job: the verdict in words, chart data, the curl."""

from __future__ import annotations

import json
import shlex
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from app.db.models import Job
from app.schemas import CurvePointPublic, JobCreate
from app.web import views
from engine.result import Budget, Result, TrainSummary


def result(**fields) -> Result:
    values = {
        "method": "point",
        "sample_size": 1797,
        "tolerance": 1e-4,
        "final_delta": 3e-4,
        "sufficient": False,
        "train": TrainSummary(loss=0.5, accuracy=0.8, epochs=10, seconds=1.0),
        "parameters": 1952,
        "device": "cpu",
        "timings": {},
        "details": {},
    }
    values.update(fields)
    return Result(**values)


def test_data_that_suffice_say_labelling_can_stop():
    verdict = views.verdict(result(sufficient=True, sufficient_size=810))

    assert verdict.short == "sufficient at k* = 810" and verdict.tone == "ok"
    assert verdict.sentence.startswith("Yes: you have labelled enough")
    assert "about 810 samples; you have 1,797" in verdict.sentence
    assert verdict.sentence.endswith("Labelling can stop.")


def test_data_that_do_not_suffice_say_how_many_more_and_the_budget():
    within = views.verdict(
        result(
            projected_size=6270,
            projected_interval=(6198, 6340),
            additional_samples_needed=4473,
            budget=Budget(limit=10_000, status="within"),
        )
    )
    over = views.verdict(
        result(
            projected_size=6270,
            additional_samples_needed=4473,
            budget=Budget(limit=5000, status="exceeded"),
        )
    )

    assert within.short == "needs ~4,473 more" and within.tone == "warn"
    assert within.sentence == (
        "Not yet: label about 4,473 more samples (about 6,270 in total, most "
        "likely between 6,198 and 6,340) before more data stops changing what "
        "the model learns. That fits your budget of 10,000 samples."
    )
    assert over.short == "budget exceeded · needs ~4,473 more" and over.tone == "bad"
    assert "more than your budget of 5,000 samples" in over.sentence


def test_one_more_sample_is_singular_and_a_point_interval_is_not_a_range():
    verdict = views.verdict(
        result(
            sample_size=150,
            projected_size=151,
            projected_interval=(151, 151),
            additional_samples_needed=1,
        )
    )

    assert "label about 1 more sample (about 151 in total)" in verdict.sentence


def test_a_curve_that_does_not_fall_says_no_size_can_be_projected():
    verdict = views.verdict(result(budget=Budget(limit=100, status="exceeded")))

    assert verdict.short == "budget exceeded" and verdict.tone == "bad"
    assert verdict.sentence.startswith("Not yet, and no one can say")


def points(n: int) -> list[CurvePointPublic]:
    return [
        CurvePointPublic(
            k=k,
            delta=1 / k if k != 3 else 0.0,
            delta_low=0.5 / k,
            delta_high=2 / k,
            delta_expected=None,
            smoothed=1 / k,
        )
        for k in range(1, n + 1)
    ]


def test_chart_data_extends_with_the_projection_only_when_data_do_not_suffice():
    fit = {"constant": 1.0, "exponent": 1.0}
    short = result(
        sample_size=50, projected_size=10_000, projected_interval=(8000, 12_000)
    )
    enough = result(sample_size=50, sufficient=True, sufficient_size=20)

    projected = views.chart_data(short.model_copy(update={"tail_fit": fit}), points(50))
    plain = views.chart_data(enough.model_copy(update={"tail_fit": fit}), points(50))

    n = views.PROJECTION_POINTS
    assert len(projected["k"]) == 50 + n and projected["k"][-1] == pytest.approx(12_000)
    assert projected["delta"][50:] == [None] * n
    assert projected["projection"][:49] == [None] * 49
    assert projected["projection"][-1] == pytest.approx(1 / 12_000)
    assert projected["projected_interval"] == (8000, 12_000)
    assert len(plain["k"]) == 50 and set(plain["projection"]) == {None}
    assert plain["sufficient_size"] == 20 and plain["projected_size"] is None
    # a log axis cannot show zero: it becomes a gap
    assert plain["delta"][2] is None and not plain["has_expected"]


def test_chart_data_is_thinned_to_a_bounded_size_keeping_the_last_point():
    data = views.chart_data(result(sample_size=5000), points(5000))

    assert len(data["k"]) <= views.MAX_CHART_POINTS + 1
    assert data["k"][0] == 1 and data["k"][-1] == 5000


def job(**fields) -> Job:
    values = {
        "id": uuid.uuid4(),
        "status": "succeeded",
        "request": JobCreate.model_validate(
            {
                "dataset": {"uri": "sklearn:digits", "limit": 500},
                "training": {"epochs": 2},
                "analysis": {"tolerance": 0.001},
                "budget": 900,
            }
        )
        .analysis_request()
        .model_dump(mode="json"),
        "webhook_url": "https://example.org/hook",
        "created_at": datetime(2026, 1, 1, tzinfo=timezone.utc),
    }
    values.update(fields)
    return Job(**values)


@pytest.mark.parametrize("needs_key", [True, False])
def test_the_curl_command_submits_the_same_request(needs_key):
    made = job()

    command = views.curl_command("http://127.0.0.1:8000/", made, needs_key=needs_key)

    words = shlex.split(command.replace("\\\n", " "))
    assert words[:4] == ["curl", "-X", "POST", "http://127.0.0.1:8000/v1/jobs"]
    assert ("Authorization: Bearer $PLATEAU_API_KEY" in words) is needs_key
    body = JobCreate.model_validate(json.loads(words[words.index("-d") + 1]))
    assert body.analysis_request().model_dump(mode="json") == made.request
    assert str(body.webhook.url) == "https://example.org/hook"
    assert body.webhook.secret is None  # the secret is never shown


def test_duration_reads_like_a_person_would_say_it():
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def after(seconds: float) -> str:
        return views.duration(
            job(started_at=start, finished_at=start + timedelta(seconds=seconds))
        )

    assert after(2.04) == "2.0 s"
    assert after(42) == "42 s"
    assert after(185) == "3 min 05 s"
    assert after(7300) == "2 h 01 min"
    assert views.duration(job(status="queued", started_at=None)) == ""


def test_counts_of_one_are_singular():
    verdict = views.verdict(result(sufficient=True, sufficient_size=1))

    assert "at about 1 sample; you have 1,797" in verdict.sentence
