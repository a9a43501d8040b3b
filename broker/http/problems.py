"""RFC 7807 problem details, the one error shape of the admin API (`/admin/api/...`).

Kept apart from `admin_api.py` so the body-limit middleware, which answers before any
route runs, can answer in the same shape under that prefix.
"""

from __future__ import annotations

from typing import Any

ADMIN_API_PREFIX = "/admin/api"
PROBLEM_JSON = "application/problem+json"
PROBLEM_TYPE = "urn:shotgrid-token-broker:problem:"
"""`type` is this prefix and a short name (`not-found`, `insufficient-scope`, ...):
stable across deployments, so clients can match it."""


def under_admin_api(path: str) -> bool:
    return path == ADMIN_API_PREFIX or path.startswith(ADMIN_API_PREFIX + "/")


def problem(name: str, title: str, status: int, detail: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": PROBLEM_TYPE + name,
        "title": title,
        "status": status,
        "detail": detail,
        **extra,
    }
