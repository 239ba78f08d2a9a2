"""Inboxes: create and configure channel instances; credentials are encrypted at rest."""

import json
import re
from collections.abc import Iterable
from datetime import timedelta
from typing import Any
from urllib.parse import quote_plus, urlsplit

import phonenumbers
from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from rapport.auth.models import Team
from rapport.channels import base, health
from rapport.channels.models import Inbox, UnparsedPayload
from rapport.channels.schemas import InboxCreate, InboxHealthRead, InboxRead, InboxUpdate
from rapport.conversations import routing
from rapport.crypto import SecretBox, random_token
from rapport.customers.identity import InvalidHandle, normalize_email, normalize_phone
from rapport.db import utcnow
from rapport.problems import Invalid, NotFound
from rapport.realtime.service import emit

# Channel packages register themselves when imported.
from rapport.channels import api as _api  # noqa: F401  isort: skip
from rapport.channels import email as _email  # noqa: F401  isort: skip
from rapport.scoped import get_scoped

# Inbox settings that other endpoints own: sent back unchanged (an API client's
# read-modify-write) they are left as they are; changed, the client is told where.
_OWNED_ELSEWHERE = {"bot": "PUT /api/v1/bot/inboxes/{id}"}
_TEXT_MAX = 2000
_LIST_MAX = 100


def checked_settings(
    db: Session,
    *,
    channel: base.Channel,
    workspace_id: str,
    given: dict[str, Any],
    stored: dict[str, Any],
) -> dict[str, Any]:
    """``given`` as it is kept: each a setting the channel declares, its value checked
    against its kind and written one way (a phone number in E.164, a list as a list, a
    number as a number); ``None`` for each one cleared (``null`` or ``""``). Anything else
    is refused, naming the setting: a typo would otherwise be kept and do nothing."""
    fields = {f.name: f for f in channel.fields}
    out: dict[str, Any] = {}
    for key, value in given.items():
        field = fields.get(key)
        if key in stored and value == stored[key]:
            # Sent back as it is kept (a client's read-modify-write): left alone, even a
            # value kept before settings were checked, or one another endpoint owns.
            continue
        if field is None:
            if key in _OWNED_ELSEWHERE:
                raise Invalid(f"settings.{key} is set through {_OWNED_ELSEWHERE[key]}")
            raise Invalid(
                f"settings.{key}: {channel.name} inboxes have no such setting; "
                f"they have {', '.join(fields)}"
            )
        if value is None or value == "" or value == []:
            out[key] = None
            continue
        try:
            out[key] = _setting_value(db, field, value, workspace_id=workspace_id)
        except (ValueError, TypeError, InvalidHandle) as exc:
            raise Invalid(f"settings.{key} ({field.label}): {exc}") from exc
    return out


def _setting_value(db: Session, field: base.Setting, value: Any, *, workspace_id: str) -> Any:
    kind = field.kind
    if kind == "flag":
        if not isinstance(value, bool):
            raise TypeError("must be true or false")
        return value
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise TypeError("must be a whole number")
        number = int(str(value).strip())
        if (field.low is not None and number < field.low) or (
            field.high is not None and number > field.high
        ):
            raise ValueError(f"must be from {field.low} to {field.high}")
        return number
    if kind == "list":
        items = re.split(r"[,\n]", value) if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise TypeError("must be a list of texts")
        kept = [i.strip() for i in items if i.strip()]
        if len(kept) > _LIST_MAX or any(len(i) > 300 for i in kept):
            raise ValueError(f"takes at most {_LIST_MAX} items of 300 characters")
        return kept
    if not isinstance(value, str):
        raise TypeError('must be text (null or "" clears it)')
    if kind == "secret":
        return value  # a credential is kept exactly as given, spaces and all
    text = value.strip()
    if len(text) > _TEXT_MAX:
        raise ValueError(f"takes at most {_TEXT_MAX} characters")
    if kind == "email":
        return normalize_email(text)
    if kind == "phone":
        return normalize_phone(text, default_region="ZZ")
    if kind == "phones":
        return ", ".join(
            normalize_phone(n, default_region="ZZ") for n in re.split(r"[,\n]", text) if n.strip()
        )
    if kind == "url":
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// address")
        return text
    if kind == "choice":
        if text.lower() not in field.choices:
            raise ValueError(f"must be one of {', '.join(field.choices)}")
        return text.lower()
    if kind == "inbox":
        wanted = field.choices[0] if field.choices else None
        found = db.scalar(
            select(Inbox.channel).where(Inbox.id == text, Inbox.workspace_id == workspace_id)
        )
        if found is None or (wanted is not None and found != wanted):
            raise ValueError(f"no {wanted or ''} inbox of this workspace has the id {text}")
        return text
    return text


