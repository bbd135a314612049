"""Page tests post forms directly: an app on the same database with CSRF off, and sign-in."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import PASSWORD, make_test_app


@pytest.fixture
def html_app(app: Flask) -> Iterator[Flask]:
    """The same database, with CSRF off so that forms can be posted directly."""
    other = make_test_app(app.config["DATABASE_URL"], WTF_CSRF_ENABLED=False)
    yield other
    other.extensions["db"].engine.dispose()


def signed_in(application: Flask, username: str) -> FlaskClient:
    client = application.test_client()
    response = client.post("/login", data={"username": username, "password": PASSWORD})
    assert response.status_code == 302, response.get_data(as_text=True)
    return client
