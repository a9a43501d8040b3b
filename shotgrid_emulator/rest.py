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

from shotgrid_emulator.directory import HumanUser, Project
from shotgrid_emulator.site import Principal, ShotGridFault, Site, rest_error, sg_json

_FORM = "application/x-www-form-urlencoded"
_ANY = ["GET", "POST", "PUT", "PATCH", "DELETE"]
_GRANTS = ("password", "client_credentials", "session_token", "refresh_token", "refresh")
_SUDO_SCOPE = re.compile(r"^sudo_as_login:(.+)$")
_MISSING_ARGS = "Missing or invalid authentication arguments"
_ENTITY_TYPES = {
    "human_users": "HumanUser",
    "HumanUser": "HumanUser",
    "projects": "Project",
    "Project": "Project",
}
_RULE_SET_IDS = {"Admin": 5, "Manager": 7, "Artist": 8}  # ids are arbitrary but stable


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


def _link(kind: str, item_id: int) -> str:
    return f"/api/v1/entity/{'human_users' if kind == 'HumanUser' else 'projects'}/{item_id}"


def _user_record(site: Site, user: HumanUser) -> tuple[dict[str, Any], dict[str, Any]]:
    base = _link("HumanUser", user.id)
    rule_id = _RULE_SET_IDS.get(user.permission_rule_set, 8)
    attributes = {
        "login": user.login,
        "email": user.email,
        "name": user.name,
        "firstname": user.firstname,
        "lastname": user.lastname,
        "sg_status_list": user.sg_status_list,
        "can_impersonate_this_user": user.can_impersonate_this_user,
    }
    projects = [p for p in site.directory.projects if p.id in user.projects]
    relationships = {
        "permission_rule_set": {
            "data": {"id": rule_id, "name": user.permission_rule_set, "type": "PermissionRuleSet"},
            "links": {
                "self": f"{base}/relationships/permission_rule_set",
                "related": f"/api/v1/entity/permission_rule_sets/{rule_id}",
            },
        },
        "projects": {
            "data": [{"id": p.id, "name": p.name, "type": "Project"} for p in projects],
            "links": {"self": f"{base}/relationships/projects"},
        },
    }
    return attributes, relationships


def _project_record(site: Site, project: Project) -> tuple[dict[str, Any], dict[str, Any]]:
    members = [u for u in site.directory.users if project.id in u.projects and not u.retired]
    attributes = {"name": project.name, "sg_status_list": project.sg_status_list}
    relationships = {
        "users": {
            "data": [{"id": u.id, "name": u.name, "type": "HumanUser"} for u in members],
            "links": {"self": f"{_link('Project', project.id)}/relationships/users"},
        }
    }
    return attributes, relationships


def _render(site: Site, item: HumanUser | Project, fields: Sequence[str] | None) -> dict[str, Any]:
    kind = "HumanUser" if isinstance(item, HumanUser) else "Project"
    attributes, relationships = (
        _user_record(site, item) if isinstance(item, HumanUser) else _project_record(site, item)
    )
    if fields is not None:  # unknown names are dropped silently (research §2)
        attributes = {k: v for k, v in attributes.items() if k in fields}
        relationships = {k: v for k, v in relationships.items() if k in fields}
    return {
        "type": kind,
        "attributes": attributes,
        "relationships": relationships,
        "id": item.id,
        "links": {"self": _link(kind, item.id)},
    }


def _fields(request: Request) -> list[str] | None:
    raw = request.query_params.get("fields")
    # ASSUMED: no `fields` (or `*`) returns every field we model.
    if raw is None or raw.strip() == "*":
        return None
    return [f.strip() for f in raw.split(",") if f.strip()]


def _candidates(site: Site, principal: Principal, kind: str, retired: bool) -> list[Any]:
    if kind == "HumanUser":
        return [u for u in site.directory.users if u.retired == retired]
    return [] if retired else site.visible_projects(principal)


def _scalar(site: Site, item: HumanUser | Project, name: str) -> Any:
    if name == "id":
        return item.id
    attributes, _ = (
        _user_record(site, item) if isinstance(item, HumanUser) else _project_record(site, item)
    )
    if name not in attributes:
        raise ShotGridFault(103, f"Invalid filter: unknown field '{name}'")  # ASSUMED
    return attributes[name]


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


def entity_list(site: Site) -> Callable[[Request], Any]:
    async def read_all(request: Request) -> Response:
        entered = await _enter_entity(site, request, "")
        if isinstance(entered, Response):
            return entered
        principal, kind = entered
        query = request.query_params
        retired = query.get("options[return_only]") == "retired"
        try:
            items = _candidates(site, principal, kind, retired)
            for key, value in query.multi_items():
                match = re.fullmatch(r"filter\[(\w+)\]", key)
                if match:
                    items = [i for i in items if str(_scalar(site, i, match.group(1))) == value]
            number = int(query.get("page[number]", "1"))
            size = int(query.get("page[size]", "500"))
            if number < 1 or not 1 <= size <= 500:
                raise ValueError
        except ShotGridFault as fault:
            return rest_error(fault)
        except ValueError:
            return rest_error(ShotGridFault(103, "Invalid paging parameters"))
        page = items[(number - 1) * size : number * size]
        fields = _fields(request)
        path = request.url.path
        pairs = [(k, v) for k, v in query.multi_items() if k != "page[number]"]
        return sg_json(
            {
                "data": [_render(site, i, fields) for i in page],
                "links": {
                    "self": f"{path}?{urlencode([*pairs, ('page[number]', number)])}",
                    # Real sites emit `next` even on an empty page (research §2).
                    "next": f"{path}?{urlencode([*pairs, ('page[number]', number + 1)])}",
                },
            }
        )

    return read_all


def entity_one(site: Site) -> Callable[[Request], Any]:
    async def read_one(request: Request) -> Response:
        entered = await _enter_entity(site, request, ":id")
        if isinstance(entered, Response):
            return entered
        principal, kind = entered
        item_id: int = request.path_params["item_id"]
        item: HumanUser | Project | None
        if kind == "HumanUser":
            item = site.directory.user_by_id(item_id)
        else:
            # ASSUMED: a project the user may not see answers like one that does not exist.
            item = next((p for p in site.visible_projects(principal) if p.id == item_id), None)
        if item is None:
            return _not_found(detail=f"{kind}: {item_id} not found", code=104)
        return sg_json(
            {"data": _render(site, item, _fields(request)), "links": {"self": _link(kind, item_id)}}
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
                    "authentication_app_session_launcher_enabled": False,
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
            Route(f"{prefix}/entity/{{etype}}/{{item_id:int}}", entity_one(site), methods=["GET"]),
            Route(f"{prefix}/{{rest:path}}", not_found(site), methods=_ANY),
        ]
    return result
