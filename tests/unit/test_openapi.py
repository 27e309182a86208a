"""The OpenAPI documents describe exactly the routes the services serve."""

from __future__ import annotations

import json

import pytest
from aiohttp import web

from qfailover.app import create_app as failover_app
from qregistry.app import create_app as registry_app
from qscheduler.app import create_app as scheduler_app
from qshared.config import Settings
from qshared.openapi import openapi_document

UNDOCUMENTED = {"/metrics", "/openapi.json", "/admin/metrics"}  # Prometheus text, not JSON


def served(app: web.Application) -> set[tuple[str, str]]:
    out = set()
    for route in app.router.routes():
        if route.method in ("HEAD", "OPTIONS"):
            continue
        path = route.resource.canonical if route.resource else ""
        if path not in UNDOCUMENTED:
            out.add((route.method.lower(), path))
    return out


@pytest.mark.parametrize(("owner", "factory"), [("scheduler", scheduler_app),
                                                ("registry", registry_app),
                                                ("failover", failover_app)])
def test_document_matches_the_routes(owner, factory):
    app = factory(Settings(database_url="postgresql://unused/x"))
    doc = openapi_document(owner)
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert documented == served(app)


def test_every_reference_resolves_and_the_document_is_json():
    doc = openapi_document()
    text = json.dumps(doc)
    schemas = doc["components"]["schemas"]
    for ref in {part.split('"')[0] for part in text.split('"$ref": "#/components/schemas/')[1:]}:
        assert ref in schemas, ref
    job_in = schemas["JobIn"]
    assert job_in["additionalProperties"] is False
    assert "task" in job_in["required"]
    post = doc["paths"]["/api/v1/jobs"]["post"]
    assert set(post["responses"]) == {"201", "400", "401", "413"}
    assert post["security"] == [{"bearer": []}]
    assert "security" not in doc["paths"]["/health"]["get"]
