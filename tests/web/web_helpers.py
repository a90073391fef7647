"""Helpers of the dashboard tests (fixtures are in ``conftest.py``)."""

from __future__ import annotations

import re

#: a small real job: the digits data set, two epochs, ten orderings
DIGITS_FORM = {
    "dataset.uri": "sklearn:digits",
    "training.epochs": "2",
    "analysis.permutations": "10",
}


def csrf_of(html: str) -> str:
    """The CSRF token in a rendered form."""
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def sign_in(client, key: str) -> None:
    """Sign the TestClient in through the login form."""
    page = client.get("/login")
    response = client.post(
        "/login",
        data={"csrf_token": csrf_of(page.text), "api_key": key, "next": "/"},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
