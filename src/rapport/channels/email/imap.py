"""IMAP polling of an existing mailbox: every new message once, none skipped.

The last UID taken is remembered per inbox, with the mailbox's UIDVALIDITY: a mailbox that
was rebuilt (a new UIDVALIDITY) is read again from the start, and deduplication on the
Message-ID keeps what was already stored from being stored twice.
"""

import imaplib
import logging
from typing import Any

from sqlalchemy import ForeignKey, Integer, String, select
from sqlalchemy.orm import Mapped, mapped_column

from rapport.channels import base, health
from rapport.channels.email import prepare_email, store_email
from rapport.channels.models import Inbox
from rapport.crypto import box_for
from rapport.db import Base, Database, utcnow
from rapport.jobs.registry import JobContext, job
from rapport.jobs.service import enqueue
from rapport.storage import LocalStorage

log = logging.getLogger(__name__)


class MailboxState(Base):
    __tablename__ = "email_mailbox_state"

    inbox_id: Mapped[str] = mapped_column(
        ForeignKey("inboxes.id", ondelete="CASCADE"), primary_key=True
    )
    uidvalidity: Mapped[str] = mapped_column(String(64), default="")
    last_uid: Mapped[int] = mapped_column(Integer, default=0)


class MailboxError(RuntimeError):
    """The mailbox server would not give what a poll asked for (a folder, a message)."""


class LoginRefused(MailboxError):
    """The mailbox server refused the inbox's username and password."""


# What a poll's failure to reach or read the mailbox raises (a refused connection, a TLS
# error and a timeout are OSErrors): recorded in the inbox's health. Anything else (our
# own storing of a mail) is not the mailbox's doing.
_MAILBOX_TROUBLE = (imaplib.IMAP4.error, OSError, MailboxError)
_NOT_REFUSED = ("[UNAVAILABLE]", "[SERVERBUG]")


def _connect(settings: dict[str, Any], password: str) -> imaplib.IMAP4:
    host = str(settings["imap_host"])
    port = int(base.setting("email", settings, "imap_port"))
    security = str(base.setting("email", settings, "imap_security")).lower()
    conn: imaplib.IMAP4
    if security == "tls":
        conn = imaplib.IMAP4_SSL(host, port, timeout=30)
    else:
        conn = imaplib.IMAP4(host, port, timeout=30)
    try:
        if security == "starttls":
            conn.starttls()
        try:
            conn.login(str(settings["imap_username"]), password)
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error as exc:
            said = health.imap_error(exc)
            # RFC 5530: UNAVAILABLE and SERVERBUG are the server's passing trouble, not a
            # refusal of the credentials.
            if any(code in said.upper() for code in _NOT_REFUSED):
                raise MailboxError(said) from exc
            raise LoginRefused(said) from exc
    except BaseException:
        conn.shutdown()  # not logged in: nothing to log out of, only a socket to close
        raise
    return conn


def poll(
    database: Database, *, inbox_id: str, secret_key: str, settings_obj: Any, limit: int = 200
) -> int:
    """Fetch the mailbox's new messages into the inbox; returns how many were taken."""
    with database.session(write=False) as db:
        inbox = db.get(Inbox, inbox_id)
        if inbox is None or not inbox.settings.get("imap_host"):
            return 0
        settings = dict(inbox.settings)
        password = str(
            box_for(secret_key).decrypt_json(inbox.secrets_encrypted).get("imap_password", "")
        )
        state = db.get(MailboxState, inbox_id)
        known_validity, last_uid = (state.uidvalidity, state.last_uid) if state else ("", 0)
        workspace_id = inbox.workspace_id
    try:
        taken = _read(
            database, inbox_id, settings, password, known_validity, last_uid, settings_obj, limit
        )
    except _MAILBOX_TROUBLE as exc:
        health.record_poll(
            database,
            inbox_id=inbox_id,
            workspace_id=workspace_id,
            error=str(exc) if isinstance(exc, MailboxError) else health.imap_error(exc),
            login_refused=isinstance(exc, LoginRefused),
        )
        raise
    health.record_poll(database, inbox_id=inbox_id, workspace_id=workspace_id)
    return taken


def _read(
    database: Database,
    inbox_id: str,
    settings: dict[str, Any],
    password: str,
    known_validity: str,
    last_uid: int,
    settings_obj: Any,
    limit: int,
) -> int:
    """One poll's connection: the mailbox's new messages stored, the mark moved past each."""
    conn = _connect(settings, password)
    storage = LocalStorage(settings_obj.attachments_dir)
    taken = 0
    try:
        typ, _ = conn.select(str(base.setting("email", settings, "imap_mailbox")), readonly=True)
        if typ != "OK":
            raise MailboxError("the mailbox cannot be selected")
        raw_validity = (conn.untagged_responses.get("UIDVALIDITY") or [b""])[0]
        validity = raw_validity.decode() if isinstance(raw_validity, bytes) else str(raw_validity)
        if validity != known_validity:
            last_uid = 0  # a rebuilt mailbox: read it again; Message-IDs keep it from doubling
        typ, data = conn.uid("SEARCH", f"UID {last_uid + 1}:*")
        uids = sorted(int(u) for u in (data[0] or b"").split() if int(u) > last_uid)[:limit]
        for uid in uids:
            typ, parts = conn.uid("FETCH", str(uid), "(RFC822)")
            if typ != "OK":
                # A server's passing trouble: stop here, the job is tried again from this
                # UID (skipping it, the next one stored would move the mark past it).
                raise MailboxError(f"the server could not give message {uid}: {typ}")
            raw = next((p[1] for p in parts if isinstance(p, tuple)), None)
            if raw is None:
                continue  # gone since the search (deleted meanwhile): nothing to keep
            with database.session(write=False) as db:  # parsing holds no write lock
                prepared = prepare_email(db, raw, inbox_id=inbox_id, storage=storage)
            # One transaction per message, with the UID that it moves us past.
            with database.session() as db:
                store_email(db, prepared, settings=settings_obj)
                row = db.get(MailboxState, inbox_id) or MailboxState(inbox_id=inbox_id)
                row.uidvalidity, row.last_uid = validity, uid
                db.add(row)
            taken += 1
        if not uids and validity != known_validity:
            with database.session() as db:
                row = db.get(MailboxState, inbox_id) or MailboxState(inbox_id=inbox_id)
                row.uidvalidity, row.last_uid = validity, last_uid
                db.add(row)
    finally:
        try:
            conn.logout()
        except (imaplib.IMAP4.error, OSError):
            pass
    return taken


@job("imap_poll")
def imap_poll(ctx: JobContext, *, inbox_id: str) -> None:
    """Poll one email inbox's IMAP mailbox."""
    poll(
        ctx.database,
        inbox_id=inbox_id,
        secret_key=ctx.settings.secret_key.get_secret_value(),
        settings_obj=ctx.settings,
    )


@job("imap_poll_all")
def imap_poll_all(ctx: JobContext) -> None:
    """Queue a poll for every email inbox that has an IMAP mailbox (the periodic schedule)."""
    with ctx.database.session() as db:
        for inbox_id, settings in db.execute(
            select(Inbox.id, Inbox.settings).where(
                Inbox.channel == "email", Inbox.enabled.is_(True)
            )
        ):
            if (settings or {}).get("imap_host"):
                enqueue(db, name="imap_poll", args={"inbox_id": inbox_id}, max_attempts=3)
    log.debug("imap polls queued at %s", utcnow().isoformat())
