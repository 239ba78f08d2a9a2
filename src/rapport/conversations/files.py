"""Files agents send: uploads waiting for their reply or note, the type we believe each file
has, and signed, expiring links through which providers fetch them.

An agent uploads first (``POST /conversations/{id}/uploads``), then names the upload ids in
the reply or note: a file is uploaded once however long the agent keeps typing, and the
reply itself stays a small JSON request. Sending moves each upload to an ``Attachment`` of
the message, in the reply's transaction.
"""

import mimetypes
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import PurePath
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import Response
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from rapport.conversations.models import Attachment, Conversation, Message, Upload
from rapport.crypto import hmac_sha256_hex, same
from rapport.customers.models import Customer
from rapport.db import Database, utcnow
from rapport.problems import Invalid, NotFound
from rapport.storage import LocalStorage

# The same limit as the widget's paperclip; every provider takes at least this much, or
# refuses the file with a reason we show on the message.
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_FILES_PER_MESSAGE = 10
# An upload not sent within this time is dropped, and its bytes with it unless another
# upload or attachment shares them (content-addressed).
UPLOAD_TTL = timedelta(days=1)
# How long a provider may take to fetch a file we sent it a link to. WhatsApp and Twilio
# fetch asynchronously, after accepting the message; a retry of the job signs new links.
LINK_TTL = timedelta(hours=24)

# Magic numbers of the types customers are sent most; a file's own bytes win over its name.
_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"GIF87a", "image/gif"),
    (0, b"GIF89a", "image/gif"),
    (0, b"%PDF-", "application/pdf"),
    (0, b"OggS", "audio/ogg"),
    (0, b"ID3", "audio/mpeg"),
    (4, b"ftyp", "video/mp4"),
)
# Types a browser would run as a page or script: never served as themselves.
_ACTIVE = {
    "text/html",
    "application/xhtml+xml",
    "image/svg+xml",
    "text/xml",
    "application/xml",
    "text/javascript",
    "application/javascript",
    "application/ecmascript",
    "text/ecmascript",
}


def sniff(data: bytes, filename: str) -> str:
    """The file's type: from its bytes when they say, else from its name's extension, else
    ``application/octet-stream``. What the client claimed is not used: it is the least
    trustworthy of the three."""
    for offset, magic, kind in _MAGIC:
        if data[offset : offset + len(magic)] == magic:
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    guessed = mimetypes.guess_type(filename)[0]
    if data[:4] == b"PK\x03\x04":  # zip, and the office formats that are zips
        return (
            guessed
            if guessed and ("officedocument" in guessed or "zip" in guessed)
            else ("application/zip")
        )
    return guessed or "application/octet-stream"


def servable_type(content_type: str) -> str:
    """The type to serve a file as: its own, unless a browser would execute it."""
    base = content_type.split(";")[0].strip().lower()
    return "application/octet-stream" if not base or base in _ACTIVE else base


# How a route answering ``download`` documents its answer (FastAPI would say JSON).
DOWNLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The file, as a download", "content": {"application/octet-stream": {}}}
}


def disposition(filename: str) -> str:
    """A download's Content-Disposition (RFC 6266): the whole name, and a plain ASCII one
    for clients that read no other (never a character that cannot be sent in a header)."""
    plain = "".join(ch for ch in filename if ch.isascii() and (ch.isalnum() or ch in "._- "))
    plain = plain.strip(" .")[:200] or "file"
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(filename, safe='')}"


def download(data: bytes, filename: str, media_type: str = "application/octet-stream") -> Response:
    """A file as a download, never a page of our origin: the name in RFC 6266 form, no
    type sniffing, and a sandbox should a browser render it anyway."""
    return Response(
        data,
        media_type=media_type,
        headers={
            "Content-Disposition": disposition(filename),
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
        },
    )


def clean_filename(name: str | None) -> str:
    """The last path component of a client's file name, without control characters."""
    last = PurePath((name or "").replace("\\", "/")).name
    cleaned = "".join(ch for ch in last if ch.isprintable()).strip()
    return cleaned[:200] or "file"


@dataclass(frozen=True)
class StoredFile:
    """A file's bytes written to storage, not yet named by any row."""

    data: bytes
    storage_key: str
    sha256: str


def store(data: bytes, storage: LocalStorage) -> StoredFile:
    """Check an agent's file and write it to storage (before any transaction: its hash
    and write take a while for 10 MB)."""
    if not data:
        raise Invalid("the file is empty")
    if len(data) > MAX_UPLOAD_BYTES:
        raise Invalid(f"files up to {MAX_UPLOAD_BYTES // (1024 * 1024)} MB can be sent")
    key, digest = storage.put(data)
    return StoredFile(data, key, digest)


def upload(
    db: Session,
    *,
    conversation: Conversation | None = None,
    customer: Customer | None = None,
    user_id: str | None,
    filename: str | None,
    stored: StoredFile,
) -> Upload:
    """Record a stored file an agent means to send in this conversation, or in the first
    message of one they start with this ``customer``; the upload."""
    owner = conversation or customer
    assert owner is not None, "an upload is for a conversation or a customer"
    name = clean_filename(filename)
    row = Upload(
        workspace_id=owner.workspace_id,
        conversation_id=conversation.id if conversation else None,
        customer_id=None if conversation else owner.id,
        user_id=user_id,
        filename=name,
        content_type=sniff(stored.data, name),
        size=len(stored.data),
        sha256=stored.sha256,
        storage_key=stored.storage_key,
    )
    db.add(row)
    db.flush()
    return row


