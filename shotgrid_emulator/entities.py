"""The entity types the emulator serves, as flat field dicts, and the query rules over them.

One record per entity in api3's shape (`{"type", "id", field: value}`, entity links as
`{"type", "id", "name"}`); `api3.py` returns it as is and `rest.py` splits it into
`attributes` and `relationships` (research §2). Filters use api3's condition tree
(`{"path", "relation", "values"}` under `{"logical_operator", "conditions"}`, research
§3.3); REST's array and hash filters are translated to it, so both surfaces filter alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from shotgrid_emulator.directory import HumanUser, Project
from shotgrid_emulator.events import EventLogEntry
from shotgrid_emulator.site import Principal, ShotGridFault, Site

ENTITY_TYPES = ("HumanUser", "Project", "EventLogEntry")

LINK_FIELDS: dict[str, dict[str, bool]] = {
    # field -> multi-entity?
    "HumanUser": {"permission_rule_set": False, "projects": True},
    "Project": {"users": True},
    "EventLogEntry": {"entity": False, "user": False, "project": False},
}

FIELDS: dict[str, frozenset[str]] = {
    "HumanUser": frozenset(
        {"type", "id", "login", "email", "name", "firstname", "lastname", "sg_status_list"}
        | {"can_impersonate_this_user", "permission_rule_set", "projects"}
    ),
    "Project": frozenset({"type", "id", "name", "sg_status_list", "users"}),
    "EventLogEntry": frozenset(
        {"type", "id", "event_type", "attribute_name", "description", "entity", "meta"}
        | {"created_at", "user", "project", "session_uuid"}
    ),
}
"""Every field a record of the type carries (what `records` builds)."""

RELATIONS = frozenset(
    {"is", "is_not", "in", "not_in", "greater_than", "less_than", "between"}
    | {"starts_with", "ends_with", "contains", "not_contains"}
)

# `meta` is a `serializable` field: real sites refuse to filter on it (third-party probe of
# a live site, its event-log finding), and ignore a sort on it.
UNFILTERABLE = {"EventLogEntry": {"meta"}}


def timestamp(at: datetime) -> str:
    """api3's and REST's date-time text (what shotgun_api3 parses back into a datetime)."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def link(kind: str, item_id: int, name: str) -> dict[str, Any]:
    return {"type": kind, "id": item_id, "name": name}


def _user(site: Site, user: HumanUser) -> dict[str, Any]:
    rule_set_id = site.directory.permission_rule_sets.get(user.permission_rule_set, 0)
    return {
        "type": "HumanUser",
        "id": user.id,
        "login": user.login,
        "email": user.email,
        "name": user.name,
        "firstname": user.firstname,
        "lastname": user.lastname,
        "sg_status_list": user.sg_status_list,
        "can_impersonate_this_user": user.can_impersonate_this_user,
        "permission_rule_set": link("PermissionRuleSet", rule_set_id, user.permission_rule_set),
        "projects": [
            link("Project", p.id, p.name) for p in site.directory.projects if p.id in user.projects
        ],
    }


def _project(site: Site, project: Project) -> dict[str, Any]:
    members = [u for u in site.directory.users if project.id in u.projects and not u.retired]
    return {
        "type": "Project",
        "id": project.id,
        "name": project.name,
        "sg_status_list": project.sg_status_list,
        "users": [link("HumanUser", u.id, u.name) for u in members],
    }


def _event(site: Site, entry: EventLogEntry) -> dict[str, Any]:
    # `entity` reads null once its target is retired; `meta` still names it (probe finding).
    target = site.directory.user_by_id(entry.entity_id)
    return {
        "type": "EventLogEntry",
        "id": entry.id,
        "event_type": entry.event_type,
        "attribute_name": entry.attribute_name,
        "description": entry.description,
        "entity": link(entry.entity_type, target.id, target.name) if target else None,
        "meta": entry.meta,
        "created_at": timestamp(entry.created_at),
        "user": None,  # ASSUMED: see events.py
        "project": None,  # HumanUser changes belong to no project
        "session_uuid": None,
    }


def records(site: Site, principal: Principal, kind: str, *, retired: bool) -> list[dict[str, Any]]:
    """Every record of `kind` the principal may see, in id order."""
    if kind == "HumanUser":
        return [_user(site, u) for u in site.directory.users if u.retired == retired]
    if kind == "Project":
        # Per-user permissions: only the effective user's projects (research §5).
        return [] if retired else [_project(site, p) for p in site.visible_projects(principal)]
    if kind == "EventLogEntry":
        # ASSUMED: every principal may read the log (real rules per role are unrecorded).
        return [] if retired else [_event(site, e) for e in site.events.entries()]
    raise ShotGridFault(103, f"API read() Entity type '{kind}' doesn't exist.")


# ---- filters ----------------------------------------------------------------------------


def _same(actual: Any, wanted: Any) -> bool:
    if isinstance(actual, list):
        return any(_same(a, wanted) for a in actual)
    if isinstance(actual, dict) and isinstance(wanted, dict):
        return bool(
            actual.get("type") == wanted.get("type") and actual.get("id") == wanted.get("id")
        )
    return bool(actual == wanted)


def _ordered(actual: Any, low: Any, high: Any, kind: str, path: str) -> bool:
    """low < actual < high (a None bound is open); a null field matches no range."""
    if actual is None:
        return False
    try:
        return bool((low is None or actual > low) and (high is None or actual < high))
    except TypeError:
        raise ShotGridFault(  # ASSUMED text
            103,
            f"API read() {kind}.{path} cannot be compared with {low if high is None else high!r}",
        ) from None


