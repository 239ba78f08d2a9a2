"""The demo workspace ``make run`` starts with: agents, a team, inboxes, customers, history."""

import secrets
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from rapport.auth import security
from rapport.auth.models import Role, User
from rapport.automation import service as automation
from rapport.channels import service as inboxes
from rapport.channels import webchat
from rapport.channels.email import ingest_email
from rapport.channels.schemas import InboxCreate
from rapport.config import Settings
from rapport.conversations import service as conversations
from rapport.conversations.models import Status
from rapport.crypto import box_for
from rapport.customers import profile
from rapport.customers import service as customers
from rapport.customers.identity import handle
from rapport.customers.models import AttributeType, IdentityKind
from rapport.customers.schemas import CustomerUpdate, EventCreate
from rapport.db import Database, utcnow
from rapport.events.service import add_event
from rapport.ingest import InboundMessage, receive
from rapport.kb import service as kb
from rapport.workspaces import saved_views
from rapport.workspaces import service as workspaces
from rapport.workspaces.models import Workspace

DEMO_WORKSPACE = "Demo"
ADMIN_EMAIL = "admin@demo.rapport.test"
MAIL_ADDRESS = "support@demo.rapport.test"

_CUSTOMERS = [
    (
        "Ana Souza",
        "ana.souza@example.com",
        "+5511987654321",
        [
            ("Web shop", "Hi! My order #1042 hasn't shipped yet, can you check?"),
            ("Mobile app", "Also, can I change the delivery address?"),
        ],
    ),
    (
        "Liam O'Brien",
        "liam@example.org",
        "+353861234567",
        [
            ("Mobile app", "The app logs me out every time I open it."),
        ],
    ),
    (
        "Yuki Tanaka",
        "yuki.tanaka@example.jp",
        "+819012345678",
        [
            ("Web shop", "Do you ship to Osaka? What does it cost?"),
        ],
    ),
    (
        "Fatima Zahra",
        "fatima@example.net",
        None,
        [
            ("Web shop", "I was charged twice for the same order."),
            ("Web shop", "Please refund one of the charges, thanks."),
        ],
    ),
]


def seed(database: Database, settings: Settings) -> tuple[str, str, bool]:
    """Create the demo workspace if missing; return (email, a fresh password, created)."""
    password = secrets.token_urlsafe(12)
    with database.session() as db:
        ws = db.scalar(select(Workspace).where(Workspace.name == DEMO_WORKSPACE))
        if ws is not None:
            admin = db.scalar(select(User).where(User.email == ADMIN_EMAIL))
            if admin is not None:
                admin.password_hash = security.hash_password(password)
                admin.failed_logins = 0
                admin.locked_until = None
            return ADMIN_EMAIL, password, False
        ws, admin = workspaces.create(
            db,
            name=DEMO_WORKSPACE,
            owner_email=ADMIN_EMAIL,
            owner_password=password,
            owner_name="Demo Admin",
        )
        _fill(db, ws, settings, admin=admin)
    return ADMIN_EMAIL, password, True


