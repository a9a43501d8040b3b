"""The REST surface: `POST /api/v1/auth/access_token` and the reads the broker needs.

Follows research §1, §2 and the emulator spec §8.2/§8.3; both `/api/v1` and `/api/v1.1`
are mounted (they are the same API on a real site). CORS preflights (§1.1) are not
emulated: no browser talks to ShotGrid directly in our setup.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from shotgrid_emulator import entities
from shotgrid_emulator.site import Principal, ShotGridFault, Site, rest_error, sg_json

_FORM = "application/x-www-form-urlencoded"
_ANY = ["GET", "POST", "PUT", "PATCH", "DELETE"]
_GRANTS = ("password", "client_credentials", "session_token", "refresh_token", "refresh")
_SUDO_SCOPE = re.compile(r"^sudo_as_login:(.+)$")
_MISSING_ARGS = "Missing or invalid authentication arguments"
_REST_PATHS = {
    "HumanUser": "human_users",
    "Project": "projects",
    "EventLogEntry": "event_log_entries",
    "PermissionRuleSet": "permission_rule_sets",
}
# Both the path name and the type name work; `humanusers` does not (research §2).
_ENTITY_TYPES = {
    **{path: kind for kind, path in _REST_PATHS.items() if kind in entities.ENTITY_TYPES},
    **{kind: kind for kind in entities.ENTITY_TYPES},
}
_ARRAY = "application/vnd+shotgun.api3_array+json"
_HASH = "application/vnd+shotgun.api3_hash+json"


def _form_params(request: Request, body: bytes) -> dict[str, str]:
    """Query string and form body merged (both forms are used by official clients)."""
    ctype = request.headers.get("content-type")
    media = (ctype or "").split(";", 1)[0].strip().lower()
    if ctype is not None and media != _FORM:
        if media == "application/json":
            try:
                json.loads(body)
            except ValueError as exc:
                # A real site parses JSON bodies before checking the media type (§1.1).
                msg = getattr(exc, "msg", str(exc))
                raise ShotGridFault(
                    103, "Invalid JSON body", source={"body": f"{msg} at line 1, column 1"}
                ) from exc
            raise ShotGridFault(
                103,
                "Unsupported Content-Type 'application/json'",
                status=415,
                source={"content_type": f"Content-Type must be one of: '{_FORM}'"},
            )
        raise ShotGridFault(
            103,
            f"Unsupported Content-Type '{media}'",
            status=415,
            source={"content_type": f"Content-Type must be one of: '{_FORM}'."},
        )
    params = dict(request.query_params)
    params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    return params


def _required(params: dict[str, str], *names: str) -> list[str]:
    values = [params.get(n, "") for n in names]
    if not all(values):
        raise ShotGridFault(103, _MISSING_ARGS, source={})  # code ASSUMED (§8.2)
    return values


def token_endpoint(site: Site) -> Callable[[Request], Any]:
    async def token(request: Request) -> Response:
        body = await request.body()
        try:
            params: dict[str, str] | ShotGridFault = _form_params(request, body)
        except ShotGridFault as fault:
            params = fault
        grant = params.get("grant_type", "") if isinstance(params, dict) else ""
        names = ("token", f"token:{grant if grant in _GRANTS else 'unsupported'}")
        injected = await site.enter(request, *names)
        if injected is not None:
            return injected
        try:
            if isinstance(params, ShotGridFault):
                raise params
            answer = _grant(site, params, request.headers.get("host", "localhost"))
        except ShotGridFault as fault:
            return rest_error(fault)
        return sg_json(answer)

    return token


def _grant(site: Site, params: dict[str, str], host: str) -> dict[str, Any]:
    grant = params.get("grant_type", "")
    session_uuid = params.get("session_uuid") or None
    if grant in ("refresh_token", "refresh"):
        # `refresh` is what shotgun-nodejs sends; UNKNOWN on real sites, accepted as alias.
        (refresh_token,) = _required(params, "refresh_token")
        return site.refresh(refresh_token, host=host)
    if grant == "password":
        username, password = _required(params, "username", "password")
        principal = Principal(user=site.password_login(username, password))
        auth_type = "password"  # ASSUMED claim value (§1.3)
    elif grant == "client_credentials":
        client_id, client_secret = _required(params, "client_id", "client_secret")
        principal = Principal(script=site.script_login(client_id, client_secret))
        auth_type = "api_key"
    elif grant == "session_token":
        (session_token,) = _required(params, "session_token")
        user = site.session_user(session_token)
        if user is None:
            raise ShotGridFault(  # code ASSUMED
                102, f"Can't authenticate session token ending with '{session_token[-4:]}'"
            )
        principal = Principal(user=user)
        auth_type = "session_token"
    else:
        raise ShotGridFault(103, "Unsupported grant_type", source={})
    # Only the OAuth scope string sudoes; a bare `sudo_as_login` field is ignored (§1.2).
    match = _SUDO_SCOPE.match(params.get("scope", ""))
    if match:
        principal = site.sudo(principal, match.group(1))
    return site.issue(principal, auth_type=auth_type, session_uuid=session_uuid, host=host)


# ---- resources ------------------------------------------------------------------------


def _unauthorized() -> Response:
    # The real body for a bad bearer is UNKNOWN (research §9.4); this is §8.3's choice.
    return rest_error(ShotGridFault(102, "Unauthorized", status=401))


def _not_found(title: str = "Not Found", detail: str | None = None, code: int = 103) -> Response:
    return rest_error(ShotGridFault(code, title, status=404, detail=detail))


def _authenticate(site: Site, request: Request) -> Principal | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return site.bearer(token.strip())


def _path(kind: str) -> str:
    return _REST_PATHS.get(kind, kind)


def _self(kind: str, item_id: int) -> str:
    return f"/api/v1/entity/{_path(kind)}/{item_id}"


def _render(kind: str, record: dict[str, Any], fields: Sequence[str] | None) -> dict[str, Any]:
    """A flat record as REST's `{type, attributes, relationships, id, links}` (research §2):
    entity links go under `relationships`, never `attributes`."""
    base = _self(kind, record["id"])
    links = entities.LINK_FIELDS.get(kind, {})
    attributes: dict[str, Any] = {}
    relationships: dict[str, Any] = {}
    for name, value in record.items():
        if name in ("type", "id") or (fields is not None and name not in fields):
            continue
        if name not in links:
            attributes[name] = value
        elif links[name]:  # multi-entity
            relationships[name] = {
                "data": [_rest_link(v) for v in value],
                "links": {"self": f"{base}/relationships/{name}"},
            }
        else:
            ref: dict[str, str] = {"self": f"{base}/relationships/{name}"}
            if value is not None:
                ref["related"] = _self(value["type"], value["id"])
            # ASSUMED: a null link reads {"data": null} with its self link.
            relationships[name] = {"data": _rest_link(value) if value else None, "links": ref}
    return {
        "type": kind,
        "attributes": attributes,
        "relationships": relationships,
        "id": record["id"],
        "links": {"self": base},
    }


def _rest_link(value: dict[str, Any]) -> dict[str, Any]:
    return {"id": value["id"], "name": value["name"], "type": value["type"]}


def _field_list(raw: Any) -> list[str] | None:
    """`fields` as a comma string or a list; absent or `*` means every field we model
    (ASSUMED); unknown names are dropped silently (research §2)."""
    if raw is None:
        return None
    names = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(names, list):
        raise ShotGridFault(103, "Request Parameters invalid.", source={"fields": "invalid"})
    cleaned = [str(n).strip() for n in names if str(n).strip()]
    return None if cleaned == ["*"] else cleaned


def _sort_keys(raw: Any) -> list[tuple[str, bool]]:
    """`sort=id,-created_at`: a leading `-` is descending (research §2's REST convention)."""
    if raw is None:
        return []
    if not isinstance(raw, str):
        raise ShotGridFault(103, "Request Parameters invalid.", source={"sort": "invalid"})
    return [(k.strip().lstrip("-"), k.strip().startswith("-")) for k in raw.split(",") if k.strip()]


def _page(number: Any, size: Any) -> tuple[int, int]:
    try:
        page, per_page = int(number), int(size)
    except (TypeError, ValueError):
        page, per_page = 0, 0
    if per_page < 1:
        # The recorded title and source of a live site (third-party probe, paging).
        raise ShotGridFault(
            103,
            "Request Parameters invalid.",
            source={"page": {"size": ["size must be greater than 0"]}},
        )
    if page < 1 or per_page > 500:
        raise ShotGridFault(103, "Invalid paging parameters")  # ASSUMED
    return page, per_page


def _query_filter(kind: str, record: dict[str, Any], name: str, wanted: str) -> bool:
    """`filter[field]=value`, an exact match (research §2)."""
    if name not in record:
        raise ShotGridFault(103, f"API read() {kind}.{name} doesn't exist.")
    value = record[name]
    if isinstance(value, dict):
        return str(value.get("id")) == wanted
    if isinstance(value, list):
        return any(isinstance(v, dict) and str(v.get("id")) == wanted for v in value)
    if isinstance(value, bool):
        return str(value).lower() == wanted.lower()
    return str(value) == wanted


async def _enter_entity(
    site: Site, request: Request, suffix: str
) -> tuple[Principal, str] | Response:
    """What every entity read does first: injected faults, the bearer, the entity type."""
    etype = request.path_params["etype"]
    injected = await site.enter(request, "rest", f"rest:{etype}{suffix}")
    if injected is not None:
        return injected
    principal = _authenticate(site, request)
    if principal is None:
        return _unauthorized()
    kind = _ENTITY_TYPES.get(etype)
    if kind is None:
        return _not_found(f"Entity type '{etype}' does not exist.")
    return principal, kind


def _listing(
    site: Site,
    principal: Principal,
    kind: str,
    *,
    path: str,
    retired: bool,
    keep: Callable[[dict[str, Any]], bool],
    sort: list[tuple[str, bool]],
    page: tuple[int, int],
    fields: list[str] | None,
    link_params: list[tuple[str, str]],
) -> Response:
    found = [r for r in entities.records(site, principal, kind, retired=retired) if keep(r)]
    entities.sort(found, kind, sort)
    number, size = page
    chunk = found[(number - 1) * size : number * size]
    pairs = [(k, v) for k, v in link_params if k not in ("page[number]", "page[size]")]
    pairs.append(("page[size]", str(size)))
    return sg_json(
        {
            "data": [_render(kind, r, fields) for r in chunk],
            "links": {
                "self": f"{path}?{urlencode([*pairs, ('page[number]', str(number))])}",
                # Real sites emit `next` even on an empty page (research §2).
                "next": f"{path}?{urlencode([*pairs, ('page[number]', str(number + 1))])}",
            },
        }
    )


def entity_list(site: Site) -> Callable[[Request], Any]:
    async def read_all(request: Request) -> Response:
        entered = await _enter_entity(site, request, "")
        if isinstance(entered, Response):
            return entered
        principal, kind = entered
        query = request.query_params
        filters = [
            (m.group(1), v)
            for k, v in query.multi_items()
            if (m := re.fullmatch(r"filter\[(\w+)\]", k))
        ]
        try:
            for name, _ in filters:
                if name not in entities.FIELDS[kind]:
                    raise ShotGridFault(103, f"API read() {kind}.{name} doesn't exist.")
            return _listing(
                site,
                principal,
                kind,
                path=request.url.path,
                retired=query.get("options[return_only]") == "retired",
                keep=lambda r: all(_query_filter(kind, r, n, v) for n, v in filters),
                sort=_sort_keys(query.get("sort")),
                page=_page(query.get("page[number]", "1"), query.get("page[size]", "500")),
                fields=_field_list(query.get("fields")),
                link_params=list(query.multi_items()),
            )
        except ShotGridFault as fault:
            return rest_error(fault)

    return read_all


def entity_search(site: Site) -> Callable[[Request], Any]:
    """`POST /entity/<type>/_search`: filters in the body, under one of ShotGrid's vendor
    media types (research §2, §8.3); plain JSON is 415, as on a live site."""

    async def search(request: Request) -> Response:
        body = await request.body()
        entered = await _enter_entity(site, request, ":search")
        if isinstance(entered, Response):
            return entered
        principal, kind = entered
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        try:
            if media not in (_ARRAY, _HASH):
                raise ShotGridFault(
                    103,
                    f"Unsupported Content-Type '{media}'",
                    status=415,
                    source={"content_type": f"Content-Type must be one of: '{_ARRAY}', '{_HASH}'."},
                )
            try:
                query = json.loads(body)
            except ValueError as exc:
                raise ShotGridFault(
                    103, "Invalid JSON body", source={"body": getattr(exc, "msg", str(exc))}
                ) from exc
            if not isinstance(query, dict):
                raise ShotGridFault(103, "Request Parameters invalid.", source={"body": "object"})
            tree = entities.from_array(query.get("filters", []), hash_form=media == _HASH)
            entities.validate(tree, kind)
            paging = query.get("page") or {}
            if not isinstance(paging, dict):
                raise ShotGridFault(103, "Request Parameters invalid.", source={"page": "object"})
            options = query.get("options") or {}
            return _listing(
                site,
                principal,
                kind,
                path=request.url.path,
                retired=isinstance(options, dict) and options.get("return_only") == "retired",
                keep=lambda r: entities.matches(r, tree, kind),
                sort=_sort_keys(query.get("sort")),
                page=_page(paging.get("number", 1), paging.get("size", 500)),
                fields=_field_list(query.get("fields")),
                link_params=[],
            )
        except ShotGridFault as fault:
            return rest_error(fault)

    return search


def entity_one(site: Site) -> Callable[[Request], Any]:
    async def read_one(request: Request) -> Response:
        entered = await _enter_entity(site, request, ":id")
        if isinstance(entered, Response):
            return entered
        principal, kind = entered
        item_id: int = request.path_params["item_id"]
        # ASSUMED: a project the user may not see answers like one that does not exist.
        found = [
            r for r in entities.records(site, principal, kind, retired=False) if r["id"] == item_id
        ]
        if not found:
            return _not_found(detail=f"{kind}: {item_id} not found", code=104)
        try:
            fields = _field_list(request.query_params.get("fields"))
        except ShotGridFault as fault:
            return rest_error(fault)
        return sg_json(
            {"data": _render(kind, found[0], fields), "links": {"self": _self(kind, item_id)}}
        )

    return read_one


def site_info(site: Site, api_version: str) -> Callable[[Request], Any]:
    async def info(request: Request) -> Response:
        injected = await site.enter(request, "rest", "rest:info")
        if injected is not None:
            return injected
        method = site.directory.user_authentication_method
        return sg_json(
            {
                "data": {
                    "shotgun_version": "v8.50.0.0 (build emul)",
                    "api_version": api_version,
                    "unified_login_flow_enabled": method in ("saml2", "oxygen"),
                    "authentication_app_session_launcher_enabled": (
                        site.directory.app_session_launcher_enabled
                    ),
                    "user_authentication_method": method,
                    "site_id": "1",
                    "site_name": site.directory.site_name,
                }
            }
        )

    return info


def not_found(site: Site) -> Callable[[Request], Any]:
    async def missing(request: Request) -> Response:
        # There is no `/me` on a real site; every unknown path answers like this (§2).
        injected = await site.enter(request, "rest", "rest:unknown")
        return injected if injected is not None else _not_found()

    return missing


def routes(site: Site) -> list[BaseRoute]:
    result: list[BaseRoute] = []
    for version, api_version in (("v1", "1.0"), ("v1.1", "1.1")):
        prefix = f"/api/{version}"
        result += [
            Route(f"{prefix}/auth/access_token", token_endpoint(site), methods=["POST"]),
            Route(prefix, site_info(site, api_version), methods=["GET"]),
            Route(f"{prefix}/entity/{{etype}}", entity_list(site), methods=["GET"]),
            Route(f"{prefix}/entity/{{etype}}/_search", entity_search(site), methods=["POST"]),
            Route(f"{prefix}/entity/{{etype}}/{{item_id:int}}", entity_one(site), methods=["GET"]),
            Route(f"{prefix}/{{rest:path}}", not_found(site), methods=_ANY),
        ]
    return result
