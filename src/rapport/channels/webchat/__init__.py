"""Web chat: an embeddable widget of our own, visitors who keep their history across pages,
and identity verified by the host site's HMAC, never by an email someone typed."""

import hmac

from sqlalchemy import select
from sqlalchemy.orm import Session

from rapport.channels import base
from rapport.channels.models import Inbox
from rapport.channels.webchat.models import Visitor
from rapport.crypto import hmac_sha256_hex, random_token, sha256_hex
from rapport.customers.identity import Handle, InvalidHandle, handle
from rapport.customers.models import IdentityKind
from rapport.db import utcnow
from rapport.problems import NotFound


def verified(secret: str | None, user_id: str | None, user_hash: str | None) -> bool:
    """Whether ``user_hash`` is HMAC-SHA256(user id, inbox secret) in hex."""
    if not (secret and user_id and user_hash):
        return False
    return hmac.compare_digest(hmac_sha256_hex(secret, user_id), user_hash.strip().lower())


def inbox_by_token(db: Session, token: str) -> Inbox:
    inbox = db.scalar(
        select(Inbox).where(
            Inbox.public_token == token, Inbox.channel == "webchat", Inbox.enabled.is_(True)
        )
    )
    if inbox is None:
        raise NotFound("chat")
    return inbox


def start(
    db: Session,
    *,
    inbox: Inbox,
    visitor_token: str | None,
    name: str,
    email: str | None,
    user_id: str | None,
    user_hash: str | None,
    secret: str | None,
) -> tuple[Visitor, str]:
    """The visitor behind a browser's token, or a new one; (visitor, plain token)."""
    visitor = None
    if visitor_token:
        visitor = db.scalar(
            select(Visitor).where(
                Visitor.token_hash == sha256_hex(visitor_token), Visitor.inbox_id == inbox.id
            )
        )
    token = visitor_token if visitor is not None and visitor_token else random_token("v_", 24)
    if visitor is None:
        visitor = Visitor(
            workspace_id=inbox.workspace_id, inbox_id=inbox.id, token_hash=sha256_hex(token)
        )
        db.add(visitor)
    if name:
        visitor.name = name[:300]
    if email:
        visitor.email = email.strip()[:320]
    if verified(secret, user_id, user_hash):
        visitor.verified_user_id = user_id
    visitor.last_seen_at = utcnow()
    db.flush()
    return visitor, token


def visitor_by_token(db: Session, *, inbox: Inbox, token: str) -> Visitor:
    visitor = db.scalar(
        select(Visitor).where(Visitor.token_hash == sha256_hex(token), Visitor.inbox_id == inbox.id)
    )
    if visitor is None:
        raise NotFound("visitor")
    return visitor


def handles_of(visitor: Visitor, region: str) -> list[Handle]:
    """The visitor's handles: their own id (proven by the token), the host site's user id
    when HMAC-verified, and a typed email that is never trusted to find someone else."""
    out = [handle(IdentityKind.webchat, visitor.id)]
    if visitor.verified_user_id:
        out.insert(0, handle(IdentityKind.external, visitor.verified_user_id))
    if visitor.email:
        try:
            out.append(handle(IdentityKind.email, visitor.email, verified=False, region=region))
        except InvalidHandle:
            pass
    return out


class WebchatChannel:
    name = "webchat"
    secret_fields = frozenset({"hmac_secret"})

    def send(self, out: base.Outbound) -> base.SendResult:
        """Nothing to hand over: the reply reached the visitor's widget as an event when it
        was stored, and waits in the history for their next visit."""
        return base.SendResult(meta={"widget": True})


CHANNEL = base.register(WebchatChannel())
