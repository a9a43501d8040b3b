"""The site's event log: the EventLogEntry rows a real ShotGrid writes when a field changes.

Only the changes the emulator can make are logged: a HumanUser's `sg_status_list` and
`permission_rule_set`. The row shape follows what real sites return (the fields of
`EventLogEntry`, `event_type` `Shotgun_<Type>_Change`, and `meta` of type
`attribute_change` with `old_value`/`new_value`), as recorded by third-party probes of a
live site and by Autodesk's own integrations' fixtures; where those are silent the choice
is marked ASSUMED.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

DATA_TYPES = {"sg_status_list": "status_list", "permission_rule_set": "entity"}


@dataclass(frozen=True, slots=True)
class EventLogEntry:
    id: int
    event_type: str
    attribute_name: str
    entity_type: str
    entity_id: int
    old_value: Any
    new_value: Any
    created_at: datetime
    description: str

    @property
    def meta(self) -> dict[str, Any]:
        return {
            "type": "attribute_change",
            "attribute_name": self.attribute_name,
            "entity_type": self.entity_type,
            "entity_id": self.entity_id,
            "in_create": False,
            "field_data_type": DATA_TYPES.get(self.attribute_name, "text"),
            "old_value": self.old_value,
            "new_value": self.new_value,
            "platform_id": None,
        }


class EventLog:
    """Append-only, ids increasing from 1. Thread-safe: test hooks write from their thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[EventLogEntry] = []

    def record_change(
        self,
        *,
        entity_type: str,
        entity_id: int,
        entity_name: str,
        attribute_name: str,
        label: str,
        old_value: Any,
        new_value: Any,
        at: datetime,
    ) -> EventLogEntry:
        # ASSUMED: the changes come from test hooks that stand for an administrator the
        # directory does not model, so the description names no one and `user` is null.
        description = (
            f'Changed "{label}" from "{_shown(old_value)}" to "{_shown(new_value)}" '
            f"on {entity_type} {entity_name}"
        )
        with self._lock:
            entry = EventLogEntry(
                id=len(self._entries) + 1,
                event_type=f"Shotgun_{entity_type}_Change",
                attribute_name=attribute_name,
                entity_type=entity_type,
                entity_id=entity_id,
                old_value=old_value,
                new_value=new_value,
                created_at=at,
                description=description,
            )
            self._entries.append(entry)
        return entry

    def entries(self) -> list[EventLogEntry]:
        with self._lock:
            return list(self._entries)


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("name"))
    return str(value)
