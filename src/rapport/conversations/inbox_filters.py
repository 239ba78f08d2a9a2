"""The inbox's filters as its query string gives them, read one way for the page itself
(``web.views.inbox_page``) and for a saved view's count (``saved_views.counts``): a view
counts the very list it opens."""

import enum
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from rapport.conversations.models import Priority, SlaState, Status
from rapport.conversations.service import Sort

VIEWS = ("mine", "unassigned", "all")


def read(values: Mapping[str, str | None]) -> tuple[str, dict[str, str | None]]:
    """The view (``mine`` unless another is named) and the filters, as the page shows them:
    a value it cannot read is ignored, ids and the channel without the spaces around them,
    the status open unless another (or ``all``) is chosen."""
    view = values.get("view") or "mine"
    return view if view in VIEWS else "mine", {
        "status": _status(values.get("status")),
        "inbox_id": (values.get("inbox_id") or "").strip() or None,
        "team_id": (values.get("team_id") or "").strip() or None,
        "label": values.get("label") or None,
        "channel": (values.get("channel") or "").strip() or None,
        "priority": _choice(Priority, values.get("priority")),
        "sla_state": _choice(SlaState, values.get("sla_state")),
        "active_from": _day(values.get("active_from")),
        "active_until": _day(values.get("active_until")),
        "sort": _choice(Sort, values.get("sort")),
    }


def search_args(view: str, filters: Mapping[str, str | None], *, user_id: str) -> dict[str, Any]:
    """What ``conversations.search`` (and ``counts``) takes for the list ``read`` gave,
    seen by ``user_id`` (whose own ``mine`` is)."""
    status = filters["status"] or Status.open.value
    label = (filters["label"] or "").strip()
    return {
        "status": None if status == "all" else Status(status),
        "assignee_id": user_id if view == "mine" else None,
        "unassigned": view == "unassigned",
        "team_id": filters["team_id"],
        "inbox_id": filters["inbox_id"],
        "label": label.lower() or None,
        "channel": filters["channel"],
        "priority": Priority(filters["priority"]) if filters["priority"] else None,
        "sla_state": SlaState(filters["sla_state"]) if filters["sla_state"] else None,
        "active_from": _midnight(filters["active_from"]),
        # The "to" day is included: everything before the midnight after it.
        "active_until": _midnight(filters["active_until"], days=1),
        "sort": Sort(filters["sort"] or "newest"),
    }


def _status(value: str | None) -> str:
    """The status chosen, ``all`` for any, else open (what an agent must act on, where
    Chatwoot's inbox opens too; resolved ones filled "All"). The unread counts beside the
    views count open conversations too."""
    return "all" if value == "all" else _choice(Status, value) or Status.open.value


def _choice(kind: type[enum.StrEnum], value: str | None) -> str | None:
    """A query-string value when it names a member of ``kind``; anything else is ignored."""
    return value if value and value in kind.__members__ else None


def _day(value: str | None) -> str | None:
    """An ISO date from a date input, or None when absent or malformed."""
    try:
        return date.fromisoformat(value).isoformat() if value else None
    except ValueError:
        return None


def _midnight(day: str | None, *, days: int = 0) -> datetime | None:
    """The UTC midnight starting ``day`` (plus ``days``); None past the calendar's end (the
    midnight after 9999-12-31), which bounds nothing."""
    if not day:
        return None
    try:
        return datetime.combine(date.fromisoformat(day), time(), UTC) + timedelta(days=days)
    except OverflowError:
        return None
