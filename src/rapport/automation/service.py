"""Automation: event -> conditions -> actions, macros, and signed outgoing webhooks.

Rules never loop: a change made by a rule carries the ids of the rules that caused it, and
an event is never handed back to a rule that is among its causes (nor evaluated beyond a
small depth at all).

A macro is a named list of the same actions, without an event or conditions: an agent runs
it by hand on a conversation (or many), and its changes are that agent's (``Doer``), made
through the same functions as a rule's.
"""

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
import regex
from sqlalchemy import ColumnElement, and_, delete, func, or_, select
from sqlalchemy.orm import Session

from rapport import naming, outbound, templating
from rapport.auth.models import Membership, Role, Team, User
from rapport.automation.models import Macro, Rule, Webhook, WebhookDelivery
from rapport.cache import TtlCache
from rapport.channels.models import Inbox
from rapport.conversations import sla
from rapport.conversations.models import (
    CannedResponse,
    Conversation,
    ConversationLabel,
    Direction,
    Message,
    MessageKind,
    Priority,
    Status,
)
from rapport.crypto import SecretBox, hmac_sha256_hex, random_token
from rapport.customers.models import Customer
from rapport.db import hold, lock_row, savepoint, transient, utcnow
from rapport.jobs.models import Job, JobState
from rapport.jobs.service import enqueue
from rapport.problems import Conflict, Forbidden, Invalid, NotFound, Problem, Unsendable
from rapport.scoped import get_scoped
from rapport.workspaces.models import Workspace

EVENTS = frozenset(
    {
        "conversation.created",
        "message.received",
        "conversation.status_changed",
        "conversation.assigned",
        "sla.warning",
        "sla.breached",
        "customer.attribute_changed",
    }
)
OPERATORS = frozenset(
    {"equals", "not_equals", "contains", "not_contains", "regex", "in", "gt", "lt", "exists", "is"}
)
ACTIONS = frozenset(
    {
        "assign_agent",
        "assign_team",
        "assign_round_robin",
        "add_label",
        "remove_label",
        "set_priority",
        "set_status",
        "send_canned",
        "send_message",
        "add_note",
        "send_webhook",
        "email_team",
    }
)
# What a macro may hold: the actions on the conversation at hand that an agent could take
# by hand, and sending a message written in the macro. Not what reaches beyond it (webhooks,
# a team's email) or picks someone else's next conversation for them (round robin).
MACRO_ACTIONS = frozenset(
    {
        "assign_agent",
        "assign_team",
        "add_label",
        "remove_label",
        "set_priority",
        "set_status",
        "send_canned",
        "send_message",
        "add_note",
    }
)
# The value of a macro's assign_agent that names whoever runs it.
ME = "me"
MACRO_MAX_ACTIONS = 20
MACRO_NAME_MAX = 120
VISIBILITIES = ("workspace", "personal")
# The actions whose value is a template, rendered for the conversation (canned.context).
_TEMPLATED = frozenset({"add_note", "send_message"})
MAX_DEPTH = 5
log = logging.getLogger(__name__)
# How long one regex condition may search a text: an admin's pattern runs on whatever a
# customer writes (up to 10,000 characters), and nested repeats backtrack exponentially.
REGEX_SECONDS = 0.1
# How many times counted repeats ({n}, {m,n}) nested in one another may repeat a part of
# a regex condition, multiplied: compiling expands them (10,000 compiles in ~5 ms).
MAX_REPEATS = 10_000
_COUNTED = regex.compile(r"\{(\d*)(?:,(\d*))?\}")


@functools.lru_cache(maxsize=1024)
def _repeated(pattern: str) -> int:
    """The most times a part of ``pattern`` is repeated by counted repeats, those nested in
    one another multiplied: ``(a{100}){100}`` is 10,000."""

    def sequence(i: int) -> tuple[int, int]:  # up to the ")" that ends it, or the end
        worst = 1
        while i < len(pattern) and pattern[i] != ")":
            inner = 1
            if pattern[i] == "\\":
                i += 2
            elif pattern[i] == "[":  # a class repeats nothing inside it
                i += 2 if pattern[i + 1 : i + 2] == "]" else 1
                while i < len(pattern) and pattern[i] != "]":
                    i += 2 if pattern[i] == "\\" else 1
                i += 1
            elif pattern[i] == "(":
                inner, i = sequence(i + 1)
                i += 1
            else:
                i += 1
            if counted := _COUNTED.match(pattern, i):
                bounds = [int(n) for n in counted.groups() if n]
                inner *= max(bounds, default=1)
                i = counted.end()
            worst = max(worst, inner)
        return worst, i

    worst, i = sequence(0)
    while i < len(pattern):  # past a ")" that closes nothing
        more, i = sequence(i + 1)
        worst = max(worst, more)
    return worst


_CAUSES = "automation_caused_by"


# --- defining rules ----------------------------------------------------------------------


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float)  # bool is an int


def _is_text_or_number(value: Any) -> bool:
    return isinstance(value, str | int | float) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    # The settings form sends what was typed: "3" is a number too.
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return False
    try:
        float(value)
    except (ValueError, OverflowError):
        return False
    return True


# What each operator compares a fact with, said and checked.
_VALUES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "equals": ("a text, number, true, false or null", _is_scalar),
    "not_equals": ("a text, number, true, false or null", _is_scalar),
    "contains": ("a text or a number", _is_text_or_number),
    "not_contains": ("a text or a number", _is_text_or_number),
    "regex": ("a pattern (a text)", lambda v: isinstance(v, str)),
    "in": ("a list of texts or numbers", lambda v: isinstance(v, list) and all(map(_is_scalar, v))),
    "gt": ("a number", _is_number),
    "lt": ("a number", _is_number),
    "exists": ("true or false", lambda v: v is None or isinstance(v, bool)),
    "is": ("true or false", lambda v: v is None or isinstance(v, bool)),
}


# Which ops can match what a field holds (see facts()): a list of labels never "equals" a
# text, a status never "contains" one; "exists" asks of any.
_TEXT_OPS = frozenset({"equals", "not_equals", "contains", "not_contains", "regex", "in", "exists"})
_CHOICE_OPS = frozenset({"equals", "not_equals", "in", "exists"})
_LIST_OPS = frozenset({"contains", "not_contains", "in", "exists"})
_FLAG_OPS = frozenset({"is", "exists"})
_NUMBER_OPS = frozenset({"gt", "lt", "exists"})
# The ops whose value names what the field holds (a status, a team, a label), checked.
_COMPARED = frozenset({"equals", "not_equals", "contains", "not_contains", "in"})
# What each event comes with: a customer always (the conversation's, or the one changed).
EVENT_HAS = {
    "conversation": EVENTS - {"customer.attribute_changed"},
    "message": frozenset({"message.received"}),
    "customer": EVENTS,
}


def _channels() -> list[str]:
    from rapport.channels import base  # its channel packages build on conversations

    return base.names()


def _priorities() -> list[str]:
    return [p.value for p in Priority]


@dataclass(frozen=True)
class Field:
    """A field a condition can test: what it is ``of`` (which events come with it, see
    EVENT_HAS), the ``ops`` that can match what it holds, and what it is compared with: one
    of ``choices()``, the id of one of the workspace's ``ids`` ("member", "team",
    "inbox"), a label (``labels``), or anything the op takes. The rule form offers exactly
    this (web.views), and ``validate`` accepts exactly this."""

    of: str
    ops: frozenset[str]
    choices: Callable[[], list[str]] | None = None
    ids: str | None = None
    labels: bool = False

    def problem(
        self, db: Session, *, workspace_id: str, name: str, values: list[Any]
    ) -> str | None:
        """Why one of ``values`` cannot be what the field holds (None: all can)."""
        if self.choices is not None:
            known = self.choices()
            wrong = [v for v in values if _norm(v) not in known]  # compared as holds() does
            return f"{name} is one of {_or(known)}; not {_shown(wrong[0])}" if wrong else None
        if self.ids is not None:
            return _unknown_ids(db, workspace_id=workspace_id, what=self.ids, values=values)
        if self.labels:
            return next(filter(None, map(_bad_label, values)), None)
        return None


