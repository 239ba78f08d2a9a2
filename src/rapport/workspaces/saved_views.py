"""Saved views: a page's filters kept under a name, shared with the whole workspace or a
member's own, listed in the page's sidebar.

A view holds its page's query string in one canonical form (``encode``): the same filters
always read the same, so a page knows which saved view is on screen by comparing strings,
without asking the database again.
"""

from collections.abc import Callable, Iterable, Mapping
from datetime import date
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson
from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from rapport import naming
from rapport.auth.models import Team, User
from rapport.channels import base as channel_registry
from rapport.channels.models import Inbox
from rapport.conversations import inbox_filters
from rapport.conversations import service as conversations
from rapport.conversations.models import Priority, SlaState, Status
from rapport.conversations.service import Sort
from rapport.customers import service as customers
from rapport.db import lock_row, utcnow
from rapport.problems import Conflict, Forbidden, Invalid, NotFound
from rapport.workspaces.models import SavedView, Workspace

NAME_MAX = 80
QUERY_MAX = 2_000
# Each page's filters, in the order its canonical query string gives them.
KEYS: dict[str, tuple[str, ...]] = {
    "inbox": (
        "view",
        "status",
        "inbox_id",
        "team_id",
        "label",
        "channel",
        "priority",
        "sla_state",
        "active_from",
        "active_until",
        "sort",
    ),
    "customers": ("q", "tag", "attr", "value"),
}
PAGES = tuple(KEYS)
# What a page shows when a filter is left out: given, it says nothing, so it is dropped.
# The inbox's ``view`` has none here: the page reads no view as Mine, and a query that
# names one keeps it.
DEFAULTS: dict[str, dict[str, str]] = {
    "inbox": {"status": Status.open.value, "sort": Sort.newest.value},
    "customers": {},
}
# Matched lower-cased by the searches (labels.clean, customers.search): one form here.
_LOWER = frozenset({"label", "tag"})
_PAGE_SAID = {"inbox": "the inbox", "customers": "the customers list"}
_LONGEST = {"label": 100, "q": 320, "tag": 100, "attr": 200, "value": 500}


def encode(page: str, values: Mapping[str, str | None]) -> str:
    """The canonical query string (no "?") of ``page`` with these filters: the page's own
    keys alone, in its order, each value trimmed (a label or tag lower-cased); blank values
    and the page's defaults left out. Checks nothing and asks nothing of the database: the
    pages call it with the filters they read, ``canonical`` with those it checked."""
    if page not in KEYS:
        raise ValueError(f"no page {page!r} has saved views")
    defaults = DEFAULTS[page]
    pairs = []
    for key in KEYS[page]:
        value = (values.get(key) or "").strip()
        if key in _LOWER:
            value = value.lower()
        if value and value != defaults.get(key):
            pairs.append((key, value))
    return urlencode(pairs)


def _shown(value: str) -> str:
    """A value as a problem quotes it: as JSON, and short."""
    text = orjson.dumps(value).decode()
    return text if len(text) <= 80 else text[:79] + "…"


def _one_of(key: str, value: str, allowed: list[str]) -> str:
    if value not in allowed:
        raise Invalid(f"query: {key} must be one of {', '.join(allowed)}; not {_shown(value)}")
    return value


def _day(key: str, value: str) -> str:
    """An ISO date as the inbox page reads one (``date.fromisoformat``), written YYYY-MM-DD."""
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise Invalid(f"query: {key} must be a date, YYYY-MM-DD; not {_shown(value)}") from None


def _of_workspace(
    db: Session, model: type[Inbox | Team], key: str, value: str, workspace_id: str, what: str
) -> str:
    found = db.scalar(select(model.id).where(model.id == value, model.workspace_id == workspace_id))
    if found is None:
        raise NotFound(f"query: {key}: {what} {_shown(value)}")
    return value


def _inbox(db: Session, workspace_id: str, given: dict[str, str]) -> dict[str, str]:
    """The inbox's filters, each one ``inbox_page`` takes (where the page ignores a value
    it cannot read, a saved view refuses it)."""
    checks: dict[str, Callable[[str, str], str]] = {
        "view": lambda k, v: _one_of(k, v, list(inbox_filters.VIEWS)),
        "status": lambda k, v: _one_of(k, v, [s.value for s in Status] + ["all"]),
        "inbox_id": lambda k, v: _of_workspace(db, Inbox, k, v, workspace_id, "inbox"),
        "team_id": lambda k, v: _of_workspace(db, Team, k, v, workspace_id, "team"),
        "channel": lambda k, v: _one_of(k, v, channel_registry.names()),
        "priority": lambda k, v: _one_of(k, v, [p.value for p in Priority]),
        "sla_state": lambda k, v: _one_of(k, v, [s.value for s in SlaState]),
        "active_from": _day,
        "active_until": _day,
        "sort": lambda k, v: _one_of(k, v, [s.value for s in Sort]),
    }
    return {k: checks[k](k, v) if k in checks else v for k, v in given.items() if v}


