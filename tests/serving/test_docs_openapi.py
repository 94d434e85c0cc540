"""The OpenAPI document and the docs pages, without models (no lifespan runs): the API key is a security
scheme, every operation has an example response that its response model accepts, the error statuses each
operation can answer are documented, and /docs loads its assets from the app itself."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from clm.config import load_config
from serving.app import create_app
from serving.openapi import RESPONSE_EXAMPLES
from serving.schemas import BatchResponse, Decision, ModelsResponse, OutcomeResponse, ReloadResponse
from serving.settings import ServingSettings

MODELS = {
    ("get", "/v1/users/{user_id}/decision"): Decision,
    ("post", "/v1/decisions"): Decision,
    ("post", "/v1/decisions/batch"): BatchResponse,
    ("post", "/v1/outcomes"): OutcomeResponse,
    ("get", "/v1/models"): ModelsResponse,
    ("post", "/v1/admin/reload"): ReloadResponse,
}


@pytest.fixture(scope="module")
def client():
    app = create_app(load_config(), ServingSettings(api_keys={"k": ["score"]}))
    return TestClient(app)  # not entered: no lifespan, no models, nothing opened


@pytest.fixture(scope="module")
def spec(client) -> dict:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def operations(spec: dict):
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            yield method, path, operation


def test_the_api_key_is_a_security_scheme_on_every_protected_operation(spec: dict) -> None:
    assert spec["components"]["securitySchemes"]["ApiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": spec["components"]["securitySchemes"]["ApiKey"]["description"],
    }
    protected = {(m, p) for m, p, op in operations(spec) if op.get("security") == [{"ApiKey": []}]}
    assert protected == {key for key in MODELS} | {("get", "/v1/models")}
    for _method, path, operation in operations(spec):
        assert not any(p["name"].lower() == "x-api-key" for p in operation.get("parameters", [])), path


def test_every_operation_has_an_example_response_its_model_accepts(spec: dict) -> None:
    documented = set()
    for method, path, operation in operations(spec):
        content = operation["responses"]["200"]["content"]
        [(media_type, body)] = content.items()
        assert "example" in body, (method, path)
        documented.add((method, path))
        if (method, path) in MODELS:
            MODELS[method, path].model_validate(body["example"])
        elif media_type == "application/json":
            assert isinstance(body["example"], dict) and body["example"]
    assert documented == set(RESPONSE_EXAMPLES)


def test_request_bodies_have_examples(spec: dict) -> None:
    schemas = spec["components"]["schemas"]
    for _method, path, operation in operations(spec):
        if "requestBody" in operation:
            ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            assert schemas[ref.rsplit("/", 1)[1]].get("examples"), path


@pytest.mark.parametrize(
    ("method", "path", "statuses"),
    [
        ("get", "/v1/users/{user_id}/decision", {"200", "401", "403", "404", "422", "503"}),
        ("post", "/v1/decisions", {"200", "401", "403", "413", "422", "503"}),
        ("post", "/v1/decisions/batch", {"200", "401", "403", "413", "422", "503"}),
        ("post", "/v1/outcomes", {"200", "401", "403", "404", "413", "422"}),
        ("get", "/v1/models", {"200", "401", "403", "503"}),
        ("post", "/v1/admin/reload", {"200", "401", "403", "503"}),
        ("get", "/healthz", {"200"}),
    ],
)
def test_error_statuses_are_documented(spec: dict, method: str, path: str, statuses: set[str]) -> None:
    responses = spec["paths"][path][method]["responses"]
    assert statuses <= set(responses), sorted(statuses - set(responses))
    for status in statuses - {"200"}:
        [body] = responses[status]["content"].values()
        assert responses[status]["description"] and body["example"]["detail"], (path, status)


def test_the_docs_page_loads_its_assets_from_the_app(client) -> None:
    html = client.get("/docs").text
    assets = re.findall(r'(?:src|href)="([^"]+)"', html) + re.findall(r"url: '([^']+)'", html)
    assert assets and all(asset.startswith("/") and not asset.startswith("//") for asset in assets), assets
    assert "cdn" not in html.lower() and "https://" not in html
    for asset in assets:
        assert client.get(asset).status_code == 200, asset
