"""The demo workspace `make run` starts with."""

from sqlalchemy import func, select

from rapport import demo
from rapport.auth.models import User
from rapport.automation.models import Macro
from rapport.channels.models import Inbox
from rapport.config import Settings
from rapport.conversations import copies
from rapport.conversations.models import Attachment, Conversation, Direction, Message
from rapport.customers.models import Customer
from rapport.db import Database
from rapport.events.models import Order
from rapport.workspaces import saved_views
from rapport.workspaces.models import SavedView, Workspace


def test_the_demo_holds_conversations_from_several_channels_once(
    database: Database, settings: Settings
) -> None:
    email, password, created = demo.seed(database, settings)
    assert created and email == demo.ADMIN_EMAIL and password
    with database.session(write=False) as db:
        ws = db.scalar(select(Workspace.id).where(Workspace.name == demo.DEMO_WORKSPACE))
        per_channel = dict(
            db.execute(
                select(Inbox.channel, func.count(Conversation.id))
                .join(Conversation, Conversation.inbox_id == Inbox.id)
                .where(Inbox.workspace_id == ws)
                .group_by(Inbox.channel)
            ).all()
        )
        assert set(per_channel) == {"api", "webchat", "email"}
        # The email came the email channel's way: threaded by its headers, original kept.
        mail = db.scalar(
            select(Message)
            .join(Inbox, Inbox.id == Message.inbox_id)
            .where(
                Inbox.workspace_id == ws,
                Inbox.channel == "email",
                Message.direction == Direction.inbound,
            )
            .order_by(Message.created_at, Message.id)
            .limit(1)
        )
        assert mail is not None and mail.meta["email"]["subject"] == "Invoice for order #1077"
        # Copying her accountant, whom a reply offers to copy too.
        conv = db.get(Conversation, mail.conversation_id)
        assert conv is not None
        assert copies.reply_all(db, conversation=conv) == ["amministrazione@example.it"]
        # Who answered all, in her conversation as himself.
        marco = db.scalars(
            select(Message).where(
                Message.conversation_id == conv.id, Message.sender_id != conv.customer_id
            )
        ).one()
        assert marco.text.startswith("Good morning") and marco.sender_type == "customer"
        assert db.scalar(select(Attachment.filename).where(Attachment.message_id == mail.id)) == (
            "original.eml"
        )
        customers = db.scalar(select(func.count(Customer.id)).where(Customer.workspace_id == ws))
        # The admin's own view, where the inbox opens, holds a conversation (the email's).
        admin = db.scalar(select(User.id).where(User.email == demo.ADMIN_EMAIL))
        assert db.scalar(select(Conversation.id).where(Conversation.assignee_id == admin)) == (
            mail.conversation_id
        )
        # The demo's order is in the purchase history, not only in the timeline.
        assert db.execute(select(Order.order_id, Order.total_minor, Order.currency)).all() == [
            ("1042", 5990, "EUR")
        ]
        # A macro every agent can run, each of its actions valid in the workspace.
        assert db.execute(select(Macro.name, Macro.visibility)).all() == [
            ("Order shipped", "workspace")
        ]
        # Two shared views of the inbox, whose sidebar counts what each lists.
        assert db.execute(
            select(SavedView.name, SavedView.owner_id).order_by(SavedView.position, SavedView.name)
        ).all() == [("Open email", None), ("Waiting longest", None)]
        counted = saved_views.counts(
            db, workspace_id=ws, user_id=admin, views=db.scalars(select(SavedView))
        )
        assert len(counted) == 2 and all(counted.values())  # something in each, none too dear
    # Seeding again only gives the admin a new password.
    _, again, created = demo.seed(database, settings)
    assert not created and again != password
    with database.session(write=False) as db:
        assert db.scalar(select(func.count(Customer.id)).where(Customer.workspace_id == ws)) == (
            customers
        )
