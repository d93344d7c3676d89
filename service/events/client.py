"""Reading Server-Sent Events line by line (`trips ingest --server`, tests, benchmarks)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class SseEvent:
    id: int | None
    type: str
    data: str

    def json(self) -> Any:
        return orjson.loads(self.data)


class SseParser:
    """Feed it lines (without their line ending); it returns an event at each blank line."""

    def __init__(self) -> None:
        self.comments = 0  # heartbeat comment lines seen
        self.last_id: int | None = None
        self._type: str = "message"
        self._data: list[str] = []
        self._id: int | None = None

    def feed(self, line: str) -> SseEvent | None:
        if not line:
            if not self._data:
                self._type, self._id = "message", None
                return None
            if self._id is not None:
                self.last_id = self._id
            event = SseEvent(self._id, self._type, "\n".join(self._data))
            self._type, self._data, self._id = "message", [], None
            return event
        if line.startswith(":"):
            self.comments += 1
            return None
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            self._type = value
        elif field == "data":
            self._data.append(value)
        elif field == "id" and value.isdigit():
            self._id = int(value)
        return None
