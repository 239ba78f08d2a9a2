"""Canned responses: saved replies with variables, rendered in the template sandbox."""

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from rapport import templating
from rapport.auth.models import User
from rapport.conversations.models import CannedResponse, Conversation
from rapport.customers.models import Customer
from rapport.problems import Conflict, Invalid
from rapport.scoped import get_scoped


def list_all(db: Session, *, workspace_id: str, prefix: str = "") -> list[CannedResponse]:
    stmt = select(CannedResponse).where(CannedResponse.workspace_id == workspace_id)
    if prefix:
        stmt = stmt.where(CannedResponse.shortcut.startswith(prefix.lower(), autoescape=True))
    return list(db.scalars(stmt.order_by(CannedResponse.shortcut)))


def _checked(
    db: Session, *, workspace_id: str, shortcut: str, text: str, other_than: str | None = None
) -> str:
    """The shortcut as kept, once it and the text are found good; its shortcut is unique in
    the workspace (``other_than``: the response being edited keeps its own)."""
    shortcut = shortcut.strip().lstrip("/").lower()
    if not shortcut or not shortcut.replace("-", "").replace("_", "").isalnum():
        raise Invalid("a shortcut is letters, digits, - and _")
    templating.check(text)
    taken = db.scalar(
        select(CannedResponse.id).where(
            CannedResponse.workspace_id == workspace_id, CannedResponse.shortcut == shortcut
        )
    )
    if taken and taken != other_than:
        raise Conflict(f"/{shortcut} exists")
    return shortcut


def create(db: Session, *, workspace_id: str, shortcut: str, text: str) -> CannedResponse:
    """A new canned response; its shortcut is unique in the workspace."""
    shortcut = _checked(db, workspace_id=workspace_id, shortcut=shortcut, text=text)
    row = CannedResponse(workspace_id=workspace_id, shortcut=shortcut, text=text)
    db.add(row)
    db.flush()
    return row


def update(db: Session, *, row: CannedResponse, shortcut: str, text: str) -> CannedResponse:
    """The canned response with a new shortcut or text, checked as a new one is."""
    row.shortcut = _checked(
        db, workspace_id=row.workspace_id, shortcut=shortcut, text=text, other_than=row.id
    )
    row.text = text
    db.flush()
    return row


def delete(db: Session, *, row: CannedResponse, admin: bool, user_id: str) -> None:
    """Delete a canned response; refused while an automation rule or a macro sends it (the
    rules named to an ``admin``, who can change them; a colleague's own macro only counted
    to anyone else)."""
    from rapport.automation import service as automation  # automation sends canned replies

    automation.refuse_if_named(
        db,
        workspace_id=row.workspace_id,
        what="canned response",
        row_id=row.id,
        admin=admin,
        user_id=user_id,
    )
    db.delete(row)
    db.flush()


def get(db: Session, *, workspace_id: str, canned_id: str) -> CannedResponse:
    return get_scoped(
        db, CannedResponse, canned_id, workspace_id=workspace_id, name="canned response"
    )


def context(
    db: Session,
    *,
    conversation: Conversation | None,
    agent_id: str | None,
    customer: Customer | None = None,
) -> dict[str, Any]:
    """What a canned response may refer to: the customer, the agent and the conversation
    (the ``customer`` alone for a first message, before its conversation exists: its
    ``conversation`` is then empty)."""
    if conversation is not None:
        customer = db.get(Customer, conversation.customer_id)
    agent = db.get(User, agent_id) if agent_id else None
    name = (customer.name if customer else "") or ""
    return {
        "customer": {
            "name": name,
            "first_name": name.split(" ")[0] if name else "",
            "email": customer.email if customer else None,
            "phone": customer.phone if customer else None,
            "attributes": dict(customer.attributes) if customer else {},
        },
        "agent": {"name": agent.name if agent else "", "email": agent.email if agent else ""},
        "conversation": {
            "id": conversation.id if conversation else "",
            "subject": conversation.subject if conversation else "",
        },
    }


def render(
    db: Session,
    *,
    canned: CannedResponse,
    conversation: Conversation | None,
    agent_id: str | None,
    customer: Customer | None = None,
) -> str:
    """The canned response's text for this conversation (or this customer's first message)."""
    return templating.render(
        canned.text,
        context(db, conversation=conversation, agent_id=agent_id, customer=customer),
    )
