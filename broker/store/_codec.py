"""Record <-> stored form, shared by every backend, driven by the records' type hints.

One place decides how a field is kept (epoch milliseconds or BSON date for datetimes,
JSON text or arrays for tuples, text for enums) and how a row or document written by an
older schema version is read: a field that is missing (or NULL where the record does not
admit None) takes the record's default, so adding an optional field to a record needs no
data migration. A missing field without a default is corruption and raises StoreError.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, TypeVar

from broker.store.records import SCHEMA_VERSION, UpstreamTokenRecord, ms

R = TypeVar("R")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)

# Field kinds.
DATETIME, TUPLE, DICT, ENUM, BYTES, BOOL, SCALAR = range(7)


class StoredFormError(Exception):
    """A stored row lacks a required field (raised as StoreError by the package)."""


def to_ms(value: datetime) -> int:
    """Aware datetime -> integer epoch milliseconds. Naive datetimes raise ValueError."""
    return (ms(value) - EPOCH) // _MS


def from_ms(value: int) -> datetime:
    return EPOCH + value * _MS


def upstream_gc_at(record: UpstreamTokenRecord) -> datetime | None:
    """When custody is useless: access expiry without a refresh token, else refresh
    expiry (never when the upstream did not say when its refresh token expires)."""
    if record.refresh_token is None:
        return record.expires_at
    if record.refresh_expires_at is None:
        return None
    return max(record.expires_at, record.refresh_expires_at)


def key_range(prefix: str) -> tuple[str, str]:
    """[low, high): exactly the keys that start with `prefix`, as a range both backends
    answer from their primary-key index (code-point order is UTF-8 byte order)."""
    if not prefix:
        raise ValueError("an empty prefix would name every key")
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


def opt_ms(value: datetime | None) -> int | None:
    return None if value is None else to_ms(value)


def opt_dt(value: int | None) -> datetime | None:
    return None if value is None else from_ms(value)


@dataclasses.dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    kind: int
    nullable: bool
    required: bool
    default: Callable[[], Any]
    enum: type[Enum] | None = None


def _classify(hint: Any) -> tuple[int, bool, type[Enum] | None]:
    nullable = False
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        nullable = len(args) != len(typing.get_args(hint))
        hint = args[0]
        origin = typing.get_origin(hint)
    if hint is datetime:
        return DATETIME, nullable, None
    if origin is tuple:
        return TUPLE, nullable, None
    if origin is dict:
        return DICT, nullable, None
    if isinstance(hint, type) and issubclass(hint, Enum):
        return ENUM, nullable, hint
    if hint is bytes:
        return BYTES, nullable, None
    if hint is bool:
        return BOOL, nullable, None
    return SCALAR, nullable, None


def _constant(value: Any) -> Callable[[], Any]:
    return lambda: value


_SPECS: dict[type[Any], tuple[FieldSpec, ...]] = {}


def specs(cls: type[Any]) -> tuple[FieldSpec, ...]:
    """How each field of the record class `cls` is kept (computed once per class)."""
    cached = _SPECS.get(cls)
    if cached is None:
        cached = _SPECS[cls] = _compute_specs(cls)
    return cached


def _compute_specs(cls: type[Any]) -> tuple[FieldSpec, ...]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        kind, nullable, enum = _classify(hints[f.name])
        if f.default is not dataclasses.MISSING:
            default: Callable[[], Any] = _constant(f.default)
            required = False
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory
            required = False
        else:
            default = _no_default
            required = True
        out.append(FieldSpec(f.name, kind, nullable, required, default, enum))
    return tuple(out)


def _no_default() -> Any:  # pragma: no cover - guarded by `required`
    raise AssertionError


def field_names(cls: type[Any]) -> list[str]:
    return [s.name for s in specs(cls)]


def _fill(cls: type[R], stored: Mapping[str, Any], convert: Callable[[FieldSpec, Any], Any]) -> R:
    kwargs: dict[str, Any] = {}
    for spec in specs(cls):
        value = stored.get(spec.name)
        if spec.name not in stored or (value is None and not spec.nullable):
            # Written by an older schema version (or a nullable column added later).
            if spec.required:
                raise StoredFormError(f"stored {cls.__name__} lacks {spec.name!r}")
            kwargs[spec.name] = spec.default()
            continue
        kwargs[spec.name] = None if value is None else convert(spec, value)
    return cls(**kwargs)


# --- SQLite: columns ---------------------------------------------------------------------


def sql_type(spec: FieldSpec) -> str:
    return {
        DATETIME: "INTEGER",
        TUPLE: "TEXT",
        DICT: "TEXT",
        ENUM: "TEXT",
        BYTES: "BLOB",
        BOOL: "INTEGER",
    }.get(spec.kind, "")


def _to_sql(spec: FieldSpec, value: Any) -> Any:
    if value is None:
        return None
    if spec.kind == DATETIME:
        return to_ms(value)
    if spec.kind == TUPLE:
        return json.dumps(list(value))
    if spec.kind == DICT:
        return json.dumps(value, sort_keys=True)
    if spec.kind == ENUM:
        return value.value
    if spec.kind == BOOL:
        return int(value)
    return value


def _from_sql(spec: FieldSpec, value: Any) -> Any:
    if spec.kind == DATETIME:
        return from_ms(value)
    if spec.kind == TUPLE:
        return tuple(json.loads(value))
    if spec.kind == DICT:
        return dict(json.loads(value))
    if spec.kind == ENUM:
        assert spec.enum is not None
        return spec.enum(value)
    if spec.kind == BOOL:
        return bool(value)
    if spec.kind == BYTES:
        return bytes(value)
    return value


def to_row(record: Any) -> dict[str, Any]:
    """Column values for `record`, plus `schema`."""
    row = {s.name: _to_sql(s, getattr(record, s.name)) for s in specs(type(record))}
    row["schema"] = SCHEMA_VERSION
    return row


def from_row(cls: type[R], row: Mapping[str, Any]) -> R:
    return _fill(cls, row, _from_sql)


# --- MongoDB: documents ------------------------------------------------------------------


def _to_bson(spec: FieldSpec, value: Any) -> Any:
    if value is None:
        return None
    if spec.kind == DATETIME:
        return ms(value)
    if spec.kind == TUPLE:
        return list(value)
    if spec.kind == DICT:
        return dict(value)
    if spec.kind == ENUM:
        return value.value
    if spec.kind == BYTES:
        return bytes(value)
    return value


def _from_bson(spec: FieldSpec, value: Any) -> Any:
    if spec.kind == DATETIME:
        if value.tzinfo is None:  # a client opened without tz_aware: the values are UTC
            value = value.replace(tzinfo=UTC)
        return ms(value)
    if spec.kind == TUPLE:
        return tuple(value)
    if spec.kind == DICT:
        return dict(value)
    if spec.kind == ENUM:
        assert spec.enum is not None
        return spec.enum(value)
    if spec.kind == BYTES:
        return bytes(value)
    return value


def to_doc(record: Any) -> dict[str, Any]:
    """Document fields for `record`, plus `schema` (the caller adds `_id`)."""
    doc = {s.name: _to_bson(s, getattr(record, s.name)) for s in specs(type(record))}
    doc["schema"] = SCHEMA_VERSION
    return doc


def from_doc(cls: type[R], doc: Mapping[str, Any]) -> R:
    return _fill(cls, doc, _from_bson)