ANY_ATTRIBUTE = Field("customer", OPERATORS)
ATTRIBUTES = "customer.attributes."
FIELDS: dict[str, Field] = {
    "channel": Field("conversation", _CHOICE_OPS, choices=_channels),
    "inbox_id": Field("conversation", _CHOICE_OPS, ids="inbox"),
    "priority": Field("conversation", _CHOICE_OPS, choices=_priorities),
    "status": Field("conversation", _CHOICE_OPS, choices=lambda: [s.value for s in Status]),
    "assignee_id": Field("conversation", _CHOICE_OPS, ids="member"),
    "team_id": Field("conversation", _CHOICE_OPS, ids="team"),
    "labels": Field("conversation", _LIST_OPS, labels=True),
    "business_hours": Field("conversation", _FLAG_OPS),
    "message.text": Field("message", _TEXT_OPS),
    "message.direction": Field(
        "message", _CHOICE_OPS, choices=lambda: [d.value for d in Direction]
    ),
    # What triage found (assistant.triage): its keys, and the learnt ones' confidences.
    "message.language": Field("message", _TEXT_OPS),
    "message.language_confidence": Field("message", _NUMBER_OPS),
    "message.sentiment": Field(
        "message", _CHOICE_OPS, choices=lambda: ["negative", "neutral", "positive"]
    ),
    "message.sentiment_score": Field("message", _NUMBER_OPS),
    "message.spam": Field("message", _FLAG_OPS),
    "message.spam_signals": Field("message", _LIST_OPS),
    "message.priority": Field("message", _CHOICE_OPS, choices=_priorities),
    "message.priority_confidence": Field("message", _NUMBER_OPS),
    "message.category": Field("message", _TEXT_OPS),
    "message.category_confidence": Field("message", _NUMBER_OPS),
    "customer.name": Field("customer", _TEXT_OPS),
    "customer.email": Field("customer", _TEXT_OPS),
    "customer.phone": Field("customer", _TEXT_OPS),
}


def _field(name: Any) -> Field | None:
    if isinstance(name, str) and name.startswith(ATTRIBUTES) and len(name) > len(ATTRIBUTES):
        return ANY_ATTRIBUTE
    return FIELDS.get(name) if isinstance(name, str) else None


def validate(
    db: Session,
    *,
    workspace_id: str,
    event: str,
    conditions: list[dict[str, Any]],
    actions: list[dict[str, Any]],
) -> None:
    """Refuse a rule that could not run, saying which part is wrong and why.

    The workspace's row is held first, as ``refuse_if_named`` holds it: a rule saved while
    the team (canned response, webhook) it names is deleted waits for that, then finds it
    gone, instead of both committing (on PostgreSQL, each read the other's before)."""
    lock_row(db, Workspace, workspace_id)
    if event not in EVENTS:
        raise Invalid(f"unknown event {event!r}; one of: {', '.join(sorted(EVENTS))}")
    for i, c in enumerate(conditions):
        _check_condition(db, workspace_id=workspace_id, event=event, where=f"conditions[{i}]", c=c)
    if not actions:
        raise Invalid("a rule needs at least one action")
    _check_actions(db, workspace_id=workspace_id, event=event, actions=actions, allowed=ACTIONS)


def _check_actions(
    db: Session,
    *,
    workspace_id: str,
    event: str | None,
    actions: list[dict[str, Any]],
    allowed: frozenset[str],
) -> None:
    """Refuse the first of a rule's or a macro's actions that could not run, naming it
    (``actions[2].value``) and saying why: what ``_action_problem`` finds, or its
    template's syntax."""
    for i, a in enumerate(actions):
        wrong = _action_problem(
            db, workspace_id=workspace_id, event=event, action=a, allowed=allowed
        )
        if wrong is not None:
            part, why = wrong
            raise Invalid(f"actions[{i}].{part}: {why}")
        if a["type"] in _TEMPLATED:
            try:
                templating.check(a["value"])
            except Invalid as exc:
                raise Invalid(f"actions[{i}].value: {exc.detail}") from exc


def _check_condition(
    db: Session, *, workspace_id: str, event: str, where: str, c: dict[str, Any]
) -> None:
    name, op = c.get("field"), c.get("op")
    value: Any = c.get("value")
    field = _field(name)
    if field is None:
        raise Invalid(
            f"{where}.field: unknown field {_shown(name)}; one of: "
            f"{', '.join(sorted(FIELDS))}, customer.attributes.<name>"
        )
    if op not in OPERATORS:
        raise Invalid(
            f"{where}.op: unknown op {_shown(op)}; one of: {', '.join(sorted(OPERATORS))}"
        )
    kind, fits = _VALUES[op]
    if not fits(value):
        raise Invalid(f"{where}.value: a condition with op {op!r} compares with {kind}: {c}")
    if op == "in" and not value:
        raise Invalid(f"{where}.value: op 'in' needs at least one value to compare with")
    if op not in field.ops:
        raise Invalid(f"{where}.op: {name} is compared with {_or(sorted(field.ops))}; not {op}")
    if event not in EVENT_HAS[field.of]:
        raise Invalid(f"{where}.field: {name} is a {field.of}'s, and {event} comes with none")
    if op == "regex":
        if len(value) > 200:
            raise Invalid(f"{where}.value: a regex condition is at most 200 characters")
        if _repeated(value) > MAX_REPEATS:
            # Compiling expands them: (((a{100}){100}){100}){10} took 11 s and more, a
            # cost no search timeout bounds, paid by every worker that reads the rule.
            raise Invalid(
                f"{where}.value: counted repeats nested in one another may repeat a part "
                f"at most {MAX_REPEATS:,} times"
            )
        try:
            regex.compile(value, flags=regex.IGNORECASE)
        except regex.error as exc:
            raise Invalid(f"{where}.value: bad regex {value!r}: {exc}") from exc
    if op in _COMPARED:
        why = field.problem(
            db, workspace_id=workspace_id, name=str(name), values=value if op == "in" else [value]
        )
        if why is not None:
            raise Invalid(f"{where}.value: {why}")


