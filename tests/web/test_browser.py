"""The dashboard in a real browser against real ``plateau up`` and ``plateau serve``.

Headless Chromium submits jobs from the form, watches them end without a
reload, reads the drawn curve back from the chart, and signs in with a key.
"""

from __future__ import annotations

import re

import httpx
import pytest
from web_helpers import DIGITS_FORM

pytestmark = pytest.mark.slow

LAPTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
JOB_URL = re.compile(r"/jobs/[0-9a-f-]{36}$")
#: generous: two cores are shared with other test runs
JOB_TIMEOUT_MS = 150_000

# reads a chart back: its series, its points, how many canvas pixels are inked
CHART_PROBE = """(id) => {
  const u = window.plateauCharts && window.plateauCharts['curve-' + id];
  if (!u) return null;
  const canvas = u.ctx.canvas;
  const pixels = u.ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  let inked = 0;
  for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) inked++;
  return {
    series: u.series.slice(1).map((s) => s.label),
    points: u.data[0].length,
    inked: inked / (canvas.width * canvas.height),
  };
}"""


def submit_form(page, base: str, values: dict[str, str]) -> str:
    """Fill the submit form like a person, send it, return the new job's id."""
    from playwright.sync_api import expect

    page.goto(f"{base}/jobs/new")
    page.get_by_label("Data set reference").fill(values["dataset.uri"])
    if "training.epochs" in values or "webhook.url" in values:
        page.locator("summary", has_text="Training and webhook").click()
    if "training.epochs" in values:
        page.get_by_label("Epochs").fill(values["training.epochs"])
    if "webhook.url" in values:
        page.get_by_label("Webhook URL (optional)").fill(values["webhook.url"])
    if "analysis.permutations" in values:
        page.get_by_label("Orderings").fill(values["analysis.permutations"])
    page.get_by_role("button", name="Start analysis").click()
    expect(page).to_have_url(JOB_URL)
    return page.url.rsplit("/", 1)[1]


def mark_loaded(page) -> None:
    """Leave a mark in the page that a reload would wipe."""
    page.evaluate("window.__sameDocument = true")


def same_document(page) -> bool:
    return page.evaluate("window.__sameDocument === true")


def test_a_job_from_the_form_turns_succeeded_live_and_draws_its_curve(
    browser, plateau_up, webhook_receiver, screenshots
):
    from playwright.sync_api import expect

    context = browser.new_context(viewport=LAPTOP)
    watcher = context.new_page()
    watcher.goto(f"{plateau_up.url}/")
    mark_loaded(watcher)

    page = context.new_page()
    hook_url, received = webhook_receiver
    job_id = submit_form(page, plateau_up.url, {**DIGITS_FORM, "webhook.url": hook_url})
    mark_loaded(page)

    # the list, opened before the job existed, shows it arrive and succeed
    row = watcher.locator(f'tr[data-job-id="{job_id}"]')
    expect(row).to_have_attribute("data-status", "succeeded", timeout=JOB_TIMEOUT_MS)
    assert same_document(watcher)
    expect(row.locator(".verdict")).to_have_text(
        re.compile(r"sufficient at k\* = [\d,]+|needs ~[\d,]+ more|not converging")
    )
    expect(row.locator('[data-label="Architecture"]')).to_have_text("mlp h=16 L=3")

    # the job page, never reloaded either, ends with its verdict and its curve
    live = page.locator("#job-live")
    expect(live).to_have_attribute("data-status", "succeeded", timeout=JOB_TIMEOUT_MS)
    assert same_document(page)
    expect(page.locator("#verdict-sentence")).to_contain_text(
        re.compile(r"^(Yes: you have labelled enough|Not yet)")
    )
    page.wait_for_function(
        "(id) => window.plateauCharts && window.plateauCharts['curve-' + id]",
        arg=job_id,
    )
    chart = page.evaluate(CHART_PROBE, job_id)
    assert {"delta", "smoothed", "band high", "band low", "expected"} <= set(
        chart["series"]
    ), chart
    assert chart["points"] > 100
    assert chart["inked"] > 0.02, chart  # lines, band and axes, not a blank canvas

    # hovering the plot shows the values at that k in the legend
    box = page.locator(f"#curve-{job_id} .u-over").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
    k_value = page.locator(f"#curve-{job_id} .u-legend .u-series").first
    expect(k_value.locator(".u-value")).to_have_text(re.compile(r"^[\d,]+$"))

    # links to the curve's files answer with the cookie-less local tenant
    for suffix, kind in (("/curve", "json"), ("/curve?format=csv", "csv")):
        body = page.request.get(f"{plateau_up.url}/v1/jobs/{job_id}{suffix}")
        assert body.ok and kind in body.headers["content-type"]
    png = page.request.get(f"{plateau_up.url}/v1/jobs/{job_id}/curve.png")
    assert png.headers["content-type"] == "image/png"
    expect(page.locator("#curl-command")).to_contain_text("sklearn:digits")
    # the deliveries the API lists, as they are made (the table refreshes itself)
    deliveries = page.locator("[data-deliveries-body]")
    expect(deliveries).not_to_contain_text("Loading", timeout=15_000)
    expect(deliveries).not_to_contain_text("Could not load")
    if any(event["data"].get("job_id") == job_id for event in received):
        expect(deliveries.locator("table.deliveries")).to_contain_text(
            "job.succeeded", timeout=30_000
        )

    page.screenshot(path=screenshots / "job-succeeded-1280.png", full_page=True)
    watcher.screenshot(path=screenshots / "jobs-1280.png", full_page=True)
    page.set_viewport_size(PHONE)
    watcher.set_viewport_size(PHONE)
    page.wait_for_function(
        "(id) => window.plateauCharts['curve-' + id].width < 400", arg=job_id
    )
    page.reload()  # as a phone would first show it
    page.wait_for_function(
        "(id) => window.plateauCharts && window.plateauCharts['curve-' + id]",
        arg=job_id,
    )
    page.screenshot(path=screenshots / "job-succeeded-390.png", full_page=True)
    watcher.screenshot(path=screenshots / "jobs-390.png", full_page=True)
    context.close()