def _split(
    channel: base.Channel, settings: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, str], set[str]]:
    """(plain settings, secrets to set, secrets to clear) of checked settings."""
    plain = {k: v for k, v in settings.items() if k not in channel.secret_fields}
    secret = {k: v for k, v in settings.items() if k in channel.secret_fields and v is not None}
    cleared = {k for k, v in settings.items() if k in channel.secret_fields and v is None}
    return plain, secret, cleared


def missing(inbox: Inbox, secrets: Iterable[str]) -> list[str]:
    """The settings an inbox cannot work without that are not set, by name."""
    channel = base.get(inbox.channel)
    have = {k for k, v in (inbox.settings or {}).items() if v not in (None, "", [])} | set(secrets)
    return [f.name for f in channel.fields if f.needed and f.name not in have] if channel else []


def get(db: Session, *, workspace_id: str, inbox_id: str) -> Inbox:
    return get_scoped(db, Inbox, inbox_id, workspace_id=workspace_id, name="inbox")


def list_inboxes(db: Session, *, workspace_id: str) -> list[Inbox]:
    return list(
        db.scalars(
            select(Inbox).where(Inbox.workspace_id == workspace_id).order_by(Inbox.created_at)
        )
    )


def _check_team(db: Session, workspace_id: str, team_id: str | None) -> None:
    if (
        team_id is not None
        and db.scalar(select(Team.id).where(Team.id == team_id, Team.workspace_id == workspace_id))
        is None
    ):
        raise NotFound("team")


def create(db: Session, *, workspace_id: str, data: InboxCreate, box: SecretBox) -> Inbox:
    """A new inbox of a known channel; credentials go into the encrypted secrets."""
    channel = base.get(data.channel)
    if channel is None:
        raise Invalid(f"unknown channel {data.channel!r}; known: {', '.join(base.names())}")
    _check_team(db, workspace_id, data.team_id)
    checked = checked_settings(
        db, channel=channel, workspace_id=workspace_id, given=data.settings, stored={}
    )
    plain, secret, _ = _split(channel, checked)
    inbox = Inbox(
        workspace_id=workspace_id,
        name=data.name,
        channel=channel.name,
        settings={k: v for k, v in plain.items() if v is not None},
        secrets_encrypted=box.encrypt_json(secret) if secret else None,
        team_id=data.team_id,
        auto_assign=data.auto_assign,
        public_token=random_token(nbytes=18),
    )
    db.add(inbox)
    db.flush()
    return inbox


def inbox_payload(inbox: Inbox) -> dict[str, Any]:
    """An inbox as realtime events carry it: what agents' pages show of it (no settings)."""
    return {
        "id": inbox.id,
        "name": inbox.name,
        "channel": inbox.channel,
        "enabled": inbox.enabled,
    }


def update(db: Session, *, inbox: Inbox, data: InboxUpdate, box: SecretBox) -> Inbox:
    """Change an inbox; agents' open pages hear (``inbox.updated``) when what they show of
    it (its name, whether it is enabled) changed."""
    channel = base.get(inbox.channel)
    assert channel is not None
    shown = inbox_payload(inbox)
    if data.name is not None:
        inbox.name = data.name
    if data.settings is not None:
        checked = checked_settings(
            db,
            channel=channel,
            workspace_id=inbox.workspace_id,
            given=data.settings,
            stored=inbox.settings,
        )
        plain, secret, cleared = _split(channel, checked)
        if plain or secret or cleared:
            # A new token, another server: whether its sends work is for the next to tell.
            health.reset_sends(db, inbox_id=inbox.id)
        merged_plain = {**inbox.settings, **plain}
        inbox.settings = {k: v for k, v in merged_plain.items() if v is not None}
        if secret or cleared:
            kept = box.decrypt_json(inbox.secrets_encrypted)
            merged = {k: v for k, v in {**kept, **secret}.items() if k not in cleared}
            inbox.secrets_encrypted = box.encrypt_json(merged) if merged else None
    routed_before = (inbox.auto_assign, inbox.team_id)
    if "team_id" in data.model_fields_set:
        _check_team(db, inbox.workspace_id, data.team_id)
        inbox.team_id = data.team_id
    if data.auto_assign is not None:
        inbox.auto_assign = data.auto_assign
    if data.enabled is not None:
        inbox.enabled = data.enabled
    if inbox.auto_assign and (inbox.auto_assign, inbox.team_id) != routed_before:
        # Its waiting conversations are routed now, or by another team: offered at once.
        routing.wake(db, workspace_id=inbox.workspace_id)
    if inbox_payload(inbox) != shown:
        emit(
            db,
            workspace_id=inbox.workspace_id,
            type="inbox.updated",
            payload=inbox_payload(inbox),
        )
    return inbox


