"""Health checks and API docs: reachable without a key, and the docs work offline."""

from __future__ import annotations

import pytest
from django.db import OperationalError

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/healthz", "/healthz/"])
def test_healthz_needs_no_key(anon_client, path):
    response = anon_client.get(path)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_reports_database(anon_client):
    response = anon_client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["status"] == "ready"


def test_readyz_is_503_when_database_is_unreachable(anon_client, monkeypatch):
    fired = []

    def refuse(*args, **kwargs):
        fired.append("cursor")
        raise OperationalError("could not connect")

    monkeypatch.setattr("flowplatform.health.connection.cursor", refuse)
    response = anon_client.get("/readyz")
    assert fired, "the injected failure did not happen"
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "not_ready"


def test_swagger_ui_is_served_from_local_static_files(anon_client):
    response = anon_client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in html
    assert "cdn.jsdelivr.net" not in html


def test_redoc_is_served_from_local_static_files(anon_client):
    html = anon_client.get("/api/redoc/").content.decode()
    assert "/static/drf_spectacular_sidecar/redoc/" in html
    assert "cdn.jsdelivr.net" not in html
