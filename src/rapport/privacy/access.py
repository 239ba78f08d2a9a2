"""A data subject's access request: everything Rapport holds about one person, in one
document an admin can hand over.

It covers the customer and every record merged into it, their handles, tags, consent
history, timeline events, orders, what they typed into web chat forms, the notes agents
wrote about them, the merges of their records (what each kept to be undone: their earlier
name, email and phone, the values that differed, the agent's reason), and every
conversation with all its messages (private notes included, marked by ``kind``: they are
about the person too) and the names and sizes of the files in them; and what they wrote
in others' conversations (as someone a customer's mail copied: ``guest_messages``), their
own messages alone.
"""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from rapport.channels.models import Inbox
from rapport.channels.webchat.models import Visitor
from rapport.conversations import reads
from rapport.conversations.models import Conversation, Message
from rapport.conversations.schemas import ConversationRead, MessageRead
from rapport.customers import merge, profile
from rapport.customers import service as customers
from rapport.customers.models import Customer, CustomerMerge, CustomerNote, Event, Identity
from rapport.customers.schemas import ConsentRead, CustomerRead, IdentityRead, MergeRead
from rapport.db import utcnow
from rapport.events.models import Order


class _Read(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ExportedEvent(_Read):
    type: str
    properties: dict[str, Any]
    occurred_at: datetime
    source: str


class ExportedOrder(_Read):
    order_id: str
    total_minor: int
    currency: str
    status: str
    properties: dict[str, Any]
    occurred_at: datetime


class ExportedVisitor(_Read):
    name: str
    email: str | None
    created_at: datetime
    last_seen_at: datetime


class ExportedNote(_Read):
    text: str
    created_at: datetime
    updated_at: datetime


class ExportedMerge(MergeRead):
    """A merge of one of their records, with what it keeps to be undone (``moved``). A
    merge with a record not theirs (undone since, say) keeps their side alone here: the
    other record's values are someone else's."""


# What a merge's record keeps of each side's own (``merge.merge``): the survivor's values
# (before, and those the merged record's replaced) and the merged record's (its tags, the
# values it set on the survivor); the ids of what moved name nothing of anyone else.
_SURVIVOR_SIDE = ("survivor_before", "replaced_attributes")
_MERGED_SIDE = ("set", "attributes_set", "added_attributes", "tags", "survivor_last_seen_after")


def _exported_merge(row: CustomerMerge, person: set[str]) -> ExportedMerge:
    moved = dict(row.moved)
    if not (row.survivor_id in person and row.merged_id in person):
        # One side is someone else's (the merge was undone since): its values left out.
        ours = "survivor" if row.survivor_id in person else "merged"
        other = "merged" if ours == "survivor" else "survivor"
        for key in _MERGED_SIDE if ours == "survivor" else _SURVIVOR_SIDE:
            moved.pop(key, None)
        moved["conflicts"] = [
            {k: v for k, v in c.items() if k != other} for c in moved.get("conflicts", [])
        ]
    return ExportedMerge(
        id=row.id,
        survivor_id=row.survivor_id,
        merged_id=row.merged_id,
        reason=row.reason,
        moved=moved,
        created_at=row.created_at,
        undone_at=row.undone_at,
    )


class ExportedConversation(ConversationRead):
    channel: str
    messages: list[MessageRead]


class WrittenElsewhere(MessageRead):
    """A message the person wrote in another customer's conversation (one whose mail
    copied them): the message alone, not the conversation around it."""

    channel: str


class CustomerExport(BaseModel):
    exported_at: datetime
    customer: CustomerRead
    merged_records: list[CustomerRead]
    identities: list[IdentityRead]
    tags: list[str]
    consents: list[ConsentRead]
    events: list[ExportedEvent]
    orders: list[ExportedOrder]
    web_chat_visitors: list[ExportedVisitor]
    notes: list[ExportedNote]
    merges: list[ExportedMerge]
    conversations: list[ExportedConversation]
    written_elsewhere: list[WrittenElsewhere]


def guest_messages(workspace_id: str, person: list[str] | set[str]) -> Select[str]:
    """The ids of the messages this person (a customer and the records merged into it)
    wrote in others' conversations, as their guest (``ConversationGuest``)."""
    return select(Message.id).where(
        Message.conversation_id.in_(customers.guest_conversations(workspace_id, list(person))),
        Message.sender_type == "customer",
        Message.sender_id.in_(person),
    )


def export_customer(db: Session, *, customer: Customer, base_url: str) -> CustomerExport:
    """Everything about the person this customer is (see the module's docstring), each
    message as the API reads it (``reads.message_reads``: its files, and a mail's ``cid:``
    images as their attachments' URLs under ``base_url``)."""
    root, ids = merge.person(db, customer=customer)
    ws = root.workspace_id

    def owned(model: Any, order: Any) -> list[Any]:
        return list(
            db.scalars(
                select(model)
                .where(model.workspace_id == ws, model.customer_id.in_(ids))
                .order_by(order, model.id)
            )
        )

    merged = db.scalars(select(Customer).where(Customer.id.in_(ids[1:])).order_by(Customer.id))
    conversations = owned(Conversation, Conversation.created_at)
    messages = list(
        db.scalars(
            select(Message)
            .where(Message.conversation_id.in_([c.id for c in conversations]))
            .order_by(Message.created_at, Message.id)
        )
    )
    own = {c.id for c in conversations}
    elsewhere = [
        m
        for m in db.scalars(
            select(Message)
            .where(Message.id.in_(guest_messages(ws, ids)))
            .order_by(Message.created_at, Message.id)
        )
        if m.conversation_id not in own
    ]
    read = reads.message_reads(db, [*messages, *elsewhere], base_url=base_url)
    by_conversation: dict[str, list[MessageRead]] = {c.id: [] for c in conversations}
    for m in read[: len(messages)]:
        by_conversation[m.conversation_id].append(m)
    channels = {
        row.id: row.channel
        for row in db.execute(select(Inbox.id, Inbox.channel).where(Inbox.workspace_id == ws))
    }
    merges = db.scalars(
        select(CustomerMerge)
        .where(
            CustomerMerge.workspace_id == ws,
            CustomerMerge.survivor_id.in_(ids) | CustomerMerge.merged_id.in_(ids),
        )
        .order_by(CustomerMerge.created_at, CustomerMerge.id)
    )
    consents: list[Any] = []
    tags: set[str] = set()
    for customer_id in ids:
        consents += profile.consents(db, customer_id=customer_id)[1]
        tags.update(profile.tags_of(db, customer_id=customer_id))
    return CustomerExport(
        exported_at=utcnow(),
        customer=CustomerRead.model_validate(root),
        merged_records=[CustomerRead.model_validate(c) for c in merged],
        identities=[IdentityRead.model_validate(i) for i in owned(Identity, Identity.created_at)],
        tags=sorted(tags),
        consents=[ConsentRead.model_validate(c) for c in consents],
        events=[ExportedEvent.model_validate(e) for e in owned(Event, Event.occurred_at)],
        orders=[ExportedOrder.model_validate(o) for o in owned(Order, Order.occurred_at)],
        web_chat_visitors=[
            ExportedVisitor.model_validate(v) for v in owned(Visitor, Visitor.created_at)
        ],
        notes=[
            ExportedNote.model_validate(n) for n in owned(CustomerNote, CustomerNote.created_at)
        ],
        merges=[_exported_merge(m, set(ids)) for m in merges],
        conversations=[
            ExportedConversation(
                **ConversationRead.model_validate(c).model_dump(),
                channel=channels.get(c.inbox_id, ""),
                messages=by_conversation[c.id],
            )
            for c in conversations
        ],
        written_elsewhere=[
            WrittenElsewhere(**m.model_dump(), channel=channels.get(m.inbox_id, ""))
            for m in read[len(messages) :]
        ],
    )