def _action_problem(
    db: Session,
    *,
    workspace_id: str,
    event: str | None,
    action: dict[str, Any],
    allowed: frozenset[str] = ACTIONS,
) -> tuple[str, str] | None:
    """Which part of the action cannot work (``type`` or ``value``) and why; None if it can.
    ``allowed``: the actions it may be (a rule's ACTIONS, a macro's MACRO_ACTIONS);
    ``event``: the rule's, None for a macro, which always has a conversation at hand.

    Asked when a rule or macro is saved, and again before each action runs: what it names
    may have gone since (an agent removed from the workspace, a team deleted)."""
    kind, value = action.get("type"), action.get("value")
    if not isinstance(kind, str) or kind not in allowed:
        return "type", f"unknown action {_shown(kind)}; one of: {', '.join(sorted(allowed))}"
    if event is not None and kind != "send_webhook" and event not in EVENT_HAS["conversation"]:
        return "type", f"{kind} acts on a conversation, and {event} comes with none"
    why: str | None = None
    if kind == "assign_agent":
        why = _unknown_ids(db, workspace_id=workspace_id, what="member", values=[value])
    elif kind in ("assign_team", "email_team"):
        why = _unknown_ids(db, workspace_id=workspace_id, what="team", values=[value])
    elif kind == "assign_round_robin" and value not in (None, ""):  # none: the conversation's
        why = _unknown_ids(db, workspace_id=workspace_id, what="team", values=[value])
    elif kind in ("add_label", "remove_label"):
        why = _bad_label(value)
    elif kind == "set_priority":
        why = _not_one_of("a priority", [p.value for p in Priority], value)
    elif kind == "set_status":
        # Snoozing needs a time to wake at, which an action has no place for.
        why = _not_one_of("a status", [s.value for s in Status if s != Status.snoozed], value)
    elif kind == "send_canned":
        why = _unknown_ids(db, workspace_id=workspace_id, what="canned response", values=[value])
    elif kind == "send_webhook":
        why = _unknown_ids(db, workspace_id=workspace_id, what="webhook", values=[value])
    elif kind in _TEMPLATED:
        what = "note" if kind == "add_note" else "message"
        if not isinstance(value, str) or not value.strip():
            why = f"{kind} needs the {what}'s text, not {_shown(value)}"
        elif len(value) > NOTE_MAX:
            why = f"a {what} is at most {NOTE_MAX:,} characters"
    return None if why is None else ("value", why)


def _shown(value: Any) -> str:
    """A value as a problem quotes it: as JSON (``"Bob Agent"``, ``null``), and short."""
    text = orjson.dumps(value).decode()
    return text if len(text) <= 80 else text[:79] + "…"


def _or(words: list[str]) -> str:
    return ", ".join(words[:-1]) + f" or {words[-1]}" if len(words) > 1 else words[0]


# Who may be given conversations: as routing.pick_agent picks and conversations.assign
# allows (a viewer only reads).
ASSIGNABLE = (Role.agent, Role.admin, Role.owner)
# What a rule may name by id, each found only among the rule's own workspace's rows.
_NAMED: dict[str, type[Team | Inbox | CannedResponse | Webhook]] = {
    "team": Team,
    "inbox": Inbox,
    "canned response": CannedResponse,
    "webhook": Webhook,
}
# As conversations keep labels (conversations.labels.clean) and agents write notes.
LABEL_MAX = 100
NOTE_MAX = 100_000


def _unknown_ids(db: Session, *, workspace_id: str, what: str, values: list[Any]) -> str | None:
    """Why one of ``values`` names no ``what`` of this workspace (a member: none who can be
    assigned conversations); None when all do. An id of another workspace's row reads exactly
    as one that never existed: the answer says nothing about other workspaces."""
    ids = [v for v in values if isinstance(v, str)]
    roles: dict[str, Role] = {}
    found: set[str] = set()
    if ids and what == "member":
        roles = dict(
            db.execute(
                select(Membership.user_id, Membership.role).where(
                    Membership.workspace_id == workspace_id, Membership.user_id.in_(ids)
                )
            ).all()
        )
        found = set(roles)
    elif ids:
        model = _NAMED[what]
        found = set(
            db.scalars(
                select(model.id).where(model.workspace_id == workspace_id, model.id.in_(ids))
            )
        )
    for value in values:
        if not isinstance(value, str) or value not in found:
            return f"no {what} of this workspace has the id {_shown(value)}"
        if what == "member" and roles[value] not in ASSIGNABLE:
            return (
                f"the member {_shown(value)} is a {roles[value].value},"
                " who cannot be assigned conversations"
            )
    return None