def test_a_job_that_fails_in_the_worker_shows_its_reason(
    browser, plateau_up, screenshots
):
    from playwright.sync_api import expect

    context = browser.new_context(viewport=LAPTOP)
    page = context.new_page()
    # passes the checks at submission (the file exists); the worker finds a NaN
    job_id = submit_form(page, plateau_up.url, {"dataset.uri": "file:nan.npz"})
    mark_loaded(page)

    expect(page.locator("#job-live")).to_have_attribute(
        "data-status", "failed", timeout=JOB_TIMEOUT_MS
    )
    assert same_document(page)
    expect(page.locator(".error-panel")).to_contain_text("Why it failed")
    expect(page.locator("#error-message")).to_contain_text("bad_data")
    expect(page.locator("#error-message")).to_contain_text("NaN value")
    expect(page.get_by_role("button", name="Cancel job")).to_have_count(0)
    page.screenshot(path=screenshots / "job-failed-1280.png", full_page=True)

    page.goto(f"{plateau_up.url}/?status=failed")
    row = page.locator(f'tr[data-job-id="{job_id}"]')
    expect(row.locator(".error-code")).to_have_text("bad_data")
    expect(page.locator('a[aria-current="page"]', has_text="failed")).to_be_visible()
    page.set_viewport_size(PHONE)
    page.goto(f"{plateau_up.url}/jobs/{job_id}")
    page.screenshot(path=screenshots / "job-failed-390.png", full_page=True)
    context.close()


def test_the_form_shows_the_apis_422_messages_beside_their_fields(
    browser, plateau_up, screenshots
):
    from playwright.sync_api import expect

    cases = [
        # (form values, the same request as JSON, the field that is wrong)
        (
            {"dataset.uri": "sklearn:digits", "analysis.tolerance": "-1"},
            {"dataset": {"uri": "sklearn:digits"}, "analysis": {"tolerance": -1}},
            "analysis.tolerance",
        ),
        (
            {"dataset.uri": "file:missing.npz"},
            {"dataset": {"uri": "file:missing.npz"}},
            "dataset.uri",
        ),
    ]
    context = browser.new_context(viewport=LAPTOP)
    page = context.new_page()
    for values, body, field in cases:
        api = httpx.post(f"{plateau_up.url}/v1/jobs", json=body, timeout=30)
        assert api.status_code == 422
        (detail,) = api.json()["detail"]
        assert ".".join(detail["loc"][1:]) == field

        page.goto(f"{plateau_up.url}/jobs/new")
        for name, value in values.items():
            page.locator(f'[name="{name}"]').fill(value)
        page.get_by_role("button", name="Start analysis").click()
        field_id = "f-" + field.replace(".", "-")
        expect(page.locator(f"#{field_id}")).to_have_attribute("aria-invalid", "true")
        expect(page.locator(f"#{field_id}-error")).to_have_text(detail["msg"])
        expect(page.locator("#error-summary")).to_be_focused()
        # what was typed is kept
        expect(page.locator(f"#{field_id}")).to_have_value(values[field])

    page.screenshot(path=screenshots / "form-error-1280.png", full_page=True)
    page.set_viewport_size(PHONE)
    page.screenshot(path=screenshots / "form-error-390.png", full_page=True)
    context.close()


