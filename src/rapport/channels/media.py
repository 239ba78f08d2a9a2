"""Files customers send through messaging providers, fetched after the message is stored.

A provider's webhook carries a reference to the file (WhatsApp: a media id; Telegram: a
file id; Messenger and Instagram: a CDN URL; Twilio: a media URL), not the file. The
message is stored at once; then the ``fetch_media`` job asks the channel to download each
file with the inbox's credentials (outside any transaction), stores it like any other
attachment, and tells the agents' screens. A file too large, or at an address that is not
public (``outbound``), is refused with a note on the message; a provider that fails is
retried by the job queue.
"""

import logging
import mimetypes
from dataclasses import dataclass
from typing import Any, Protocol, cast

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from rapport import outbound
from rapport.channels import base
from rapport.channels.models import Inbox
from rapport.conversations import files
from rapport.conversations.models import Attachment, Message
from rapport.conversations.service import message_payload
from rapport.crypto import box_for
from rapport.jobs.models import Job
from rapport.jobs.registry import JobContext, job
from rapport.jobs.service import enqueue
from rapport.realtime.service import emit
from rapport.storage import LocalStorage

log = logging.getLogger(__name__)
MAX_MEDIA_BYTES = 25 * 1024 * 1024


@dataclass(frozen=True)
class Fetched:
    filename: str
    content_type: str
    data: bytes


class MediaChannel(Protocol):
    def media_refs(self, meta: dict[str, Any]) -> list[dict[str, Any]]: ...

    def fetch_media(
        self, *, inbox: Inbox, secrets: dict[str, Any], ref: dict[str, Any], allow_private: bool
    ) -> Fetched: ...


def download(
    url: str,
    *,
    allow_private: bool,
    headers: dict[str, str] | None = None,
    auth: Any = None,
) -> tuple[bytes, str]:
    """GET a file, refusing more than MAX_MEDIA_BYTES without reading it all; its bytes and
    the content type the server gave. The URL comes from a provider's payload: like every
    hop of its redirects, it must be a public address (``outbound``), so a forged or odd
    one never makes the server fetch from its own network."""
    with outbound.stream(
        "GET", url, allow_private=allow_private, headers=headers or {}, auth=auth, timeout=30
    ) as response:
        response.raise_for_status()
        chunks, size = [], 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > MAX_MEDIA_BYTES:
                raise TooLarge(size)
            chunks.append(chunk)
        return b"".join(chunks), response.headers.get("content-type", "")


class TooLarge(Exception):
    """The provider's file is over MAX_MEDIA_BYTES."""


def filename_for(stem: str, content_type: str, given: str | None = None) -> str:
    if given:
        return given[:200]
    extension = mimetypes.guess_extension((content_type or "").split(";")[0].strip()) or ""
    return f"{stem}{extension}"


def queue_if_any(channel: str, meta: dict[str, Any]) -> bool:
    """Whether this message carries files its channel can fetch."""
    found = base.get(channel)
    refs = getattr(found, "media_refs", None)
    return bool(refs and refs(meta))


def request_fetch(db: Any, *, message_id: str, workspace_id: str) -> None:
    enqueue(
        db,
        name="fetch_media",
        args={"message_id": message_id},
        workspace_id=workspace_id,
        max_attempts=5,
    )


# What a message says of files the provider did not give on any of the job's attempts.
NOT_FETCHED = "a file the provider did not give on any try was not kept"


class NotYet(Exception):
    """Files the provider may yet give (a server error, no answer): the job is tried
    again for them, the others kept meanwhile. Said by status and kind only: an error's
    text names the URL, and Telegram's holds the bot's token."""


def _gone(status: int) -> bool:
    """Whether a provider's answer says the file will never come (expired, deleted, over
    Telegram's 20 MB for bots), not that it cannot come now."""
    return 400 <= status < 500 and status not in (408, 425, 429)


def _dead(db: Session, dead: Job, error: str) -> None:
    """The fetch gave up: the message says a file is missing, as it says of one refused."""
    message = db.get(Message, str(dead.args.get("message_id")))
    if message is None or (message.meta or {}).get("media_fetched"):
        return
    # ``media_settled`` stays: an admin's retry asks only for the files still missing.
    meta = dict(message.meta or {})
    message.meta = {
        **meta,
        "media_fetched": True,
        "notes": [*(meta.get("notes") or []), NOT_FETCHED],
    }
    db.flush()
    kept = files.summary(files.of_messages(db, [message.id])[message.id])
    emit(
        db,
        workspace_id=message.workspace_id,
        type="message.updated",
        payload=message_payload(message, kept),
    )


