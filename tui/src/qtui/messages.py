"""Messages between the app (which does all I/O, in workers) and its screens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message

from qtui.snapshot import JobQuery, Snapshot


class SnapshotReady(Message):
    """A refresh finished: the new snapshot (services that failed keep their old data)."""

    def __init__(self, snapshot: Snapshot) -> None:
        super().__init__()
        self.snapshot = snapshot


@dataclass
class Action:
    """An operator action: the client method to call, its arguments, and how to say it."""

    op: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] | None = None
    label: str = ""
    confirm: str | None = None  # a question to ask first (destructive actions), or None


class ActionRequested(Message):
    """A screen asks the app to run an action (after confirming it, if it says so)."""

    def __init__(self, action: Action) -> None:
        super().__init__()
        self.action = action


class ActionDone(Message):
    """An action succeeded; `result` is the service's answer."""

    def __init__(self, action: Action, result: Any) -> None:
        super().__init__()
        self.action = action
        self.result = result


class DetailRequested(Message):
    """A detail screen wants (fresh) data: kind is "worker" or "job"."""

    def __init__(self, kind: str, key: Any) -> None:
        super().__init__()
        self.kind = kind
        self.key = key


class DetailReady(Message):
    """Detail data arrived for the detail screen showing (kind, key); None: it is gone."""

    def __init__(self, kind: str, key: Any, data: dict[str, Any] | None,
                 error: str | None = None) -> None:
        super().__init__()
        self.kind = kind
        self.key = key
        self.data = data
        self.error = error


class JobQueryChanged(Message):
    """The jobs search changed: refresh now with it."""

    def __init__(self, query: JobQuery) -> None:
        super().__init__()
        self.query = query