def _fill(db: Session, ws: Workspace, settings: Settings, *, admin: User) -> None:
    box = box_for(settings.secret_key.get_secret_value())
    agents = []
    for name, email in (
        ("Bob Agent", "bob@demo.rapport.test"),
        ("Carol Agent", "carol@demo.rapport.test"),
    ):
        _, user = workspaces.add_member(
            db,
            workspace_id=ws.id,
            email=email,
            role=Role.agent,
            password=secrets.token_urlsafe(16),
            name=name,
            actor_role=Role.owner,
        )
        agents.append(user)
    team = workspaces.create_team(
        db, workspace_id=ws.id, name="Support", member_ids=[a.id for a in agents]
    )
    boxes = {
        name: inboxes.create(
            db,
            workspace_id=ws.id,
            data=InboxCreate(name=name, channel="api", team_id=team.id, auto_assign=False),
            box=box,
        )
        for name in ("Web shop", "Mobile app")
    }
    db.flush()
    now = utcnow()
    for n, (name, email, phone, messages) in enumerate(_CUSTOMERS):
        for k, (inbox_name, text) in enumerate(messages):
            handles = [handle(IdentityKind.email, email)]
            if phone:
                handles.append(handle(IdentityKind.phone, phone))
            result = receive(
                db,
                InboundMessage(
                    inbox_id=boxes[inbox_name].id,
                    external_id=f"demo-{n}-{k}",
                    handles=handles,
                    text=text,
                    sender_name=name,
                ),
                settings=settings,
            )
            if n == 0 and k == 0:
                conversations.assign(
                    db,
                    conversation=result.conversation,
                    assignee_id=agents[0].id,
                    team_id=team.id,
                    actor_id=None,
                )
                conversations.reply(
                    db,
                    conversation=result.conversation,
                    author_id=agents[0].id,
                    text=f"Hi {name.split()[0]}, let me check order #1042 for you.",
                )
            if n == 2:
                conversations.set_status(
                    db, conversation=result.conversation, status=Status.resolved
                )
        db.flush()
        if n == 0:
            # Typed attributes the workspace defines, one customer's filled in.
            profile.define(
                db,
                workspace_id=ws.id,
                key="plan",
                type=AttributeType.list,
                label="Plan",
                options=["Free", "Pro", "Enterprise"],
            )
            profile.define(
                db, workspace_id=ws.id, key="renewal", type=AttributeType.date, label="Renews on"
            )
            customers.update(
                db,
                customer=result.customer,
                data=CustomerUpdate(
                    attributes={
                        "plan": ["Pro"],
                        "renewal": (now + timedelta(days=40)).date().isoformat(),
                    }
                ),
            )
            add_event(
                db,
                customer=result.customer,
                data=EventCreate(
                    type="Order Completed",
                    properties={"order_id": "1042", "total": "59.90", "currency": "EUR"},
                    occurred_at=now - timedelta(days=3),
                    source="demo",
                ),
            )
    _other_channels(db, ws, settings, team_id=team.id, admin=admin)
    _knowledge_base(db, ws)
    # A macro for everyone: the order has shipped, said, labelled and resolved in one go.
    automation.create_macro(
        db,
        workspace_id=ws.id,
        user_id=admin.id,
        admin=True,
        name="Order shipped",
        actions=[
            {
                "type": "send_message",
                "value": "Hi {{ customer.first_name }}, your order is on its way: you will get "
                "the tracking link by email today.",
            },
            {"type": "add_label", "value": "shipped"},
            {"type": "set_status", "value": "resolved"},
        ],
        visibility="workspace",
    )
    # Two views shared with everyone, in the inbox's sidebar with how many each lists.
    for name, query in (
        ("Open email", "status=open&channel=email"),
        ("Waiting longest", "status=open&sort=waiting"),
    ):
        saved_views.create(
            db,
            workspace_id=ws.id,
            user_id=admin.id,
            admin=True,
            page="inbox",
            name=name,
            query=query,
            shared=True,
        )


# Web chat visitors: one new to us, and Liam again, who types his email (not proven: the
# customer panel suggests the duplicate rather than merging on a typed address).
_CHATS = [
    ("Noah Berg", None, "Hi, do you have the blue jacket in size M?"),
    ("Liam O'Brien", "liam@example.org", "Still logged out on the app, any news?"),
]
_EMAIL = (
    "From: Sofia Rossi <sofia.rossi@example.it>\r\n"
    "To: Demo Support <support@demo.rapport.test>\r\n"
    # Her accountant copied: a reply to her offers to copy him too.
    "Cc: Marco Conti <amministrazione@example.it>\r\n"
    "Subject: Invoice for order #1077\r\n"
    "Message-ID: <demo-invoice-1077@example.it>\r\n"
    "Date: Mon, 30 Nov 2026 09:12:00 +0100\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "\r\n"
    "Hello,\r\n\r\ncould you send me an invoice with my company's VAT number for order "
    "#1077? It is IT01234567890.\r\n\r\nThank you,\r\nSofia\r\n"
)
# Her accountant answers all: in her conversation, as himself (a guest of it).
_EMAIL_ALL = (
    "From: Marco Conti <amministrazione@example.it>\r\n"
    "To: Demo Support <support@demo.rapport.test>\r\n"
    "Cc: Sofia Rossi <sofia.rossi@example.it>\r\n"
    "Subject: Re: Invoice for order #1077\r\n"
    "Message-ID: <demo-invoice-1077-re@example.it>\r\n"
    "In-Reply-To: <demo-invoice-1077@example.it>\r\n"
    "References: <demo-invoice-1077@example.it>\r\n"
    "Date: Mon, 30 Nov 2026 09:40:00 +0100\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "\r\n"
    "Good morning,\r\n\r\nplease make it out to Rossi Design S.r.l., Via Roma 1, "
    "Milano.\r\n\r\nMarco Conti\r\n"
)


