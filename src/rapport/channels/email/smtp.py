"""Rapport's own SMTP listener: mail to an email inbox's address becomes a conversation.

The sender is answered ``250`` only after the message is committed, so an accepted mail is
never lost; an address no inbox has is refused at RCPT time. As the domain's mail server
(``RAPPORT_SMTP_CHECK_SENDERS``) it checks SPF, DKIM and DMARC (``verify``) and stamps
the message with what it found.
"""

import asyncio
import logging
from typing import Any
from urllib.parse import urlsplit

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import select

from rapport.channels.email import prepare_email, store_email, verify
from rapport.channels.models import Inbox
from rapport.config import Settings
from rapport.conversations import copies
from rapport.db import Database
from rapport.storage import LocalStorage

log = logging.getLogger(__name__)
MAX_MESSAGE_BYTES = 60 * 1024 * 1024


def inbox_for(database: Database, address: str) -> str | None:
    """The email inbox receiving mail at ``address``: its own, or a tag of it (a thread's
    ``support+c<id>@``); of ``support@`` and ``support+billing@``, mail to the second and
    its tags is the second's (``copies.untagged``)."""
    with database.session(write=False) as db:
        inboxes: dict[str, str] = {}
        for inbox_id, settings in db.execute(
            select(Inbox.id, Inbox.settings).where(
                Inbox.channel == "email", Inbox.enabled.is_(True)
            )
        ):
            inboxes.setdefault(str((settings or {}).get("address", "")).lower(), str(inbox_id))
    return next((inboxes[a] for a in copies.untagged(address) if a in inboxes), None)


_TRY_AGAIN = "451 4.3.0 Temporary failure, try again later"


class Handler:
    def __init__(self, database: Database, settings: Settings) -> None:
        self.database = database
        self.settings = settings
        # The name this server signs its Authentication-Results with.
        self.authserv_id = urlsplit(settings.public_url).hostname or "rapport"

    async def handle_exception(self, error: Exception) -> str:
        """Anything unforeseen is a temporary failure: the sending server keeps the mail and
        tries again (a 5xx would make it bounce for good), and is told nothing of ours."""
        log.error("smtp listener error", exc_info=error, extra={"event": "email.smtp_error"})
        return _TRY_AGAIN

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        try:
            inbox_id = await asyncio.to_thread(inbox_for, self.database, address)
        except Exception:  # the database out of reach: ask again later, never bounce
            log.exception("mailbox not looked up", extra={"event": "email.rcpt_failed"})
            return _TRY_AGAIN
        if inbox_id is None:
            return "550 5.1.1 No such mailbox here"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        raw = envelope.original_content or envelope.content
        if not isinstance(raw, bytes):
            raw = str(raw).encode("utf-8", errors="surrogateescape")
        try:
            # In the order the sender named them (To before Cc, as clients send them): a
            # mail to two of our inboxes is kept by the first (``store_email``).
            inboxes = list(
                dict.fromkeys(
                    [
                        await asyncio.to_thread(inbox_for, self.database, a)
                        for a in envelope.rcpt_tos
                    ]
                )
            )
            if None in inboxes:
                # Switched off or readdressed since RCPT took it: "250 stored" would be a
                # lie. The sender's server keeps it and, asking again, is refused (550).
                log.warning("a recipient's inbox is gone", extra={"event": "email.rcpt_gone"})
                return _TRY_AGAIN
            verified_by = None
            if self.settings.smtp_check_senders:
                verified_by = self.authserv_id
                found = await asyncio.to_thread(
                    verify.authenticate,
                    raw,
                    ip=str(session.peer[0] if isinstance(session.peer, tuple) else session.peer),
                    helo=session.host_name or "",
                    mail_from=envelope.mail_from or "",
                    authserv_id=verified_by,
                )
                raw = f"Authentication-Results: {found}\r\n".encode() + raw
            for inbox_id in inboxes:
                assert inbox_id is not None
                await asyncio.to_thread(self._store, raw, inbox_id, verified_by)
        except Exception:
            log.exception("email not stored", extra={"event": "email.store_failed"})
            return _TRY_AGAIN
        return "250 OK: stored"

    def _store(self, raw: bytes, inbox_id: str, verified_by: str | None) -> None:
        storage = LocalStorage(self.settings.attachments_dir)
        with self.database.session(write=False) as db:  # parsing holds no write lock
            prepared = prepare_email(
                db, raw, inbox_id=inbox_id, verified_by=verified_by, storage=storage
            )
        with self.database.session() as db:
            store_email(db, prepared, settings=self.settings)


def start(database: Database, settings: Settings, *, host: str, port: int) -> Any:
    """Start the listener in a background thread; returns the controller (``.stop()``)."""
    controller = Controller(
        Handler(database, settings),
        hostname=host,
        port=port,
        data_size_limit=MAX_MESSAGE_BYTES,
        decode_data=False,
    )
    controller.start()
    return controller