def take(
    db: Session,
    *,
    conversation: Conversation | None = None,
    customer: Customer | None = None,
    upload_ids: list[str],
) -> list[Upload]:
    """The uploads of this conversation (or, for a first message, those made for this
    ``customer``) with these ids, in the order given; a 404 problem if any is not (another
    conversation's or customer's, another workspace's, or already sent)."""
    wanted = list(dict.fromkeys(upload_ids))
    if len(wanted) > MAX_FILES_PER_MESSAGE:
        raise Invalid(f"at most {MAX_FILES_PER_MESSAGE} files can go in one message")
    if not wanted:
        return []
    owner = conversation or customer
    assert owner is not None, "uploads are a conversation's or a customer's"
    mine = (
        Upload.conversation_id == conversation.id
        if conversation is not None
        else (Upload.customer_id == owner.id) & Upload.conversation_id.is_(None)
    )
    rows = {
        u.id: u
        for u in db.scalars(
            select(Upload).where(
                Upload.workspace_id == owner.workspace_id, mine, Upload.id.in_(wanted)
            )
        )
    }
    if len(rows) != len(wanted):
        raise NotFound("upload")
    return [rows[i] for i in wanted]


def attach(db: Session, *, message: Message, uploads: list[Upload]) -> list[Attachment]:
    """Make the uploads the message's attachments (each upload is used once)."""
    # No ORM relationship orders the inserts: the message row must exist first.
    db.flush()
    out = []
    for n, up in enumerate(uploads):
        row = Attachment(
            workspace_id=message.workspace_id,
            message_id=message.id,
            filename=up.filename,
            content_type=up.content_type,
            size=up.size,
            sha256=up.sha256,
            storage_key=up.storage_key,
            # Attachments are listed by creation time: keep the order the agent chose.
            created_at=message.created_at + timedelta(microseconds=n),
        )
        db.add(row)
        db.delete(up)
        out.append(row)
    return out


def of_messages(db: Session, message_ids: list[str]) -> dict[str, list[Attachment]]:
    """Attachments of many messages in one query, each message's in order."""
    out: dict[str, list[Attachment]] = {i: [] for i in message_ids}
    if message_ids:
        for row in db.scalars(
            select(Attachment)
            .where(Attachment.message_id.in_(message_ids))
            .order_by(Attachment.created_at, Attachment.id)
        ):
            out[row.message_id].append(row)
    return out


def summary(rows: list[Attachment]) -> list[dict[str, object]]:
    """What a realtime event or a widget says of attachments."""
    return [
        {"id": a.id, "filename": a.filename, "content_type": a.content_type, "size": a.size}
        for a in rows
    ]


def prune_uploads(db: Session, *, now: datetime | None = None) -> list[str]:
    """Drop uploads never sent (the periodic job); returns their storage keys, for
    ``forget_unused`` once this has committed."""
    cutoff = (now or utcnow()) - UPLOAD_TTL
    pruned = db.scalars(
        delete(Upload).where(Upload.created_at < cutoff).returning(Upload.storage_key)
    )
    return sorted(set(pruned))


def forget_unused(database: Database, storage: LocalStorage, keys: list[str]) -> list[str]:
    """Delete the stored files of these keys that no attachment or upload (of any
    workspace: storage is content-addressed) refers to any more; returns the keys kept
    only because they were stored or reused lately (see ``LocalStorage.forget``)."""
    if not keys:
        return []
    with database.session(write=False) as db:
        # Uploads first: sending one turns it into an attachment, and a reply committed
        # between the two reads is then seen by the second (PostgreSQL reads each
        # statement's own snapshot).
        used = set(db.scalars(select(Upload.storage_key).where(Upload.storage_key.in_(keys))))
        used.update(
            db.scalars(select(Attachment.storage_key).where(Attachment.storage_key.in_(keys)))
        )
    return [key for key in keys if key not in used and not storage.forget(key)]


# --- signed links ------------------------------------------------------------------------


def _signature(secret_key: str, attachment_id: str, expires: int) -> str:
    # A key of its own, derived from the app's secret: a link signature can never be
    # replayed as any other HMAC Rapport computes.
    key = hmac_sha256_hex(secret_key, b"rapport attachment links v1")
    return hmac_sha256_hex(key, f"{attachment_id}.{expires}")


@dataclass(frozen=True)
class Link:
    url: str
    expires: int


def signed_link(
    *,
    public_url: str,
    secret_key: str,
    attachment: Attachment,
    now: datetime | None = None,
    ttl: timedelta = LINK_TTL,
) -> Link:
    """A public URL that serves this one attachment until it expires, to whoever has it."""
    expires = int(((now or utcnow()) + ttl).timestamp())
    query = urlencode({"expires": expires, "sig": _signature(secret_key, attachment.id, expires)})
    name = quote(attachment.filename, safe="")
    return Link(f"{public_url.rstrip('/')}/files/{attachment.id}/{name}?{query}", expires=expires)


def link_valid(
    *, secret_key: str, attachment_id: str, expires: str, sig: str, now: datetime | None = None
) -> bool:
    """Whether a link's signature is ours for this attachment and it has not expired."""
    # isdigit() alone takes "²" for a digit, which int() refuses.
    if not (expires.isascii() and expires.isdigit()) or not sig:
        return False
    if int(expires) < int((now or utcnow()).timestamp()):
        return False
    return same(sig, _signature(secret_key, attachment_id, int(expires)))