def _other_channels(
    db: Session, ws: Workspace, settings: Settings, *, team_id: str, admin: User
) -> None:
    """A web chat inbox and an email inbox, each with a conversation that came in through
    its own channel's path; the email's is the admin's, so that their own view (Mine, where
    the inbox opens) is not empty."""
    box = box_for(settings.secret_key.get_secret_value())
    chat = inboxes.create(
        db,
        workspace_id=ws.id,
        data=InboxCreate(name="Site chat", channel="webchat", team_id=team_id),
        box=box,
    )
    mail = inboxes.create(
        db,
        workspace_id=ws.id,
        # Replies need an SMTP server in the inbox's settings: the demo leaves that to you.
        data=InboxCreate(
            name="Email", channel="email", team_id=team_id, settings={"address": MAIL_ADDRESS}
        ),
        box=box,
    )
    db.flush()
    for name, email, text in _CHATS:
        visitor, _ = webchat.start(
            db,
            inbox=chat,
            visitor_token=None,
            name=name,
            email=email,
            user_id=None,
            user_hash=None,
            secret=None,
        )
        result = receive(
            db,
            InboundMessage(
                inbox_id=chat.id,
                external_id=None,
                handles=webchat.handles_of(visitor, ws.default_region),
                text=text,
                sender_name=name,
            ),
            settings=settings,
        )
        visitor.customer_id = result.customer.id
    mailed = ingest_email(db, _EMAIL.encode(), inbox_id=mail.id, settings=settings)
    ingest_email(db, _EMAIL_ALL.encode(), inbox_id=mail.id, settings=settings)
    conversations.assign(
        db,
        conversation=mailed.ingest.conversation,
        assignee_id=admin.id,
        team_id=team_id,
        actor_id=None,
    )


_HELP = [
    (
        "Orders and delivery",
        [
            (
                "Where is my order?",
                "Every order has a tracking link in its confirmation email. Parcels usually "
                "arrive **within three business days**; if yours has not after five, write "
                "to us with the order number.",
            ),
            (
                "Changing your delivery address",
                "Before an order ships you can change where it goes: open *Orders*, choose the "
                "order and pick *Edit address*. Once it has shipped, the carrier decides.",
            ),
        ],
    ),
    (
        "Payments and refunds",
        [
            (
                "Refunds and returns",
                "You can return any item within 30 days of delivery. Once it is back in our "
                "warehouse, the full amount is credited to your original payment method "
                "within five business days.",
            ),
            (
                "I was charged twice",
                "A second charge is usually a card authorization that disappears within "
                "48 hours. If it is still there after that, send us both transaction "
                "references and we refund one at once.",
            ),
        ],
    ),
]


def _knowledge_base(db: Session, ws: Workspace) -> None:
    """A help center at /help/demo/ with a few published articles."""
    kb.configure_help_center(
        db,
        workspace_id=ws.id,
        changes={"slug": "demo", "title": "Demo Shop Help", "intro": "Answers, day and night."},
    )
    for position, (title, articles) in enumerate(_HELP):
        collection = kb.save_collection(
            db, workspace_id=ws.id, data={"title": title, "position": position}
        )
        for body_position, (article_title, body) in enumerate(articles):
            article = kb.save_article(
                db,
                workspace_id=ws.id,
                data={
                    "title": article_title,
                    "body": body,
                    "collection_id": collection.id,
                    "position": body_position,
                },
                author_id=None,
            )
            kb.publish(db, article=article, published=True)