def validate(group: Any, kind: str) -> None:
    """Refuse a bad filter tree before any row is read, as a real site does even when no
    row would match: unknown fields, unfilterable ones, unknown relations (code 103)."""
    if not isinstance(group, dict):
        raise ShotGridFault(103, "API read() invalid filters")
    if "conditions" in group:
        conditions = group["conditions"]
        if not isinstance(conditions, list):
            raise ShotGridFault(103, "API read() invalid filters")
        for condition in conditions:
            validate(condition, kind)
        return
    path, relation = group.get("path"), group.get("relation")
    if path in UNFILTERABLE.get(kind, set()):
        raise ShotGridFault(
            103, f"API read() {kind}.{path}'s 'serializable' data type cannot be used in a filter."
        )
    if path not in FIELDS.get(kind, frozenset()):
        raise ShotGridFault(103, f"API read() {kind}.{path} doesn't exist.")
    if relation not in RELATIONS:
        raise ShotGridFault(103, f"API read() unsupported relation '{relation}'")  # ASSUMED


def matches(record: dict[str, Any], group: Any, kind: str) -> bool:
    """Whether `record` passes an api3 filter tree (checked with `validate` first)."""
    if not isinstance(group, dict):
        raise ShotGridFault(103, "API read() invalid filters")
    if "conditions" in group:
        conditions = group["conditions"]
        if not isinstance(conditions, list):
            raise ShotGridFault(103, "API read() invalid filters")
        results = [matches(record, c, kind) for c in conditions]
        return any(results) if group.get("logical_operator") == "or" else all(results)
    path, relation = group.get("path"), str(group.get("relation"))
    values = group.get("values", [])
    if not isinstance(values, list):
        values = [values]
    if path in UNFILTERABLE.get(kind, set()):
        raise ShotGridFault(
            103, f"API read() {kind}.{path}'s 'serializable' data type cannot be used in a filter."
        )
    if path not in record:
        raise ShotGridFault(103, f"API read() {kind}.{path} doesn't exist.")
    actual = record[path]
    first = values[0] if values else None
    if relation == "is":
        return _same(actual, first)
    if relation == "is_not":
        return not _same(actual, first)
    if relation == "in":
        return any(_same(actual, v) for v in values)
    if relation == "not_in":
        return not any(_same(actual, v) for v in values)
    if relation == "greater_than":
        return first is not None and _ordered(actual, first, None, kind, str(path))
    if relation == "less_than":
        return first is not None and _ordered(actual, None, first, kind, str(path))
    if relation == "between" and len(values) == 2:
        # Inclusive at both ends (ASSUMED, as SQL's BETWEEN).
        return actual in values or _ordered(actual, values[0], values[1], kind, str(path))
    if relation in ("starts_with", "ends_with", "contains", "not_contains"):
        text, part = actual, first
        if not isinstance(text, str) or not isinstance(part, str):
            return relation == "not_contains"
        if relation == "starts_with":
            return text.startswith(part)
        if relation == "ends_with":
            return text.endswith(part)
        return (part in text) == (relation == "contains")
    raise ShotGridFault(103, f"API read() unsupported relation '{relation}'")  # ASSUMED


def from_array(filters: Any, *, hash_form: bool = False) -> dict[str, Any]:
    """REST `_search` filters (research §2) as an api3 condition tree.

    `api3_array` bodies carry `[[field, relation, value], ...]` (and only); `api3_hash`
    bodies a `{"logical_operator", "conditions"}` group whose conditions are triples or
    nested groups. Messages follow the probe of a live site where recorded, else ASSUMED.
    """
    if hash_form:
        if not isinstance(filters, dict):
            raise ShotGridFault(103, f"Query is not an Hash: {filters}")
        if "logical_operator" not in filters or "conditions" not in filters:
            raise ShotGridFault(103, f"Missing logical operator: {filters}")
        operator = filters["logical_operator"]
        conditions = filters["conditions"]
    else:
        operator, conditions = "and", filters
    if not isinstance(conditions, list):
        raise ShotGridFault(103, "Request Parameters invalid.", source={"filters": "not a list"})
    tree: list[dict[str, Any]] = []
    for condition in conditions:
        if isinstance(condition, dict):
            if not hash_form or "logical_operator" not in condition:
                raise ShotGridFault(103, f"Missing logical operator: {condition}")
            tree.append(from_array(condition, hash_form=True))
            continue
        if not isinstance(condition, list) or len(condition) < 3:
            raise ShotGridFault(103, "Request Parameters invalid.", source={"filters": condition})
        path, relation, *rest = condition
        value = rest[0] if len(rest) == 1 else rest
        many = relation in ("in", "not_in", "between") and isinstance(value, list)
        tree.append({"path": path, "relation": relation, "values": value if many else [value]})
    return {"logical_operator": operator, "conditions": tree}


# ---- order and pages ----------------------------------------------------------------------


def sort(records: list[dict[str, Any]], kind: str, keys: Sequence[tuple[str, bool]]) -> None:
    """Sort in place by (field, descending) pairs; id ascending breaks ties.

    A sort on a field the type lacks or cannot order (`meta`, links) is ignored, as real
    sites do (probe of a live site: the order falls back to ascending id).
    """
    records.sort(key=lambda r: r["id"])
    for field, descending in reversed(list(keys)):
        if not records or field not in records[0] or field in UNFILTERABLE.get(kind, set()):
            continue
        if field in LINK_FIELDS.get(kind, {}):
            continue
        # Stable sorts from the last key to the first give a multi-key order; nulls first
        # when ascending (ASSUMED). Values of mixed types leave the order as it was.
        try:
            records.sort(key=_key(field), reverse=descending)
        except TypeError:
            continue


def _key(field: str) -> Callable[[dict[str, Any]], tuple[bool, Any]]:
    return lambda record: (record[field] is not None, record[field])