def _retried(db: Session, retried: Job) -> None:
    """An admin retries the dead fetch: the message waits for its files again."""
    message = db.get(Message, str(retried.args.get("message_id")))
    if message is not None and NOT_FETCHED in ((message.meta or {}).get("notes") or []):
        meta = dict(message.meta or {})
        notes = list(meta.get("notes") or [])
        notes.remove(NOT_FETCHED)
        meta.pop("media_fetched", None)
        message.meta = {**meta, "notes": notes}


@job("fetch_media", max_attempts=5, on_dead=_dead, on_retry=_retried)
def fetch_media(ctx: JobContext, message_id: str) -> None:
    with ctx.database.session(write=False) as db:
        message = db.get(Message, message_id)
        inbox = db.get(Inbox, message.inbox_id) if message else None
        if message is None or inbox is None or (message.meta or {}).get("media_fetched"):
            return
        done = set(
            db.scalars(select(Attachment.filename).where(Attachment.message_id == message.id))
        )
        db.expunge(inbox)
        meta = dict(message.meta or {})
    channel = base.get(inbox.channel)
    if channel is None or not hasattr(channel, "fetch_media"):
        return
    media = cast(MediaChannel, channel)
    secrets = box_for(ctx.settings.secret_key.get_secret_value()).decrypt_json(
        inbox.secrets_encrypted
    )
    fetched: list[Fetched] = []
    refused: list[str] = []
    # Each file is settled once (kept, or refused with a note): a try after one the
    # provider could not give asks only for the rest. Before, one such file failed the
    # whole job, so the message's other files were never kept either, and when it died
    # nothing said a file was missing.
    settled = set(meta.get("media_settled") or [])
    pending: list[str] = []
    for n, ref in enumerate(media.media_refs(meta)):
        if n in settled:
            continue
        try:
            got = media.fetch_media(
                inbox=inbox,
                secrets=secrets,
                ref=ref,
                allow_private=ctx.settings.outbound_private_ok,
            )
        except TooLarge:
            refused.append(f"a file over {MAX_MEDIA_BYTES // (1024 * 1024)} MB was not kept")
            settled.add(n)
            continue
        except httpx.HTTPStatusError as exc:
            status = exc.response.status_code
            if _gone(status):
                refused.append(f"a file the provider no longer gives ({status}) was not kept")
                settled.add(n)
            else:
                pending.append(f"the provider answered {status}")
            continue
        except outbound.Blocked as exc:  # asking again would not change the address
            # Its reason, not its text: the text names the host, which may be the customer's.
            log.warning(
                "media not fetched: an address Rapport does not call",
                extra={
                    "event": "media.blocked",
                    "reason": exc.reason,
                    "workspace_id": inbox.workspace_id,
                    "message_id": message_id,
                },
            )
            refused.append("a file at an address Rapport does not call was not fetched")
            settled.add(n)
            continue
        # After Blocked, itself a ValueError.
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            pending.append(type(exc).__name__)  # no answer, or one that is not what it says
            continue
        settled.add(n)
        if got.filename not in done:
            fetched.append(got)
    storage = LocalStorage(ctx.settings.attachments_dir)
    # Written (and hashed) before the transaction: 25 MB a file must not hold SQLite's one
    # write lock. The store is content-addressed, and a copy nothing names is swept.
    kept = [(item, *storage.put(item.data)) for item in fetched]
    with ctx.database.session() as db:
        message = db.get(Message, message_id)
        if message is None:
            return
        for item, key, digest in kept:
            db.add(
                Attachment(
                    workspace_id=message.workspace_id,
                    message_id=message.id,
                    filename=item.filename,
                    content_type=item.content_type or "application/octet-stream",
                    size=len(item.data),
                    sha256=digest,
                    storage_key=key,
                )
            )
        notes = [*((message.meta or {}).get("notes") or []), *refused]
        meta = {k: v for k, v in (message.meta or {}).items() if k != "media_settled"}
        if pending:
            meta["media_settled"] = sorted(settled)
        else:
            meta["media_fetched"] = True
        message.meta = {**meta, "notes": notes}
        db.flush()
        emit(
            db,
            workspace_id=message.workspace_id,
            type="message.updated",
            payload=message_payload(
                message, files.summary(files.of_messages(db, [message.id])[message.id])
            ),
        )
    if pending:
        raise NotYet(f"{len(pending)} file(s) not given yet: {'; '.join(pending)}")