def _customers(db: Session, workspace_id: str, given: dict[str, str]) -> dict[str, str]:
    """The customers list's filters: ``attr`` and ``value`` only together ("plan" is "Pro")."""
    if bool(given.get("attr")) != bool(given.get("value")):
        raise Invalid("query: attr and value go together: give both, or neither")
    if given.get("attr"):
        # As the page reads it (customers.attribute_is): a view it would refuse is not saved.
        try:
            customers.attribute_is(
                db, workspace_id=workspace_id, key=given["attr"], value=given["value"]
            )
        except Invalid as exc:
            raise Invalid(f"query: attr: {exc.detail}") from exc
    return given


_CHECKS = {"inbox": _inbox, "customers": _customers}


def canonical(db: Session, *, workspace_id: str, page: str, query: str) -> str:
    """A client's query string for ``page`` (with or without its "?") in canonical form,
    once every filter in it is found to be one the page takes: an unknown or repeated key,
    ``cursor`` (a place in a list, not a filter) or a bad value is a 422 problem naming the
    key; an inbox or team id that is not this workspace's, a 404."""
    if page not in KEYS:
        raise Invalid(f"page: one of {', '.join(PAGES)}; not {_shown(page)}")
    given: dict[str, str] = {}
    for key, value in parse_qsl(query.strip().removeprefix("?"), keep_blank_values=True):
        if "\x00" in key or "\x00" in value:
            raise Invalid("query: a filter cannot hold a NUL character")
        if key == "cursor":
            raise Invalid("query: cursor is a place in a list, not a filter: leave it out")
        if key not in KEYS[page]:
            raise Invalid(f"query: unknown filter {_shown(key)} for {_PAGE_SAID[page]}")
        if key in given:
            raise Invalid(f"query: {key} is given twice: give it once")
        given[key] = value.strip()
        longest = _LONGEST.get(key)  # the others are checked against what they may be
        if longest is not None and len(given[key]) > longest:
            raise Invalid(f"query: {key} is at most {longest} characters")
    # In the page's order: of two wrong filters, the problem names the same one each time.
    ordered = {k: given[k] for k in KEYS[page] if k in given}
    if page == "inbox" and not ordered.get("view"):
        # The inbox opens on the member's own (``inbox_page``): said, so that the view
        # matches the page it opens, which always names its view.
        ordered["view"] = "mine"
    out = encode(page, _CHECKS[page](db, workspace_id, ordered))
    if len(out) > QUERY_MAX:
        raise Invalid(f"query: at most {QUERY_MAX:,} characters, once encoded")
    return out


def rename_label(db: Session, *, workspace_id: str, old: str, new: str) -> int:
    """Make the workspace's inbox views (shared, and every member's own) filter on the label
    ``new`` where they filtered on ``old``, as its conversations now have it; how many."""
    changed = 0
    for view in db.scalars(
        select(SavedView).where(SavedView.workspace_id == workspace_id, SavedView.page == "inbox")
    ):
        values = dict(parse_qsl(view.query))
        if values.get("label") == old:
            view.query = encode("inbox", {**values, "label": new})
            view.updated_at = utcnow()
            changed += 1
    return changed


def drop_label(
    db: Session, *, workspace_id: str, name: str, reader: str
) -> list[tuple[SavedView, str]]:
    """Make the workspace's inbox views (shared, and every member's own) that filtered on
    the label ``name``, deleted, filter on no label: each, with what it is said for
    ``reader``, an admin: "view 'VIP'", "your own view 'Mine'", "Ann's own view 'Mine'"
    (only she sees it). Left on the label, such a view showed nothing from then on."""
    said = []
    for view, owner in db.execute(
        select(SavedView, User)
        .outerjoin(User, User.id == SavedView.owner_id)
        .where(SavedView.workspace_id == workspace_id, SavedView.page == "inbox")
        .order_by(SavedView.name, SavedView.id)
    ):
        values = dict(parse_qsl(view.query))
        if values.get("label") != name:
            continue
        view.query = encode("inbox", {k: v for k, v in values.items() if k != "label"})
        view.updated_at = utcnow()
        if view.owner_id is None:
            whose = ""
        elif view.owner_id == reader:
            whose = "your own "
        else:
            whose = f"{owner.name or owner.email}'s own " if owner else "a member's own "
        said.append((view, f"{whose}view {view.name!r}"))
    return said


# --- the views ------------------------------------------------------------------------


def _visible_to(user_id: str) -> ColumnElement[bool]:
    return or_(SavedView.owner_id.is_(None), SavedView.owner_id == user_id)


def listed(
    db: Session, *, workspace_id: str, user_id: str, page: str | None = None
) -> list[SavedView]:
    """The views ``user_id`` sees (the workspace's shared ones and their own), of ``page`` or
    of every page: by page, position, then name whatever its case."""
    stmt = select(SavedView).where(SavedView.workspace_id == workspace_id, _visible_to(user_id))
    if page is not None:
        stmt = stmt.where(SavedView.page == page)
    # Sorted here, not by the database: SQLite's lower() folds ASCII alone.
    return sorted(db.scalars(stmt), key=lambda v: (v.page, v.position, v.name.casefold(), v.id))