def test_serve_asks_for_a_key_once_and_keeps_an_httponly_session(
    browser, plateau_serve, screenshots
):
    from playwright.sync_api import expect

    base, keys = plateau_serve.url, plateau_serve.keys
    theirs = httpx.post(
        f"{base}/v1/jobs",
        json={"dataset": {"uri": "sklearn:iris"}},
        headers={"Authorization": f"Bearer {keys['globex']}"},
    ).json()["id"]
    mine = httpx.post(
        f"{base}/v1/jobs",
        json={"dataset": {"uri": "sklearn:wine"}},
        headers={"Authorization": f"Bearer {keys['acme']}"},
    ).json()["id"]

    context = browser.new_context(viewport=LAPTOP)
    page = context.new_page()
    page.goto(f"{base}/jobs/{mine}")
    expect(page).to_have_url(re.compile(r"/login\?next=/jobs/"))
    page.screenshot(path=screenshots / "login-1280.png", full_page=True)

    page.get_by_label("API key").fill("plt_000000000000_not-a-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#api-key-error")).to_contain_text("not valid")

    page.get_by_label("API key").fill(keys["acme"])
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{base}/jobs/{mine}")  # back where it was going
    expect(page.locator(".who")).to_contain_text("Signed in as acme")

    (cookie,) = [c for c in context.cookies() if c["name"] == "plateau_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert not cookie["secure"]  # plain http on loopback
    secret = keys["acme"].split("_", 2)[2]
    assert secret not in cookie["value"] and keys["acme"] not in cookie["value"]
    assert page.evaluate("document.cookie") == ""

    # the page's own API calls authenticate with the cookie; unsafe ones need
    # the session's CSRF token as well
    listed = page.evaluate(
        "fetch('/v1/jobs').then((r) => r.json()).then((b) => b.items.map((j) => j.id))"
    )
    assert listed == [mine]
    bare = page.evaluate(
        f"fetch('/v1/jobs/{mine}/cancel', {{method: 'POST'}}).then((r) => r.status)"
    )
    assert bare == 403

    # a link from another site (no Strict cookie sent) still finds the session
    other_site = context.new_page()
    other_site.set_content(f'<a id="go" href="{base}/jobs/{mine}">the job</a>')
    other_site.click("#go")
    expect(other_site.locator(".who")).to_contain_text("Signed in as acme")
    expect(other_site).to_have_url(f"{base}/jobs/{mine}")
    other_site.close()

    # the key is asked once: other pages of the same browser are signed in
    page.goto(f"{base}/")
    expect(page.locator(f'tr[data-job-id="{mine}"]')).to_be_visible()
    expect(page.locator(f'tr[data-job-id="{theirs}"]')).to_have_count(0)
    assert page.goto(f"{base}/jobs/{theirs}").status == 404
    assert page.request.get(f"{base}/fragments/jobs/{theirs}").status == 404

    # the cancel button posts the form with its CSRF token
    page.goto(f"{base}/jobs/{mine}")
    page.get_by_role("button", name="Cancel job").click()
    expect(page.locator("#job-live")).to_have_attribute("data-status", "cancelled")
    page.set_viewport_size(PHONE)
    page.screenshot(path=screenshots / "job-cancelled-390.png", full_page=True)

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{base}/login")
    page.goto(f"{base}/")
    expect(page).to_have_url(re.compile(r"/login"))
    context.close()
