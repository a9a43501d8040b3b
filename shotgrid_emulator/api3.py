"""The api3 JSON-RPC subset (`POST /api3/json`) that the real `shotgun_api3` client needs.

Research §3 and spec §8.4: every answer is HTTP 200, faults included
(`{"exception": true, "error_code": N, "message": ...}`), because the client turns any
other status into a `ProtocolError` instead of its fault classes. Every call carries its
credentials in `params[0]` and is authenticated on its own.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from shotgrid_emulator import entities
from shotgrid_emulator.site import Principal, ShotGridFault, Site, sg_json

_INFO_VERSION = [8, 50, 0]  # >= 7.4.0 gives the client's modern paging (research §3.3)


def _fault(code: int, message: str) -> Response:
    return sg_json({"exception": True, "error_code": code, "message": message})


def _authenticate(site: Site, auth: Any) -> Principal:
    if not isinstance(auth, dict):
        raise ShotGridFault(102, "Missing or invalid authentication arguments")
    # The same precedence as the client's `_auth_params` (research §3.2).
    if "user_login" in auth and "user_password" in auth:
        code = auth.get("auth_token")
        principal = Principal(
            user=site.password_login(
                str(auth["user_login"]),
                str(auth["user_password"]),
                auth_token=str(code) if code else None,
                api3=True,
            )
        )
    elif "script_name" in auth:
        script = site.script_login(str(auth["script_name"]), str(auth.get("script_key", "")))
        principal = Principal(script=script)
    elif "session_token" in auth:
        session_user = site.session_user(str(auth["session_token"]))
        if session_user is None:
            # Code 102 is what toolkit relies on to renew (§3.1); the text is ASSUMED. We
            # reject even without `reject_if_expired` instead of answering anonymously.
            raise ShotGridFault(102, "Unauthorized session token")
        principal = Principal(user=session_user)
    else:
        raise ShotGridFault(102, "Missing or invalid authentication arguments")
    sudo = auth.get("sudo_as_login")
    if sudo:
        # A human without the sudo permission gets a plain Fault (code 104, research §3.1).
        principal = site.sudo(principal, str(sudo), fault_code=104)
    return principal


def _read(site: Site, principal: Principal, params: Any) -> dict[str, Any]:
    if not isinstance(params, dict):
        raise ShotGridFault(103, "API read() invalid parameters")
    kind = str(params.get("type"))
    if kind not in entities.ENTITY_TYPES:
        raise ShotGridFault(103, f"API read() Entity type '{kind}' doesn't exist.")
    retired = params.get("return_only", "active") == "retired"
    filters = params.get("filters") or {"logical_operator": "and", "conditions": []}
    entities.validate(filters, kind)
    found = [
        r
        for r in entities.records(site, principal, kind, retired=retired)
        if entities.matches(r, filters, kind)
    ]
    sorts = params.get("sorts") or []
    if not isinstance(sorts, list) or not all(isinstance(s, dict) for s in sorts):
        raise ShotGridFault(103, "API read() invalid 'sorts'")  # ASSUMED text
    entities.sort(
        found,
        kind,
        [(str(s.get("field_name")), s.get("direction") == "desc") for s in sorts],
    )
    paging = params.get("paging") or {}
    per_page, page = paging.get("entities_per_page", 500), paging.get("current_page", 1)
    if not isinstance(per_page, int) or not isinstance(page, int) or per_page < 1 or page < 1:
        raise ShotGridFault(103, "API read() invalid/missing integer 'paging'")
    chunk = found[(page - 1) * per_page : page * per_page]
    wanted = {"type", "id", *(params.get("return_fields") or [])}
    # Unknown names in return_fields are ignored (ASSUMED, research §8.4).
    rows = [{k: v for k, v in r.items() if k in wanted} for r in chunk]
    has_next = page * per_page < len(found)
    info: dict[str, Any] = {"has_next_page": has_next}
    if not params.get("return_paging_info_without_counts"):
        info.update(
            current_page=page,
            page_count=max(1, math.ceil(len(found) / per_page)),
            entity_count=len(found),
            entities_per_page=per_page,
        )
    return {"entities": rows, "paging_info": info}


def _info(site: Site) -> dict[str, Any]:
    method = site.directory.user_authentication_method
    return {
        "version": _INFO_VERSION,
        "full_version": [*_INFO_VERSION, 0],
        "user_authentication_method": method,
        "unified_login_flow_enabled": method in ("saml2", "oxygen"),
        "authentication_app_session_launcher_enabled": (
            site.directory.app_session_launcher_enabled
        ),
        "api_max_entities_per_page": 500,
        "s3_uploads_enabled": False,
    }


def endpoint(site: Site) -> Callable[[Request], Any]:
    async def api3(request: Request) -> Response:
        body = await request.body()
        try:
            payload = json.loads(body)
            method = str(payload["method_name"])
            params = payload.get("params") or []
            if not isinstance(params, list):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            injected = await site.enter(request, "api3", "api3:invalid")
            return injected or _fault(103, "Invalid JSON-RPC request")
        injected = await site.enter(request, "api3", f"api3:{method}")
        if injected is not None:
            return injected
        try:
            if method == "info":  # no authentication (research §3.3)
                return sg_json(_info(site))
            principal = _authenticate(site, params[0] if params else None)
            if method == "get_session_token":
                if principal.user is None or principal.sudo_as is not None:
                    # ASSUMED: only a HumanUser acting as itself gets a web session.
                    raise ShotGridFault(103, "API get_session_token() requires a HumanUser")
                # Wrapped vs flat is UNKNOWN (§3.3); the client accepts both.
                return sg_json({"results": {"session_id": site.create_session(principal.user)}})
            if method == "read":
                return sg_json(
                    {"results": _read(site, principal, params[1] if len(params) > 1 else None)}
                )
            raise ShotGridFault(103, f"API method '{method}' is not supported by the emulator")
        except ShotGridFault as fault:
            return _fault(fault.code, fault.title)

    return api3


def routes(site: Site) -> list[BaseRoute]:
    return [Route("/api3/json", endpoint(site), methods=["POST"])]
