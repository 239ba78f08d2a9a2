"""Messages as the API gives them, wherever it gives them (a conversation, one message, a
customer's export, the API channel's answer to a post): one function, so that none drifts
from the others."""

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from rapport.channels.email import inline
from rapport.conversations import files
from rapport.conversations.models import Attachment, Message
from rapport.conversations.schemas import AttachmentRead, MessageRead


def message_reads(db: Session, messages: Sequence[Message], *, base_url: str) -> list[MessageRead]:
    """The messages as ``message_read`` gives each, their attachments read in one query."""
    found = files.of_messages(db, [m.id for m in messages])
    return [message_read(m, found[m.id], base_url=base_url) for m in messages]


def message_read(message: Any, attached: Sequence[Attachment], *, base_url: str) -> MessageRead:
    """The message (a row, or the plain values ingest stored) with its attachments, and an
    email's ``cid:`` images pointing at the attachments they were stored as
    (``inline.shown``): no client can load a ``cid:`` address. Each such address is
    absolute, under ``base_url`` (the settings' ``public_url``), as the API's other links
    are: a client that shows the HTML elsewhere, or a person reading their export, has no
    page to resolve a path against."""
    return MessageRead.model_validate(message).model_copy(
        update={
            "attachments": [AttachmentRead.model_validate(a) for a in attached],
            "html": message.html
            and inline.shown(
                message.html,
                meta=message.meta,
                files=attached,
                conversation_id=message.conversation_id,
                message_id=message.id,
                base_url=base_url.rstrip("/"),
            ),
        }
    )