def _bad_label(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return f"a label is a text that is not blank, not {_shown(value)}"
    if len(value.strip()) > LABEL_MAX:
        return f"a label is at most {LABEL_MAX} characters"
    return None


def _not_one_of(what: str, options: list[str], value: Any) -> str | None:
    if isinstance(value, str) and value in options:
        return None
    return f"{what} is one of {_or(options)}; not {_shown(value)}"


def create_rule(db: Session, *, workspace_id: str, data: dict[str, Any]) -> Rule:
    """Add a rule after checking that it can run."""
    validate(
        db,
        workspace_id=workspace_id,
        event=data["event"],
        conditions=data.get("conditions", []),
        actions=data.get("actions", []),
    )
    row = Rule(workspace_id=workspace_id, **data)
    db.add(row)
    db.flush()
    _RULE_EVENTS.forget(workspace_id)
    return row


def update_rule(db: Session, *, rule: Rule, data: dict[str, Any]) -> Rule:
    """Replace a rule's definition (name, event, conditions, actions, order, switches)."""
    definition = {
        "event": data["event"],
        "conditions": data.get("conditions", []),
        "actions": data.get("actions", []),
    }
    # A rule that something removed since broke (its agent left, its team was deleted) can
    # still be switched off, renamed or moved as it stands; it is checked once switched on
    # or changed.
    kept = all(getattr(rule, key) == value for key, value in definition.items())
    if not (kept and data.get("enabled") is False):
        validate(db, workspace_id=rule.workspace_id, **definition)
    for key, value in data.items():
        setattr(rule, key, value)
    rule.last_error, rule.last_error_at = None, None  # whatever failed was the old version
    db.flush()
    _RULE_EVENTS.forget(rule.workspace_id)
    return rule


def get_rule(db: Session, *, workspace_id: str, rule_id: str) -> Rule:
    return get_scoped(db, Rule, rule_id, workspace_id=workspace_id, name="rule")


def delete_rule(db: Session, *, rule: Rule) -> None:
    db.delete(rule)
    _RULE_EVENTS.forget(rule.workspace_id)


_LABEL_OPS = frozenset({"equals", "not_equals", "contains", "not_contains", "in"})


def _with_labels(
    rule: Rule, change: Callable[[Any], Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rule's conditions and actions with ``change`` applied to every value that names
    labels (label conditions, add/remove label actions): new lists, the rule untouched."""
    conditions = [
        {**c, "value": change(c["value"])}
        if c.get("field") == "labels" and c.get("op") in _LABEL_OPS and "value" in c
        else c
        for c in rule.conditions
    ]
    return conditions, _with_label_actions(rule.actions, change)


def _with_label_actions(
    actions: list[dict[str, Any]], change: Callable[[Any], Any]
) -> list[dict[str, Any]]:
    """``actions`` (a rule's, a macro's) with ``change`` applied to each add/remove label
    action's value: a new list, the one given untouched."""
    return [
        {**a, "value": change(a["value"])}
        if a.get("type") in ("add_label", "remove_label") and "value" in a
        else a
        for a in actions
    ]


def rename_label(db: Session, *, workspace_id: str, old: str, new: str) -> int:
    """Make the workspace's rules and macros say ``new`` wherever they named the label
    ``old`` (label conditions and add/remove label actions); returns how many changed."""

    def swap(value: Any) -> Any:
        if isinstance(value, str):
            return new if _norm(value) == old else value
        if isinstance(value, list):
            return list(dict.fromkeys(swap(v) for v in value))
        return value

    changed = 0
    for rule in rules(db, workspace_id=workspace_id):
        conditions, actions = _with_labels(rule, swap)
        if conditions != rule.conditions or actions != rule.actions:
            # New lists, not edits in place: the JSON columns only see assignments.
            rule.conditions, rule.actions = conditions, actions
            changed += 1
    for macro in db.scalars(select(Macro).where(Macro.workspace_id == workspace_id)):
        actions = _with_label_actions(macro.actions, swap)
        if actions != macro.actions:
            macro.actions, macro.updated_at = actions, utcnow()
            changed += 1
    return changed


def naming_label(db: Session, *, workspace_id: str, name: str) -> list[str]:
    """What of the workspace's automation names the label, said for an admin: each rule
    that tests for it or adds or removes it, each macro that adds or removes it (a member's
    own macro with its owner's name: only they can change it)."""
    gone = object()

    def strike(value: Any) -> Any:
        if isinstance(value, list):
            return [strike(v) for v in value]
        return gone if isinstance(value, str) and _norm(value) == name else value

    said = [
        f"rule {rule.name!r}"
        for rule in rules(db, workspace_id=workspace_id)
        if _with_labels(rule, strike) != (rule.conditions, rule.actions)
    ]
    macros, _ = _macros_naming(
        db, workspace_id, lambda actions: _with_label_actions(actions, strike) != actions
    )
    return said + macros


def _macros_naming(
    db: Session,
    workspace_id: str,
    names: Callable[[list[dict[str, Any]]], bool],
    *,
    reader: str | None = None,
) -> tuple[list[str], bool]:
    """The workspace's macros whose actions ``names``, said for an admin: "macro 'X'", or
    a member's own with its owner's name ("Ann's own macro 'X'": only they can change it).
    Said to a ``reader`` who is no admin, another member's own macro, which they cannot
    see, is only counted ("a colleague's own macro"). And whether any is another member's
    own (the reader's, or anyone's for an admin), which only its owner can change."""
    said, hidden, theirs = [], 0, False
    for macro, owner in db.execute(
        select(Macro, User)
        .outerjoin(User, User.id == Macro.created_by)
        .where(Macro.workspace_id == workspace_id)
        .order_by(Macro.name)
    ):
        if not names(macro.actions):
            continue
        personal = macro.visibility == "personal"
        theirs = theirs or (personal and macro.created_by != reader)
        if personal and reader is not None and macro.created_by != reader:
            hidden += 1
        elif personal and reader is not None:
            said.append(f"your own macro {macro.name!r}")
        else:
            whose = f"{owner.name or owner.email}'s own " if personal and owner else ""
            said.append(f"{whose}macro {macro.name!r}")
    if hidden:
        said.append(
            "a colleague's own macro" if hidden == 1 else f"{hidden} colleagues' own macros"
        )
    return said, theirs


def rules(db: Session, *, workspace_id: str) -> list[Rule]:
    return list(
        db.scalars(
            select(Rule)
            .where(Rule.workspace_id == workspace_id)
            .order_by(Rule.position, Rule.created_at)
        )
    )


# --- triggering ----------------------------------------------------------------------------


# Which events a workspace has rules (or webhooks) for: asked on every inbound message.
_RULE_EVENTS: TtlCache[str, frozenset[str]] = TtlCache(ttl=5.0, name="rule_events")


def _events_with_rules(db: Session, workspace_id: str) -> frozenset[str]:
    return _RULE_EVENTS.get(
        workspace_id,
        lambda: frozenset(
            db.scalars(
                select(Rule.event).where(Rule.workspace_id == workspace_id, Rule.enabled.is_(True))
            )
        ),
    )


def trigger(
    db: Session,
    *,
    workspace_id: str,
    event: str,
    conversation_id: str | None = None,
    message_id: str | None = None,
    customer_id: str | None = None,
) -> None:
    """Queue deliveries to the webhooks subscribed to this event and the workspace's rules
    for it, in the caller's transaction."""
    publish_to_webhooks(
        db,
        workspace_id=workspace_id,
        event=event,
        conversation_id=conversation_id,
        message_id=message_id,
        customer_id=customer_id,
    )
    if event not in _events_with_rules(db, workspace_id):
        return
    caused_by: list[str] = list(db.info.get(_CAUSES, []))
    if len(caused_by) >= MAX_DEPTH:
        return
    enqueue(
        db,
        name="automation",
        args={
            "event": event,
            "conversation_id": conversation_id,
            "message_id": message_id,
            "customer_id": customer_id,
            "caused_by": caused_by,
            # When it happened: "in business hours" is asked of then, not of whenever the
            # job runs (after a queue's backlog, or a retry's backoff of up to an hour).
            "at": utcnow().isoformat(),
        },
        workspace_id=workspace_id,
    )


# --- evaluating ----------------------------------------------------------------------------


def facts(
    db: Session,
    *,
    conversation: Conversation | None,
    message: Message | None,
    customer: Customer | None,
    now: datetime,
) -> dict[str, Any]:
    """What conditions can look at, as dotted names."""
    out: dict[str, Any] = {}
    if conversation is not None:
        inbox = db.get(Inbox, conversation.inbox_id)
        out |= {
            "channel": inbox.channel if inbox else None,
            "inbox_id": conversation.inbox_id,
            "priority": conversation.priority.value,
            "status": conversation.status.value,
            "assignee_id": conversation.assignee_id,
            "team_id": conversation.team_id,
            "labels": list(
                db.scalars(
                    select(ConversationLabel.label).where(
                        ConversationLabel.conversation_id == conversation.id
                    )
                )
            ),
        }
        cal = sla.calendar_for(db, conversation.workspace_id)
        out["business_hours"] = cal.always or any(
            start <= now < end for start, end in cal.intervals(now.astimezone(cal.tz).date())
        )
    if message is not None:
        out["message.text"] = message.text[:10_000]
        out["message.direction"] = message.direction.value
        for key, value in (message.meta.get("triage") or {}).items():
            out[f"message.{key}"] = value
    if customer is not None:
        out["customer.name"] = customer.name
        out["customer.email"] = customer.email
        out["customer.phone"] = customer.phone
        for key, value in customer.attributes.items():
            out[f"customer.attributes.{key}"] = value
    return out


def holds(condition: dict[str, Any], known: dict[str, Any]) -> bool:
    """Whether one condition holds for these facts (a missing fact never matches)."""
    field, op, want = condition["field"], condition["op"], condition.get("value")
    if op == "exists":
        return _present(known.get(field)) == bool(want if want is not None else True)
    if field not in known or known[field] is None:
        return op in ("not_equals", "not_contains")
    have = known[field]
    if op == "is":
        return bool(have) == bool(want)
    if op == "equals":
        return _same(have, want)
    if op == "not_equals":
        return not _same(have, want)
    if op in ("contains", "not_contains"):
        if isinstance(have, list):
            found = any(_same(x, want) for x in have)
        else:
            found = str(want).lower() in str(have).lower()
        return found if op == "contains" else not found
    if op == "regex":
        if _repeated(str(want)) > MAX_REPEATS:  # saved before validate() refused it
            raise Invalid(
                f"the pattern {want!r} repeats a part over {MAX_REPEATS:,} times, which "
                "compiling alone takes seconds for: the rule was not run"
            )
        try:
            hit = regex.search(str(want), str(have), flags=regex.IGNORECASE, timeout=REGEX_SECONDS)
        except TimeoutError as exc:
            raise Invalid(
                f"the pattern {want!r} took over {REGEX_SECONDS:g} s on this text"
                " (nested repeats backtrack without end): the rule was not run"
            ) from exc
        return hit is not None
    if op == "in":
        if isinstance(have, list):  # labels: any of them among those named
            return any(_same(x, w) for x in have for w in want or [])
        return any(_same(have, w) for w in want or [])
    try:
        if op == "gt":
            return float(have) > float(want)  # type: ignore[arg-type]
        if op == "lt":
            return float(have) < float(want)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return False


def _present(value: Any) -> bool:
    """Whether a fact is there to test: no labels (an empty list) or a blank name is none,
    as much as a missing one (``exists`` asks "has it any?")."""
    if isinstance(value, str):
        return bool(value.strip())
    return value is not None and value != []


def _norm(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _same(have: Any, want: Any) -> bool:
    """Whether a fact is the value a condition names, case and outer spaces aside. A number
    or true/false on one side and a text on the other are compared as the text spells it:
    the rule form sends what was typed ("5", "true"), and a customer attribute defined as a
    number or a boolean holds 5 or true (an imported one may hold the text instead)."""
    if isinstance(have, str) == isinstance(want, str) or have is None or want is None:
        return bool(_norm(have) == _norm(want))
    text, typed = (have, want) if isinstance(have, str) else (want, have)
    if isinstance(typed, bool):
        return bool(_norm(text) == ("true" if typed else "false"))
    if isinstance(typed, int | float):
        try:
            return float(text) == typed
        except (ValueError, OverflowError):
            return False
    return False


# The actions that send the customer a message (an automatic reply, when a rule's).
_SENDS = frozenset({"send_canned", "send_message"})


def run(
    db: Session,
    *,
    workspace_id: str,
    event: str,
    conversation_id: str | None,
    message_id: str | None,
    customer_id: str | None,
    caused_by: list[str],
    box: SecretBox,
    at: datetime | None = None,
) -> list[str]:
    """Evaluate the event's rules in order and run the actions of those that match;
    ``at``: when the event happened (now, if not said).

    Returns the ids of the rules that ran.
    """
    candidates = [r for r in rules(db, workspace_id=workspace_id) if r.event == event and r.enabled]
    if conversation_id:
        if any(a.get("type") in _SENDS for r in candidates for a in r.actions):
            # The customer's row first, as a reply of the rule's holds it (to count the
            # automatic replies they had, ``service.automatic_refusal``), then the
            # conversation's: ingest writes a customer before their conversation, and
            # taken the other way round, a rule answering as the customer wrote again and
            # the message coming in each waited on the other (a deadlock).
            owner = db.scalar(
                select(Conversation.customer_id).where(
                    Conversation.workspace_id == workspace_id, Conversation.id == conversation_id
                )
            )
            if owner is not None:
                lock_row(db, Customer, owner)
        # Held, and read as it is now, as a write to it is (conversations.get_writable): read
        # unheld while a merge of it committed, its note or reply went into the emptied
        # conversation, shown nowhere. The merge holds it too: this waits, then sees it.
        hold(db, Conversation, conversation_id)
    conv = db.get(Conversation, conversation_id) if conversation_id else None
    msg = db.get(Message, message_id) if message_id else None
    customer_id = customer_id or (conv.customer_id if conv else None)
    customer = db.get(Customer, customer_id) if customer_id else None
    for row in (conv, msg, customer):
        if row is not None and row.workspace_id != workspace_id:
            return []
    if conv is not None and conv.merged_into_id is not None:
        # Merged into another, it is closed for good: its survivor is where rules act (a
        # survey on resolution, say, would reach the customer for a conversation that
        # lives on elsewhere). Webhooks were still told.
        return []
    ran: list[str] = []
    for rule in candidates:
        if rule.id in caused_by:
            continue  # this rule's own change: running it again is how loops start
        known = facts(db, conversation=conv, message=msg, customer=customer, now=at or utcnow())
        try:
            if not all(holds(c, known) for c in rule.conditions):
                continue
        except Exception as exc:  # a pattern too slow, a value saved before it was checked
            _failed(db, rule, exc)
            continue
        previous = db.info.get(_CAUSES)
        db.info[_CAUSES] = [*caused_by, rule.id]
        skipped: list[tuple[int, str]] = []
        by = Doer(
            workspace_id=rule.workspace_id,
            actor_id=None,
            via=f"the rule “{rule.name}”",
            said=f"Rule “{rule.name}”",
        )
        try:
            # A rule's actions all run or none does: one that cannot (a template error,
            # which no retry mends, or any other error) is skipped and its admins told why;
            # the event's other rules still run. A transient database error (a deadlock)
            # fails the job instead, which runs again.
            with savepoint(db):  # what a skipped rule did is never published either
                for i, action in enumerate(rule.actions):
                    # What it names may have gone since the rule was saved (an agent removed
                    # from the workspace, a team deleted): that action alone is left out, as
                    # it always was, and the rule now says so.
                    wrong = _action_problem(
                        db, workspace_id=workspace_id, event=event, action=action
                    )
                    if wrong is not None:
                        skipped.append((i, wrong[1]))
                        continue
                    _act(
                        db,
                        action=action,
                        conversation=conv,
                        message=msg,
                        customer_id=customer_id,
                        event=event,
                        by=by,
                    )
        except Exception as exc:
            if transient(exc):
                raise
            _failed(db, rule, exc)
            continue
        finally:
            db.info[_CAUSES] = previous if previous is not None else []
        if skipped:
            _skipped(rule, skipped)
        elif rule.last_error is not None:
            rule.last_error, rule.last_error_at = None, None
        ran.append(rule.id)
        if rule.stop_processing:
            break
    return ran


def _failed(db: Session, rule: Rule, exc: Exception) -> None:
    detail = exc.detail if isinstance(exc, Problem) else f"{type(exc).__name__}: {exc}"
    rule.last_error, rule.last_error_at = detail[:1000], utcnow()
    log.warning(
        "automation rule failed",
        extra={
            "event": "automation.rule_failed",
            "workspace_id": rule.workspace_id,
            "rule_id": rule.id,  # the detail may quote a customer's data: on the rule only
            "error": type(exc).__name__,
        },
    )


def _skipped(rule: Rule, skipped: list[tuple[int, str]]) -> None:
    """Say on the rule which of its actions could not apply and why (its others ran), as a
    failure is said: the admins see it with the rule until a run leaves none out."""
    said = "; ".join(
        f"actions[{i}] ({rule.actions[i].get('type')}) was skipped: {why}" for i, why in skipped
    )
    rule.last_error, rule.last_error_at = said[:1000], utcnow()
    log.warning(
        "automation action skipped",
        extra={
            "event": "automation.action_skipped",
            "workspace_id": rule.workspace_id,
            "rule_id": rule.id,
            "actions": [i for i, _ in skipped],  # which, by position; why is on the rule
        },
    )


@dataclass(frozen=True)
class Doer:
    """Who runs actions, as the changes they make record it: a rule (no member,
    ``actor_id`` None) or a member running a macro, who is the author of the replies and
    notes it sends."""

    workspace_id: str
    actor_id: str | None
    # What did it, as an activity line says after "by": "the rule “X”"; after the member,
    # for a macro: "by Ann through the macro “X”".
    via: str
    # How a line saying a message was not sent names who sent it: "Rule “X”".
    said: str


def _act(
    db: Session,
    *,
    action: dict[str, Any],
    conversation: Conversation | None,
    message: Message | None,
    customer_id: str | None,
    event: str | None,
    by: Doer,
) -> None:
    """Take one action (checked by ``_action_problem`` just before) through the functions
    the single-conversation endpoints use: their activity lines, events and triggers."""
    from rapport.conversations import canned, routing, service

    kind, value = action["type"], action.get("value")
    if kind == "send_webhook":
        # The rule's workspace: a customer's event comes with no conversation to ask.
        hook = db.scalar(
            select(Webhook).where(Webhook.id == str(value), Webhook.workspace_id == by.workspace_id)
        )
        # A webhook subscribed to this event has had it already (trigger): no second copy.
        # (Only a rule sends one: a rule has an event.)
        if hook is not None and event is not None and event not in hook.events:
            queue_delivery(
                db,
                webhook=hook,
                event=event,
                payload={
                    "conversation_id": conversation.id if conversation else None,
                    "message_id": message.id if message else None,
                    "customer_id": customer_id,
                },
            )
        return
    if conversation is None:
        return
    ws = conversation.workspace_id
    if kind == "email_team":
        team = db.scalar(select(Team).where(Team.workspace_id == ws, Team.id == str(value)))
        if team is not None:
            enqueue(
                db,
                name="email_team",
                args={
                    "team_id": team.id,
                    "conversation_id": conversation.id,
                    "message_id": message.id if message else None,
                    "event": event,
                },
                workspace_id=ws,
            )
        return
    if kind == "assign_agent":
        member = db.scalar(
            select(Membership).where(
                Membership.workspace_id == ws, Membership.user_id == str(value)
            )
        )
        if member is not None:
            service.assign(
                db,
                conversation=conversation,
                assignee_id=member.user_id,
                team_id=conversation.team_id,
                actor_id=by.actor_id,
                via=by.via,
            )
    elif kind == "assign_team":
        team = db.scalar(select(Team).where(Team.workspace_id == ws, Team.id == str(value)))
        if team is not None:
            service.assign(
                db,
                conversation=conversation,
                assignee_id=conversation.assignee_id,
                team_id=team.id,
                actor_id=by.actor_id,
                via=by.via,
            )
    elif kind == "assign_round_robin":
        team_id = str(value) if value else conversation.team_id
        agent = routing.pick_agent(db, workspace_id=ws, team_id=team_id)
        if agent is not None:
            service.assign(
                db,
                conversation=conversation,
                assignee_id=agent,
                team_id=team_id,
                actor_id=by.actor_id,
                via=by.via,
            )
    elif kind == "add_label":
        service.add_labels(db, conversation=conversation, labels=[str(value)])
    elif kind == "remove_label":
        service.remove_label(db, conversation=conversation, label=str(value))
    elif kind == "set_priority" and str(value) in Priority.__members__:
        service.set_priority(
            db,
            conversation=conversation,
            priority=Priority(str(value)),
            actor_id=by.actor_id,
            via=by.via,
        )
    elif kind == "set_status" and str(value) in Status.__members__ and value != "snoozed":
        service.set_status(
            db,
            conversation=conversation,
            status=Status(str(value)),
            actor_id=by.actor_id,
            via=by.via,
        )
    elif kind in _SENDS:
        if kind == "send_canned":
            reply = db.scalar(
                select(CannedResponse).where(
                    CannedResponse.workspace_id == ws, CannedResponse.id == str(value)
                )
            )
            if reply is None:
                return
            text = canned.render(db, canned=reply, conversation=conversation, agent_id=by.actor_id)
            what = f"canned reply /{reply.shortcut}"
        else:
            context = canned.context(db, conversation=conversation, agent_id=by.actor_id)
            text, what = templating.render(str(value or ""), context), "its reply"
        # A rule's message answers the customer's (a service message), as does an agent's
        # by macro: one who opted out of the channel, or never wrote to its page, is not
        # sent it (``reply`` refuses it before storing anything), and the conversation says
        # so; the other actions still run. An agent's by macro is their reply: by email, it
        # copies whom the composer offers; a rule's goes to the customer alone.
        try:
            service.reply(
                db,
                conversation=conversation,
                author_id=by.actor_id,
                text=text,
                kind=MessageKind.message,
                cc=service.reply_copies(db, conversation=conversation) if by.actor_id else None,
            )
        except Unsendable as refused:
            service.not_sent(
                db, conversation=conversation, by=f"{by.said}: {what}", refused=refused
            )
    elif kind == "add_note":
        text = templating.render(
            str(value or ""), canned.context(db, conversation=conversation, agent_id=by.actor_id)
        )
        # Only who the rule or macro itself names is notified, not an @handle the
        # template's customer data brought in.
        service.note(
            db,
            conversation=conversation,
            author_id=by.actor_id,
            text=text,
            mentioning=str(value or ""),
        )


# --- macros ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Skipped:
    """A macro's action left out of a run, and why: what it names has gone since it was
    saved (a team deleted, a member removed or made a viewer)."""

    index: int
    type: str
    reason: str


def _as_run_by(action: dict[str, Any], user_id: str) -> dict[str, Any]:
    """The action as ``user_id`` runs (or saves) it: an ``assign_agent`` of "me" names them."""
    if action.get("type") == "assign_agent" and action.get("value") == ME:
        return {**action, "value": user_id}
    return action


def _macro_actions(
    db: Session, *, workspace_id: str, user_id: str, actions: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The actions as a macro keeps them (each its type and value), once each is found able
    to run, as a rule's are (``"me"`` checked as ``user_id``, who saves it)."""
    if not 1 <= len(actions) <= MACRO_MAX_ACTIONS:
        raise Invalid(f"actions: a macro holds 1 to {MACRO_MAX_ACTIONS} actions")
    for i, a in enumerate(actions):
        extra = sorted(set(a) - {"type", "value"})
        if extra:
            raise Invalid(f"actions[{i}]: an action has a type and a value, and no {extra[0]!r}")
    _check_actions(
        db,
        workspace_id=workspace_id,
        event=None,
        actions=[_as_run_by(a, user_id) for a in actions],
        allowed=MACRO_ACTIONS,
    )
    return [{"type": a["type"], "value": a.get("value")} for a in actions]


def _macro_name(name: str) -> str:
    return naming.clean(name, what="a macro", most=MACRO_NAME_MAX)


def _refuse_taken_name(
    db: Session,
    *,
    workspace_id: str,
    name: str,
    visibility: str,
    owner_id: str | None,
    other_than: str | None = None,
) -> None:
    """Refuse a name the workspace's macros already have (for a workspace macro), or the
    owner's own (for a personal one), whatever its case. The workspace's row is held first:
    two macros saved at once under one name, the second waits, then sees the first."""
    lock_row(db, Workspace, workspace_id)
    stmt = select(Macro.name).where(
        Macro.workspace_id == workspace_id, Macro.visibility == visibility
    )
    if visibility == "personal":
        stmt = stmt.where(Macro.created_by == owner_id)
    if other_than is not None:
        stmt = stmt.where(Macro.id != other_than)
    if naming.taken(name, db.scalars(stmt)):
        whose = "the workspace has a macro" if visibility == "workspace" else "you have a macro"
        raise Conflict(f"{whose} named “{name}”: choose another name")


def _visibility(value: str, *, admin: bool) -> str:
    if value not in VISIBILITIES:
        raise Invalid(f"visibility: one of {_or(list(VISIBILITIES))}; not {_shown(value)}")
    if value == "workspace" and not admin:
        raise Forbidden("only admins and owners make macros for the whole workspace")
    return value


def _visible_to(user_id: str) -> ColumnElement[bool]:
    return or_(
        Macro.visibility == "workspace",
        and_(Macro.visibility == "personal", Macro.created_by == user_id),
    )


def macros(db: Session, *, workspace_id: str, user_id: str) -> list[Macro]:
    """The macros ``user_id`` may see and run: the workspace's and their own, by name."""
    return list(
        db.scalars(
            select(Macro)
            .where(Macro.workspace_id == workspace_id, _visible_to(user_id))
            .order_by(func.lower(Macro.name), Macro.id)
        )
    )


def get_macro(db: Session, *, workspace_id: str, macro_id: str, user_id: str) -> Macro:
    """The macro with this id, if ``user_id`` may see it; else a 404 problem (another's
    personal macro reads as one that does not exist)."""
    row = db.scalar(
        select(Macro).where(
            Macro.id == macro_id, Macro.workspace_id == workspace_id, _visible_to(user_id)
        )
    )
    if row is None:
        raise NotFound("macro")
    return row


def create_macro(
    db: Session,
    *,
    workspace_id: str,
    user_id: str,
    admin: bool,
    name: str,
    actions: list[dict[str, Any]],
    visibility: str,
) -> Macro:
    """A new macro of ``user_id``'s: for the workspace (``admin`` only) or their own."""
    visibility = _visibility(visibility, admin=admin)
    name = _macro_name(name)
    _refuse_taken_name(
        db, workspace_id=workspace_id, name=name, visibility=visibility, owner_id=user_id
    )
    row = Macro(
        workspace_id=workspace_id,
        name=name,
        actions=_macro_actions(db, workspace_id=workspace_id, user_id=user_id, actions=actions),
        visibility=visibility,
        created_by=user_id,
    )
    db.add(row)
    db.flush()
    return row


def may_change(macro: Macro, *, user_id: str, admin: bool) -> bool:
    """Whether the member may change or delete the macro: a workspace macro admins and
    owners (whoever made it), a personal one its owner."""
    if macro.visibility == "workspace":
        return admin
    return macro.created_by == user_id


def _may_change(macro: Macro, *, user_id: str, admin: bool) -> None:
    """Refused unless ``may_change``: a personal macro of another's does not exist for them."""
    if may_change(macro, user_id=user_id, admin=admin):
        return
    if macro.visibility == "workspace":
        raise Forbidden("only admins and owners change the workspace's macros")
    raise NotFound("macro")


def update_macro(
    db: Session,
    *,
    macro: Macro,
    user_id: str,
    admin: bool,
    name: str | None = None,
    actions: list[dict[str, Any]] | None = None,
    visibility: str | None = None,
) -> dict[str, Any]:
    """Change what is given of a macro's name, actions and visibility; returns what changed.
    A workspace macro made personal becomes the personal macro of whoever made it so."""
    _may_change(macro, user_id=user_id, admin=admin)
    changed: dict[str, Any] = {}
    if visibility is not None and visibility != macro.visibility:
        changed["visibility"] = _visibility(visibility, admin=admin)
        if visibility == "personal":
            changed["created_by"] = user_id
    if name is not None and (named := _macro_name(name)) != macro.name:
        changed["name"] = named
    if changed:
        _refuse_taken_name(
            db,
            workspace_id=macro.workspace_id,
            name=changed.get("name", macro.name),
            visibility=changed.get("visibility", macro.visibility),
            owner_id=changed.get("created_by", macro.created_by),
            other_than=macro.id,
        )
    if actions is not None:
        kept = _macro_actions(db, workspace_id=macro.workspace_id, user_id=user_id, actions=actions)
        if kept != macro.actions:
            changed["actions"] = kept
    for key, value in changed.items():
        setattr(macro, key, value)  # new lists, not edits in place: the JSON column sees them
    if changed:
        macro.updated_at = utcnow()
        db.flush()
    return changed


def delete_macro(db: Session, *, macro: Macro, user_id: str, admin: bool) -> None:
    """Delete a macro (who may: as ``update_macro``)."""
    _may_change(macro, user_id=user_id, admin=admin)
    db.delete(macro)
    db.flush()


def run_macro(
    db: Session, *, macro: Macro, conversation: Conversation, user_id: str
) -> list[Skipped]:
    """Run the macro's actions in order on the conversation as ``user_id``, in the caller's
    transaction: each change is theirs "through the macro", made as the single-conversation
    endpoints make it. An action whose target has gone since the macro was saved is skipped
    and returned, the others still apply; one that cannot run (its template fails, the
    inbox is switched off) is a 422 problem, and the caller's transaction changes nothing.
    A customer who cannot be sent its message (opted out, another page's) is not sent it,
    and the conversation says so, as for a rule."""
    ws = conversation.workspace_id
    if macro.workspace_id != ws:
        raise NotFound("macro")
    user = db.get(User, user_id)
    runner = (user.name or user.email) if user is not None else "a former member"
    by = Doer(
        workspace_id=ws,
        actor_id=user_id,
        via=f"the macro “{macro.name}”",
        said=f"Macro “{macro.name}” run by {runner}",
    )
    skipped: list[Skipped] = []
    for i, saved in enumerate(macro.actions):
        action = _as_run_by(saved, user_id)
        wrong = _action_problem(
            db, workspace_id=ws, event=None, action=action, allowed=MACRO_ACTIONS
        )
        if wrong is not None:
            skipped.append(Skipped(index=i, type=str(saved.get("type")), reason=wrong[1]))
            continue
        try:
            _act(
                db,
                action=action,
                conversation=conversation,
                message=None,
                customer_id=conversation.customer_id,
                event=None,
                by=by,
            )
        except Invalid as exc:
            raise Invalid(
                f"actions[{i}] ({action['type']}) could not run, so the macro “{macro.name}” "
                f"changed nothing: {exc.detail}"
            ) from exc
    return skipped


# --- outgoing webhooks ---------------------------------------------------------------------


def webhooks(db: Session, *, workspace_id: str) -> list[Webhook]:
    return list(
        db.scalars(
            select(Webhook).where(Webhook.workspace_id == workspace_id).order_by(Webhook.created_at)
        )
    )


_HOOK_EVENTS: TtlCache[str, frozenset[str]] = TtlCache(ttl=5.0, name="webhook_events")


def _events_with_webhooks(db: Session, workspace_id: str) -> frozenset[str]:
    return _HOOK_EVENTS.get(
        workspace_id,
        lambda: frozenset(
            event
            for events in db.scalars(
                select(Webhook.events).where(
                    Webhook.workspace_id == workspace_id, Webhook.enabled.is_(True)
                )
            )
            for event in events
        ),
    )


def publish_to_webhooks(
    db: Session,
    *,
    workspace_id: str,
    event: str,
    conversation_id: str | None = None,
    message_id: str | None = None,
    customer_id: str | None = None,
) -> int:
    """Queue a delivery of the event to each enabled webhook of the workspace that
    subscribes to it (a webhook without events is only called by rules); returns how many."""
    if event not in _events_with_webhooks(db, workspace_id):
        return 0
    hooks = db.scalars(
        select(Webhook)
        .where(Webhook.workspace_id == workspace_id, Webhook.enabled.is_(True))
        .order_by(Webhook.created_at)
    )
    sent = 0
    for hook in hooks:
        if event in hook.events:
            queue_delivery(
                db,
                webhook=hook,
                event=event,
                payload={
                    "conversation_id": conversation_id,
                    "message_id": message_id,
                    "customer_id": customer_id,
                },
            )
            sent += 1
    return sent


def _checked_webhook(url: str, events: list[str], *, allow_private: bool) -> list[str]:
    outbound.check_saved(url, allow_private=allow_private, what="a webhook URL")
    unknown = sorted(set(events) - EVENTS)
    if unknown:
        raise Invalid(
            f"unknown event {', '.join(map(repr, unknown))}; one of: {', '.join(sorted(EVENTS))}"
        )
    return sorted(set(events))


def create_webhook(
    db: Session,
    *,
    workspace_id: str,
    url: str,
    events: list[str],
    box: SecretBox,
    allow_private: bool = False,
) -> tuple[Webhook, str]:
    """A new webhook, called for the events it subscribes to (none: only by rules' actions);
    its signing secret is returned once and stored encrypted."""
    events = _checked_webhook(url, events, allow_private=allow_private)
    secret = random_token("whsec_", 24)
    row = Webhook(
        workspace_id=workspace_id,
        url=url,
        events=events,
        secret_encrypted=box.encrypt(secret),
    )
    db.add(row)
    db.flush()
    _HOOK_EVENTS.forget(workspace_id)
    return row, secret


def get_webhook(db: Session, *, workspace_id: str, webhook_id: str) -> Webhook:
    return get_scoped(db, Webhook, webhook_id, workspace_id=workspace_id, name="webhook")


def update_webhook(
    db: Session,
    *,
    webhook: Webhook,
    url: str | None = None,
    events: list[str] | None = None,
    enabled: bool | None = None,
    allow_private: bool = False,
) -> Webhook:
    """Change the URL, the events or switch it off; a switched-off webhook gets nothing
    (deliveries already queued for it are dropped when their turn comes)."""
    new_events = _checked_webhook(
        url if url is not None else webhook.url,
        events if events is not None else webhook.events,
        allow_private=allow_private,
    )
    if url is not None:
        webhook.url = url
    webhook.events = new_events
    if enabled is not None:
        webhook.enabled = enabled
    db.flush()
    _HOOK_EVENTS.forget(webhook.workspace_id)
    return webhook


# The actions that name a row of the workspace by id, by what they name (as
# ``_action_problem`` checks them).
_ACTIONS_NAMING = {
    "team": frozenset({"assign_team", "email_team", "assign_round_robin"}),
    "canned response": frozenset({"send_canned"}),
    "webhook": frozenset({"send_webhook"}),
}


def rules_naming(db: Session, *, workspace_id: str, what: str, row_id: str) -> list[str]:
    """The names of the workspace's rules (switched off ones too) that name one of its
    ``what`` ("team", "canned response", "webhook") by id: in an action, or in a condition
    comparing with it (``exists`` names none)."""

    def names(rule: Rule) -> bool:
        acts = _ACTIONS_NAMING.get(what, frozenset())
        if any(a.get("type") in acts and str(a.get("value")) == row_id for a in rule.actions):
            return True
        for c in rule.conditions:
            field, op, value = _field(c.get("field")), c.get("op"), c.get("value")
            if field is None or field.ids != what or op not in _COMPARED:
                continue
            if row_id in map(str, value if op == "in" and isinstance(value, list) else [value]):
                return True
        return False

    return [rule.name for rule in rules(db, workspace_id=workspace_id) if names(rule)]


# What a macro's actions name by id (a team to assign, a canned response to send).
_MACRO_ACTIONS_NAMING = {
    "team": frozenset({"assign_team"}),
    "canned response": frozenset({"send_canned"}),
}


def refuse_if_named(
    db: Session,
    *,
    workspace_id: str,
    what: str,
    row_id: str,
    otherwise: str = "",
    admin: bool = True,
    user_id: str | None = None,
) -> None:
    """Refuse to remove a team, canned response or webhook that rules or macros still
    name: they would go on saying it, and do nothing (the admin learns of it from a rule's
    last error, after the conversations it should have reached; an agent, from a macro's
    "left out"). The rules are named to an admin, who can change them; anyone else is told
    to ask one. The workspace's row is held first (see ``validate``), so a rule saved
    meanwhile is seen or waits."""
    lock_row(db, Workspace, workspace_id)
    users = rules_naming(db, workspace_id=workspace_id, what=what, row_id=row_id)
    acts = _MACRO_ACTIONS_NAMING.get(what, frozenset())
    macros, theirs = _macros_naming(
        db,
        workspace_id,
        lambda actions: any(
            a.get("type") in acts and str(a.get("value")) == row_id for a in actions
        ),
        reader=None if admin else user_id,
    )
    if not users and not macros:
        return
    if not admin and users:
        raise Conflict(f"an automation rule uses this {what}: ask an admin to change it first")
    said = [f"rule{'s' if len(users) > 1 else ''} {', '.join(map(repr, users))}"] if users else []
    many = len(users) + len(macros) > 1
    # A member's own macro only they change: an admin, or a colleague, asks them.
    raise Conflict(
        f"this {what} is used by {' and '.join([*said, *macros])}: "
        f"{'change or delete' if admin else 'change'} {'them' if many else 'it'} first"
        f"{' (a member’s own macro only they can change)' if theirs else ''}{otherwise}"
    )


def delete_webhook(db: Session, *, webhook: Webhook) -> None:
    """Delete a webhook and its delivery log; refused while a rule still sends to it."""
    refuse_if_named(
        db,
        workspace_id=webhook.workspace_id,
        what="webhook",
        row_id=webhook.id,
        otherwise=", or switch the webhook off",
    )
    db.delete(webhook)
    db.flush()
    _HOOK_EVENTS.forget(webhook.workspace_id)


def queue_delivery(
    db: Session, *, webhook: Webhook, event: str, payload: dict[str, Any]
) -> WebhookDelivery:
    """Log a delivery and queue its job: it is retried with backoff until it succeeds."""
    row = WebhookDelivery(
        workspace_id=webhook.workspace_id, webhook_id=webhook.id, event=event, payload=payload
    )
    db.add(row)
    db.flush()
    enqueue(
        db,
        name="webhook_deliver",
        args={"delivery_id": row.id},
        workspace_id=webhook.workspace_id,
        max_attempts=10,
    )
    return row


# Days a webhook's delivery log keeps a call: long enough to look into a receiver's
# failures, not for ever (a payload names customers and conversations).
DELIVERIES_KEPT_DAYS = 30


def prune_deliveries(db: Session, *, webhook_id: str, limit: int = 5000) -> int:
    """Delete up to ``limit`` of the webhook's deliveries older than DELIVERIES_KEPT_DAYS,
    oldest first (found by the log's (webhook, time) index), except those still in a job's
    hands: queued or running, or dead, for an admin may retry it, and its call would then
    find nothing to send. Returns how many, for the caller to repeat in a new transaction
    while a whole chunk went."""
    cutoff = utcnow() - timedelta(days=DELIVERIES_KEPT_DAYS)
    # Read once, through the claim index's state (not for each old delivery, against every
    # job of the workspace); delivery ids are unique, so no workspace needs matching.
    held = select(Job.args["delivery_id"].as_string()).where(
        Job.name == "webhook_deliver",
        Job.state.in_((JobState.queued, JobState.running, JobState.dead)),
        Job.args["delivery_id"].as_string().is_not(None),
    )
    chunk = (
        select(WebhookDelivery.id)
        .where(
            WebhookDelivery.webhook_id == webhook_id,
            WebhookDelivery.created_at < cutoff,
            WebhookDelivery.id.not_in(held),
        )
        .order_by(WebhookDelivery.created_at)
        .limit(limit)
    )
    result = db.execute(
        delete(WebhookDelivery).where(WebhookDelivery.id.in_(chunk)),
        execution_options={"synchronize_session": False},
    )
    return int(getattr(result, "rowcount", 0) or 0)


def dead_jobs_kept() -> ColumnElement[bool]:
    """The dead jobs the delivery log still needs: a ``webhook_deliver`` job whose delivery
    it keeps (younger than DELIVERIES_KEPT_DAYS), which an admin may retry while the log
    shows the call. Once the delivery is past that, the two go, the job first (while a
    dead job holds a delivery, prune_deliveries keeps it)."""
    cutoff = utcnow() - timedelta(days=DELIVERIES_KEPT_DAYS)
    logged = (
        select(WebhookDelivery.id)
        .where(
            WebhookDelivery.id == Job.args["delivery_id"].as_string(),
            WebhookDelivery.created_at >= cutoff,
        )
        .exists()
    )
    return and_(Job.name == "webhook_deliver", logged)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """``v1=<hex HMAC-SHA256 of "timestamp.body">``; receivers reject stale timestamps."""
    return "v1=" + hmac_sha256_hex(secret, f"{timestamp}.".encode() + body)


def body_of(delivery: WebhookDelivery) -> bytes:
    return orjson.dumps(
        {
            "id": delivery.id,
            "event": delivery.event,
            "workspace_id": delivery.workspace_id,
            "created_at": delivery.created_at.isoformat(),
            "data": delivery.payload,
        }
    )
