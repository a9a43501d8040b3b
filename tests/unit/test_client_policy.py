"""`broker.client_policy`: every rule on a client registration, field by field, as typed
errors naming the field (what `clients add`/`update` print and an admin API would send)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from broker.client_policy import (
    KNOWN_SCOPES,
    TOKEN_EXCHANGE,
    ClientPolicyError,
    Limits,
    check_client,
)
from broker.redirects import private_use_scheme, redirect_uri_allowed
from broker.store import ClientRecord

LIMITS = Limits(audiences=("dna-api", "review-api"))
WEB = ClientRecord(
    client_id="web",
    public=True,
    grant_types=("authorization_code", "refresh_token"),
    redirect_uris=("https://app.example.com/cb",),
)
BACKEND = ClientRecord(
    client_id="svc",
    public=False,
    grant_types=(TOKEN_EXCHANGE, "client_credentials"),
    audiences=("dna-api",),
    may_introspect=True,
    may_exchange_shotgrid=True,
)


def refused(record: ClientRecord, **kw: Any) -> ClientPolicyError:
    with pytest.raises(ClientPolicyError) as info:
        check_client(record, LIMITS, **kw)
    return info.value


def test_the_demo_clients_pass() -> None:
    from broker.demo import demo_clients

    for client in demo_clients():
        check_client(client, LIMITS)


GOOD_REDIRECTS = [
    "https://app.example.com/cb",
    "https://app.example.com:8443/cb?tenant=1",
    "https://app.example.com",
    "http://127.0.0.1/callback",
    "http://127.0.0.1:8080/callback",
    "http://[::1]/callback",
    "http://localhost/callback",
    "com.example.app:/oauth2redirect",
    "com.example.app:/cb?x=1",
]
BAD_REDIRECTS = [
    "not-a-url",
    "/relative/path",
    "//app.example.com/cb",
    "http://evil.example.com/cb",
    "http://192.168.1.10/cb",
    "https://app.example.com/cb#fragment",
    "https://app.example.com/cb#",
    "http://127.0.0.1/cb#x",
    "https://user:pw@app.example.com/cb",
    "https://app.example.com:99999/cb",
    "https:///cb",
    "https://app example.com/cb",
    "https://app.example.com/c\\b",
    "javascript:alert(1)",
    "data:text/html,hi",
    "file:///etc/passwd",
    "myapp:/cb",
    "com.example.app://cb",
    "com.example.app:cb",
    "Com.Example.App:/cb",
    "https://app.example.com/" + "a" * 2000,
    "",
]


@pytest.mark.parametrize("uri", GOOD_REDIRECTS)
@pytest.mark.parametrize("field", ["redirect_uris", "post_logout_redirect_uris"])
def test_redirect_uris_accepted(field: str, uri: str) -> None:
    check_client(replace(WEB, **{field: (*WEB.redirect_uris, uri)}), LIMITS)


@pytest.mark.parametrize("uri", BAD_REDIRECTS)
@pytest.mark.parametrize("field", ["redirect_uris", "post_logout_redirect_uris"])
def test_redirect_uris_refused(field: str, uri: str) -> None:
    err = refused(replace(WEB, **{field: (*WEB.redirect_uris, uri)}))
    assert err.field == field
    assert err.error == "invalid_redirect_uri"


@pytest.mark.parametrize("uri", GOOD_REDIRECTS)
def test_every_accepted_redirect_uri_matches_itself_at_authorize(uri: str) -> None:
    """What registration accepts, the authorization endpoint can match: a native app's
    private-use URI (no host) included."""
    assert redirect_uri_allowed(uri, [uri])


def test_private_use_uris_match_exactly_only() -> None:
    registered = ["com.example.app:/cb"]
    assert private_use_scheme("com.example.app:/cb") == "com.example.app"
    for other in ("com.example.app:/cb2", "com.example.app:/cb#x", "com.evil.app:/cb"):
        assert not redirect_uri_allowed(other, registered)


def test_authorization_code_needs_a_redirect_uri() -> None:
    err = refused(replace(WEB, redirect_uris=()))
    assert (err.field, err.error) == ("redirect_uris", "invalid_redirect_uri")


@pytest.mark.parametrize(
    "origin",
    ["https://app.example.com", "https://app.example.com:8443", "http://127.0.0.1:3000"],
)
def test_origins_accepted(origin: str) -> None:
    check_client(replace(WEB, allowed_origins=(origin,)), LIMITS)


@pytest.mark.parametrize(
    "origin",
    [
        "https://app.example.com/",
        "https://app.example.com/path",
        "https://app.example.com?x=1",
        "https://app.example.com#x",
        "http://app.example.com",
        "app.example.com",
        "ftp://app.example.com",
        "https://user@app.example.com",
        "https://",
        "*",
    ],
)
def test_origins_refused(origin: str) -> None:
    err = refused(replace(WEB, allowed_origins=(origin,)))
    assert (err.field, err.error) == ("allowed_origins", "invalid_client_metadata")


USER_SCOPES = tuple(s for s in KNOWN_SCOPES if s != "admin")


@pytest.mark.parametrize("scopes", [("openid",), USER_SCOPES, ("email", "offline_access")])
def test_scopes_accepted(scopes: tuple[str, ...]) -> None:
    check_client(replace(WEB, scopes=scopes), LIMITS)


def test_the_admin_right_needs_a_confidential_client_credentials_client() -> None:
    check_client(replace(BACKEND, scopes=KNOWN_SCOPES), LIMITS)
    for record in (
        replace(WEB, scopes=("openid", "admin")),  # public
        replace(BACKEND, scopes=("admin",), grant_types=(TOKEN_EXCHANGE,)),  # no such grant
    ):
        err = refused(record)
        assert (err.field, err.error) == ("scopes", "invalid_client_metadata")


@pytest.mark.parametrize(
    "scope", ["bad scope", "openid profile", "", 'quo"te', "back\\slash", "unknown", "é"]
)
def test_scopes_refused(scope: str) -> None:
    assert refused(replace(WEB, scopes=("openid", scope))).field == "scopes"


def test_known_scopes_cover_what_the_server_serves() -> None:
    from broker.server import SCOPES_SUPPORTED

    assert set(SCOPES_SUPPORTED) <= set(KNOWN_SCOPES)


def test_audiences_must_be_configured() -> None:
    check_client(replace(BACKEND, audiences=("dna-api", "review-api")), LIMITS)
    err = refused(replace(BACKEND, audiences=("dna-api", "billing-api")))
    assert err.field == "audiences" and "billing-api" in str(err)


@pytest.mark.parametrize(
    ("grants", "fragment"), [((), "at least one"), (("password", "magic"), "unknown grant")]
)
def test_grants_refused(grants: tuple[str, ...], fragment: str) -> None:
    err = refused(replace(BACKEND, grant_types=grants))
    assert err.field == "grant_types" and fragment in str(err)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"grant_types": ("client_credentials",)}, "grant_types"),
        ({"grant_types": (TOKEN_EXCHANGE,)}, "grant_types"),
        ({"may_introspect": True}, "may_introspect"),
        ({"may_exchange_shotgrid": True}, "may_exchange_shotgrid"),
    ],
)
def test_public_clients_get_no_confidential_rights(change: dict[str, Any], field: str) -> None:
    public = ClientRecord(client_id="cli", public=True, grant_types=("password",))
    check_client(public, LIMITS)
    assert refused(replace(public, **change)).field == field


def test_shotgrid_exchange_needs_the_exchange_grant() -> None:
    err = refused(replace(BACKEND, grant_types=("client_credentials",)))
    assert err.field == "may_exchange_shotgrid"


@pytest.mark.parametrize("seconds", [None, 0, 1, 3600])
def test_exchange_lifetime_accepted(seconds: int | None) -> None:
    check_client(replace(BACKEND, max_exchange_lifetime=seconds), LIMITS)


def test_negative_exchange_lifetime_refused() -> None:
    assert refused(replace(BACKEND, max_exchange_lifetime=-3)).field == "max_exchange_lifetime"


@pytest.mark.parametrize("client_id", ["", "a b", "tab\there", "x" * 201, "nl\n"])
def test_client_ids_refused(client_id: str) -> None:
    assert refused(replace(WEB, client_id=client_id)).field == "client_id"


def test_names_refused() -> None:
    assert refused(replace(WEB, name="x" * 201)).field == "name"
    assert refused(replace(WEB, name="line\nbreak")).field == "name"


def test_an_update_checks_changed_fields_and_every_relation() -> None:
    """An old value (here an audience no longer configured) does not block an unrelated
    change, but a change that breaks a relation between fields is refused."""
    stale = replace(BACKEND, audiences=("retired-api",))
    check_client(stale, LIMITS, changed={"may_introspect"})
    assert refused(stale, changed={"audiences"}).field == "audiences"
    public = ClientRecord(client_id="cli", public=True, grant_types=("password",))
    assert refused(replace(public, may_introspect=True), changed={"scopes"}).field == (
        "may_introspect"
    )


@pytest.mark.parametrize(
    "uri",
    [
        "https://dna.example.com/auth/backchannel-logout",
        "https://dna.example.com:8443/bc?tenant=a",
        "http://127.0.0.1:9000/bc",
        "http://localhost/bc",
        "http://[::1]:9000/bc",
    ],
)
def test_backchannel_logout_uri_accepted(uri: str) -> None:
    check_client(replace(BACKEND, backchannel_logout_uri=uri), LIMITS)


@pytest.mark.parametrize(
    "uri",
    [
        "http://dna.example.com/bc",
        "https://dna.example.com/bc#x",
        "https://user:pw@dna.example.com/bc",
        "dna.example.com/bc",
        "com.example.app:/bc",
        "https://",
        "https://dna.example.com/b\\c",
        "",
    ],
)
def test_backchannel_logout_uri_refused(uri: str) -> None:
    error = refused(replace(BACKEND, backchannel_logout_uri=uri))
    assert (error.field, error.error) == ("backchannel_logout_uri", "invalid_client_metadata")