def counts(
    db: Session, *, workspace_id: str, user_id: str, views: Iterable[SavedView]
) -> dict[str, int | None]:
    """How many conversations each of these views of the inbox (as ``listed`` gives them to
    ``user_id``) lists for that member (Mine is theirs), by the view's id: read as the inbox
    reads the view's query, counted up to ``conversations.COUNT_LIMIT``; ``None`` for one
    whose count would cost too much. Kept a few seconds (``conversations.counts``)."""
    each = {}
    for view in views:
        if view.page == "inbox" and view.workspace_id == workspace_id:
            shown, filters = inbox_filters.read(dict(parse_qsl(view.query)))
            each[view.id] = inbox_filters.search_args(shown, filters, user_id=user_id)
    return conversations.counts(db, workspace_id=workspace_id, each=each)


def get(db: Session, *, workspace_id: str, view_id: str, user_id: str) -> SavedView:
    """The view with this id if ``user_id`` sees it; else a 404 problem (another member's
    own view reads as one that does not exist)."""
    row = db.scalar(
        select(SavedView).where(
            SavedView.id == view_id,
            SavedView.workspace_id == workspace_id,
            _visible_to(user_id),
        )
    )
    if row is None:
        raise NotFound("saved view")
    return row


def may_change(view: SavedView, *, user_id: str, admin: bool) -> bool:
    """Whether the member may rename, edit or delete it: their own, or a shared one and they
    are an admin or owner."""
    return view.owner_id == user_id if view.owner_id is not None else admin


def _check_may_change(view: SavedView, *, user_id: str, admin: bool) -> None:
    if view.owner_id is None and not admin:
        raise Forbidden("only admins and owners change the workspace's shared views")
    if view.owner_id is not None and view.owner_id != user_id:
        raise NotFound("saved view")


def _name(name: str) -> str:
    return naming.clean(name, what="a saved view", most=NAME_MAX)


def _refuse_taken_name(
    db: Session,
    *,
    workspace_id: str,
    page: str,
    owner_id: str | None,
    name: str,
    other_than: str | None = None,
) -> None:
    """Refuse a name the workspace's shared views of the page already have (for a shared
    one), or the owner's own views of it (for their own), whatever its case. The
    workspace's row is held first: two views saved at once under one name, the second
    waits, then sees the first."""
    lock_row(db, Workspace, workspace_id)
    owner = SavedView.owner_id.is_(None) if owner_id is None else SavedView.owner_id == owner_id
    stmt = select(SavedView.name).where(
        SavedView.workspace_id == workspace_id, SavedView.page == page, owner
    )
    if other_than is not None:
        stmt = stmt.where(SavedView.id != other_than)
    if naming.taken(name, db.scalars(stmt)):
        whose = "the workspace has a shared view" if owner_id is None else "you have a view"
        raise Conflict(f"{whose} of {_PAGE_SAID[page]} named “{name}”: choose another name")


def create(
    db: Session,
    *,
    workspace_id: str,
    user_id: str,
    admin: bool,
    page: str,
    name: str,
    query: str,
    shared: bool = False,
    position: int = 0,
) -> SavedView:
    """A new view of ``page``: the member's own, or shared with the workspace (``admin``
    only). Its query is kept in canonical form."""
    if shared and not admin:
        raise Forbidden("only admins and owners share views with the whole workspace")
    query = canonical(db, workspace_id=workspace_id, page=page, query=query)
    name = _name(name)
    owner_id = None if shared else user_id
    _refuse_taken_name(db, workspace_id=workspace_id, page=page, owner_id=owner_id, name=name)
    row = SavedView(
        workspace_id=workspace_id,
        page=page,
        name=name,
        query=query,
        owner_id=owner_id,
        position=position,
        created_by=user_id,
    )
    db.add(row)
    db.flush()
    return row


def update(
    db: Session,
    *,
    view: SavedView,
    user_id: str,
    admin: bool,
    name: str | None = None,
    query: str | None = None,
    position: int | None = None,
) -> dict[str, Any]:
    """Change what is given of a view's name, query (made canonical) and position; returns
    what changed. Shared views are changed by admins and owners, one's own by its owner."""
    _check_may_change(view, user_id=user_id, admin=admin)
    changed: dict[str, Any] = {}
    if name is not None and _name(name) != view.name:
        changed["name"] = _name(name)
        _refuse_taken_name(
            db,
            workspace_id=view.workspace_id,
            page=view.page,
            owner_id=view.owner_id,
            name=changed["name"],
            other_than=view.id,
        )
    if query is not None:
        query = canonical(db, workspace_id=view.workspace_id, page=view.page, query=query)
        if query != view.query:
            changed["query"] = query
    if position is not None and position != view.position:
        changed["position"] = position
    for key, value in changed.items():
        setattr(view, key, value)
    if changed:
        view.updated_at = utcnow()
        db.flush()
    return changed


def delete(db: Session, *, view: SavedView, user_id: str, admin: bool) -> None:
    """Delete a view (who may: as ``update``)."""
    _check_may_change(view, user_id=user_id, admin=admin)
    db.delete(view)
    db.flush()