def health_of(
    db: Session, *, workspace_id: str, box: SecretBox, inboxes: list[Inbox] | None = None
) -> list[InboxHealthRead]:
    """The health of the workspace's inboxes (or of ``inboxes``, the workspace's), in the
    order of the list (``channels.health``)."""
    listed = list_inboxes(db, workspace_id=workspace_id) if inboxes is None else inboxes
    need = {i.id: missing(i, secrets_of(i, box)) for i in listed}
    return health.assess(db, workspace_id=workspace_id, inboxes=listed, missing=need)


def secrets_of(inbox: Inbox, box: SecretBox) -> dict[str, Any]:
    return box.decrypt_json(inbox.secrets_encrypted)


def read(inbox: Inbox, box: SecretBox) -> InboxRead:
    out = InboxRead.model_validate(inbox)
    out.secrets_set = sorted(secrets_of(inbox, box))
    out.missing = missing(inbox, out.secrets_set)
    return out


# Days a provider's call we could not read is kept for someone to look into: it may hold a
# customer's message and number, so not for ever.
UNPARSED_KEPT_DAYS = 30
# A handle shorter than this names nobody in a raw payload and would be found in most.
_SHORTEST_HANDLE = 5


def prune_unparsed(db: Session, *, limit: int = 5000) -> int:
    """Delete up to ``limit`` unreadable payloads older than UNPARSED_KEPT_DAYS, oldest
    first (found by the time index); returns how many, for the caller to repeat in a new
    transaction while a whole chunk went."""
    cutoff = utcnow() - timedelta(days=UNPARSED_KEPT_DAYS)
    chunk = (
        select(UnparsedPayload.id)
        .where(UnparsedPayload.created_at < cutoff)
        .order_by(UnparsedPayload.created_at)
        .limit(limit)
    )
    result = db.execute(delete(UnparsedPayload).where(UnparsedPayload.id.in_(chunk)))
    return int(getattr(result, "rowcount", 0) or 0)


def forget_unparsed(
    db: Session, *, workspace_id: str, handles: Iterable[str], names: Iterable[str] = ()
) -> int:
    """Delete the workspace's unreadable payloads that hold any of these handles (an
    erased customer's phone, email, PSID...) or full names, as the provider may have
    written them, and those past UNPARSED_KEPT_DAYS that the prune has not reached yet;
    returns how many. What is left of the workspace's is within those days, which bounds
    the search. A payload that holds one by chance (a number inside a longer one, a
    namesake) goes too: it was kept only to be looked into. A name of one word is not
    looked for: too many payloads would hold it."""
    full_names = {n.strip() for n in names if len(n.split()) >= 2}
    needles = sorted(
        {n for h in [*handles, *full_names] for n in _spellings(h) if len(n) >= _SHORTEST_HANDLE}
    )
    cutoff = utcnow() - timedelta(days=UNPARSED_KEPT_DAYS)
    result = db.execute(
        delete(UnparsedPayload).where(
            UnparsedPayload.workspace_id == workspace_id,
            or_(
                UnparsedPayload.created_at < cutoff,
                *(UnparsedPayload.body.icontains(n, autoescape=True) for n in needles),
            ),
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)


def _spellings(handle: str) -> set[str]:
    """How a provider's payload may spell this handle: as stored, form-encoded (Twilio:
    ``%40`` for ``@``), escaped in JSON, and for a number also as people write it:
    its digits without the ``+`` (WhatsApp's ``wa_id``; Twilio's ``%2B``), its national
    digits and its national and international formats, with spaces, dashes or dots
    (``(415) 555-0123``, ``415.555.0123``, ``+44 20 7946 0018``)."""
    forms = {handle}
    if handle.startswith("+") and handle[1:].isdigit():
        forms |= _phone_forms(handle)
    found = set()
    for form in forms:
        found |= {form, quote_plus(form), json.dumps(form)[1:-1]}
    return found


def _phone_forms(e164: str) -> set[str]:
    forms = {e164[1:]}
    try:
        number = phonenumbers.parse(e164)
    except phonenumbers.NumberParseException:
        return forms
    forms.add(phonenumbers.national_significant_number(number))
    national = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
    international = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    local = international.split(" ", 1)[-1]  # without the country code
    for written in (national, international, local):
        groups = re.split(r"[ .-]+", written)
        forms |= {written, *(separator.join(groups) for separator in (" ", "-", "."))}
    return forms
