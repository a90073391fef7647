"""The dashboard's pages under ``plateau serve``: sign-in, isolation, CSRF, headers."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import sqlalchemy as sa
from web_helpers import csrf_of, sign_in

from app.db.models import ApiKey
from app.db.session import session_scope
from app.web.sessions import COOKIE

DIGITS = {"dataset": {"uri": "sklearn:digits"}}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def submit(client, key: str, body: dict = DIGITS) -> str:
    response = client.post("/v1/jobs", json=body, headers=bearer(key))
    assert response.status_code == 202, response.text
    return response.json()["id"]


def test_a_browser_without_a_session_is_sent_to_the_login_page(client):
    page = client.get("/jobs/abc?x=1", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=/jobs/abc%3Fx%3D1"

    fragment = client.get("/fragments/jobs", headers={"HX-Request": "true"})
    assert fragment.status_code == 401
    assert fragment.headers["HX-Redirect"].startswith("/login?next=/fragments/jobs")

    login = client.get("/login")
    assert login.status_code == 200 and 'type="password"' in login.text


def test_signing_in_sets_an_httponly_strict_cookie_that_only_names_the_key(
    client, new_key
):
    key = new_key("acme")
    sign_in(client, key)

    cookie = next(c for c in client.cookies.jar if c.name == COOKIE)
    assert cookie.has_nonstandard_attr("HttpOnly")
    assert cookie.get_nonstandard_attr("SameSite").lower() == "strict"
    assert not cookie.secure  # http: Secure would stop the browser sending it
    assert key not in cookie.value and key.split("_", 2)[2] not in cookie.value
    page = client.get("/")
    assert page.status_code == 200 and "Signed in as <strong>acme</strong>" in page.text


def test_the_cookie_is_secure_over_https(settings, new_key):
    from fastapi.testclient import TestClient

    from app.main import create_app

    with TestClient(create_app(settings), base_url="https://testserver") as https:
        key = new_key("acme")
        page = https.get("/login")
        response = https.post(
            "/login",
            data={"csrf_token": csrf_of(page.text), "api_key": key, "next": "/"},
            follow_redirects=False,
        )
        assert "secure" in response.headers["set-cookie"].lower()


def test_a_bad_key_is_refused_and_next_never_leaves_the_site(client, new_key):
    page = client.get("/login")
    refused = client.post(
        "/login",
        data={"csrf_token": csrf_of(page.text), "api_key": "plt_nope", "next": "/"},
    )
    assert refused.status_code == 401 and "not valid" in refused.text

    key = new_key("acme")
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        page = client.get("/login")
        response = client.post(
            "/login",
            data={"csrf_token": csrf_of(page.text), "api_key": key, "next": target},
            follow_redirects=False,
        )
        assert response.headers["location"] == "/", target


def test_another_tenants_job_is_404_on_every_page_and_fragment(client, new_key):
    alice, bob = new_key("alice"), new_key("bob")
    theirs = submit(client, alice, {**DIGITS, "training": {"epochs": 7}})
    mine = submit(client, bob)
    sign_in(client, bob)

    assert client.get(f"/jobs/{theirs}").status_code == 404
    assert client.get(f"/fragments/jobs/{theirs}").status_code == 404
    listing = client.get("/").text + client.get("/fragments/jobs").text
    assert mine in listing and theirs not in listing
    # "run again" from someone else's job starts from the defaults, not theirs
    form = client.get(f"/jobs/new?from={theirs}").text
    assert 'name="training.epochs" value="10"' in form
    token = csrf_of(client.get(f"/jobs/{mine}").text)
    cancel = client.post(f"/jobs/{theirs}/cancel", data={"csrf_token": token})
    assert cancel.status_code == 404
    status = client.get(f"/v1/jobs/{theirs}", headers=bearer(alice)).json()["status"]
    assert status == "queued"
    assert client.get("/jobs/not-a-uuid").status_code == 404


def test_forms_need_this_sessions_csrf_token_and_this_origin(client, new_key):
    key = new_key("acme")
    sign_in(client, key)
    token = csrf_of(client.get("/jobs/new").text)
    form = {"dataset.uri": "sklearn:digits"}

    assert client.post("/jobs/new", data=form).status_code == 403
    assert client.post("/jobs/new", data={**form, "csrf_token": "x"}).status_code == 403
    foreign = client.post(
        "/jobs/new",
        data={**form, "csrf_token": token},
        headers={"Origin": "http://evil.example"},
    )
    assert foreign.status_code == 403
    ok = client.post(
        "/jobs/new", data={**form, "csrf_token": token}, follow_redirects=False
    )
    assert ok.status_code == 303


def test_the_api_takes_the_session_cookie_and_its_csrf_token(client, new_key):
    alice, bob = new_key("alice"), new_key("bob")
    submit(client, alice)
    sign_in(client, bob)
    token = csrf_of(client.get("/").text)

    assert client.get("/v1/jobs").json()["items"] == []
    refused = client.post("/v1/jobs", json=DIGITS)
    assert refused.status_code == 403 and "X-CSRF-Token" in refused.json()["detail"]
    made = client.post("/v1/jobs", json=DIGITS, headers={"X-CSRF-Token": token})
    assert made.status_code == 202
    assert [j["id"] for j in client.get("/v1/jobs").json()["items"]] == [
        made.json()["id"]
    ]


def test_revoking_the_key_ends_its_dashboard_sessions(client, new_key, settings):
    key = new_key("acme")
    sign_in(client, key)
    assert client.get("/", follow_redirects=False).status_code == 200

    with session_scope(settings.sqlalchemy_url) as db:
        db.execute(
            sa.update(ApiKey)
            .where(ApiKey.prefix == key.split("_")[1])
            .values(revoked_at=datetime.now(timezone.utc))
        )

    assert client.get("/", follow_redirects=False).status_code == 303
    assert client.get("/v1/jobs").status_code == 401


def test_a_forged_cookie_signs_nobody_in(client, new_key):
    key = new_key("acme")
    sign_in(client, key)
    value = client.cookies[COOKIE]
    client.cookies.clear()
    client.cookies.set(COOKIE, value[:-3] + "AAA")

    assert client.get("/", follow_redirects=False).status_code == 303
    assert client.get("/v1/jobs").status_code == 401


def test_signing_out_ends_the_session(client, new_key):
    sign_in(client, new_key("acme"))
    token = csrf_of(client.get("/").text)

    out = client.post("/logout", data={"csrf_token": token}, follow_redirects=False)

    assert out.headers["location"] == "/login"
    assert client.get("/", follow_redirects=False).status_code == 303


def test_pages_forbid_framing_and_foreign_scripts_and_are_not_cached(client, new_key):
    sign_in(client, new_key("acme"))
    page = client.get("/")

    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert page.headers["cache-control"] == "no-store"
    # everything the page loads comes from this server (no CDN, works offline)
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and not [s for s in sources if s.startswith(("http:", "https:"))]
    for path in (
        "/static/vendor/htmx/htmx.min.js",
        "/static/vendor/uplot/uPlot.iife.min.js",
        "/static/vendor/htmx/LICENSE",
        "/static/vendor/uplot/LICENSE",
        "/static/app.js",
    ):
        assert client.get(path).status_code == 200, path


def test_a_form_larger_than_the_limit_is_refused_before_it_is_read_whole(client):
    response = client.post(
        "/login",
        content=b"api_key=" + b"x" * 70_000,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )

    assert response.status_code == 413


def test_a_link_from_another_site_reloads_once_instead_of_signing_out(client):
    # browsers leave SameSite=Strict cookies off such a request
    cross_site = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}

    bounce = client.get("/jobs/abc", headers=cross_site, follow_redirects=False)

    assert bounce.status_code == 200
    assert '<meta http-equiv="refresh" content="0">' in bounce.text
    assert "set-cookie" not in bounce.headers  # the session it lacks stays intact
    same_site = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "navigate"}
    assert client.get("/", headers=same_site, follow_redirects=False).status_code == 303
