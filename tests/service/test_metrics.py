"""/metrics: Prometheus counters, histograms and job counts from the database."""

from __future__ import annotations

from conftest import DIGITS


def test_metrics_expose_jobs_by_status_queue_depth_and_durations(client, auth):
    client.post("/v1/jobs", json=DIGITS, headers=auth)
    job = client.post("/v1/jobs", json=DIGITS, headers=auth).json()
    client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth)

    response = client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'plateau_jobs{status="queued"} 1.0' in text
    assert 'plateau_jobs{status="cancelled"} 1.0' in text
    assert "plateau_queue_depth 1.0" in text
    for name in (
        "plateau_jobs_submitted_total",
        "plateau_job_duration_seconds_bucket",
        "plateau_job_queue_wait_seconds_bucket",
        "# TYPE plateau_stage_duration_seconds histogram",
        "# TYPE plateau_jobs_finished_total counter",
    ):
        assert name in text
