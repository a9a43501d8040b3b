"""openapi.yaml is kept true: it validates as OpenAPI 3.1, every route of the app is in it
with the same methods, and every path it names either has a route or is listed below as
still being built. The broker serves the same bytes at /openapi.yaml."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from openapi_spec_validator import validate
from starlette.routing import Route

from broker.app import create_app
from broker.endpoints.discovery import metadata
from broker.grants.registry import GRANT_TYPES, GRANTS
from broker.settings import load_settings
from tests.support.broker import broker_with_emulator, new_kek
from tests.support.clock import MovableClock

ROOT = Path(__file__).resolve().parents[2]
SPEC_PATH = ROOT / "openapi.yaml"
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}

#: Paths of the contract the spec already describes but whose routes other branches are
#: building. A path here with no route is fine; a spec path with no route and not listed
#: here is an error. Remove entries as the routes land (a stale entry is reported below).
PENDING_ROUTES: frozenset[str] = frozenset()


def load_spec() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text())
    return spec


def spec_operations(spec: dict[str, Any]) -> dict[str, set[str]]:
    return {
        path: {m.upper() for m in item if m in HTTP_METHODS} for path, item in spec["paths"].items()
    }


def app_operations() -> dict[str, set[str]]:
    settings = load_settings(issuer="http://127.0.0.1:1", secret_key=new_kek())
    app = create_app(settings, housekeeping=False)
    found: dict[str, set[str]] = {}
    for route in app.routes:
        # Mounts (static assets of the login page) are not API operations.
        if isinstance(route, Route):
            # Starlette answers HEAD for every GET route by itself.
            found.setdefault(route.path, set()).update((route.methods or set()) - {"HEAD"})
    return found


def test_spec_is_valid_openapi_31() -> None:
    spec = load_spec()
    assert spec["openapi"].startswith("3.1")
    validate(spec)


def test_every_route_is_in_the_spec_with_the_same_methods() -> None:
    spec, app = spec_operations(load_spec()), app_operations()
    missing = {path: sorted(methods) for path, methods in app.items() if path not in spec}
    assert not missing, f"routes the spec lacks: {missing}"
    differing = {
        path: {"app": sorted(methods), "spec": sorted(spec[path])}
        for path, methods in app.items()
        if spec[path] != methods
    }
    assert not differing, f"methods differ between app and spec: {differing}"


def test_every_spec_path_has_a_route_or_is_pending() -> None:
    spec, app = spec_operations(load_spec()), app_operations()
    orphans = sorted(set(spec) - set(app) - PENDING_ROUTES)
    assert not orphans, f"spec paths with no route (add the route or list it as pending): {orphans}"


def test_pending_list_names_only_spec_paths() -> None:
    assert set(spec_operations(load_spec())) >= PENDING_ROUTES


def documented_grants() -> dict[str, set[str]]:
    """grant_type -> the properties its TokenRequest variant documents."""
    schemas = load_spec()["components"]["schemas"]
    grants: dict[str, set[str]] = {}
    for variant in schemas["TokenRequest"]["oneOf"]:
        name = variant["$ref"].rsplit("/", 1)[1]
        properties: set[str] = set()
        grant = None
        for part in schemas[name]["allOf"]:
            if "$ref" in part:
                part = schemas[part["$ref"].rsplit("/", 1)[1]]
            properties.update(part.get("properties", {}))
            if "grant_type" in part.get("properties", {}):
                grant = part["properties"]["grant_type"]["const"]
        assert grant is not None, name
        grants[grant] = properties
    return grants


def test_token_endpoint_documents_every_contract_grant() -> None:
    assert set(documented_grants()) >= {
        "password",
        "refresh_token",
        "authorization_code",
        "client_credentials",
        "urn:ietf:params:oauth:grant-type:token-exchange",
    }


def test_token_endpoint_documents_every_registered_grant_and_its_parameters() -> None:
    """The registry (broker/grants/registry.py) and the spec name the same grants, and
    each grant's declared parameters are documented for it."""
    documented = documented_grants()
    assert set(documented) == set(GRANT_TYPES)
    for spec in GRANTS:
        missing = set(spec.parameters) - documented[spec.grant_type]
        assert not missing, f"{spec.grant_type}: undocumented parameters {sorted(missing)}"


def test_discovery_lists_the_registered_grants() -> None:
    doc = metadata("http://127.0.0.1:1", signing_alg="RS256", openid=True)
    assert doc["grant_types_supported"] == list(GRANT_TYPES)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    with broker_with_emulator(tmp_path, MovableClock()) as (running, _emu, _site):
        yield running.url


def test_served_document_is_the_repo_file_and_discovery_points_at_it(served: str) -> None:
    response = httpx.get(f"{served}/openapi.yaml")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/yaml")
    assert response.content == SPEC_PATH.read_bytes()
    meta = httpx.get(f"{served}/.well-known/openid-configuration").json()
    assert meta["service_documentation"] == f"{served}/openapi.yaml"
