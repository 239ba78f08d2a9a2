"""Factories for the rows tests need, and the two-workspace world of the personas."""

import math
import pickle
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select, update

from rapport.assistant import triage
from rapport.auth import service as auth
from rapport.auth.models import Role, User
from rapport.channels import service as inboxes
from rapport.channels.models import Inbox
from rapport.channels.schemas import InboxCreate
from rapport.config import Settings
from rapport.conversations import service as conversations
from rapport.conversations.models import Conversation, Message
from rapport.crypto import box_for
from rapport.customers.identity import handle
from rapport.customers.models import IdentityKind
from rapport.db import Database, utcnow
from rapport.ingest import InboundMessage, IngestResult, receive
from rapport.jobs.models import Job, JobState
from rapport.workspaces import service as workspaces
from rapport.workspaces.models import Workspace

PASSWORD = "correct horse battery staple"


class _Planted:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (str(self.path), "w")


class Window:
    """A sliding window of a rate limit, opened by the first request counted in it. Its 429's
    Retry-After is the time until that request leaves the window: the whole window less the
    seconds since (one or two on a loaded machine), never more."""

    def __init__(self, seconds: int) -> None:
        self.seconds = seconds
        self.opened = time.monotonic()

    def waits(self, retry_after: str) -> bool:
        spent = math.ceil(time.monotonic() - self.opened)
        return self.seconds - spent <= int(retry_after) <= self.seconds


def planted_pickle(marker: Path) -> bytes:
    """What someone with write access to the database might store as a model: unpickling
    it creates ``marker``."""
    return pickle.dumps(_Planted(marker))


@dataclass
class Tenant:
    workspace: Workspace
    users: dict[str, User] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    inbox: Inbox | None = None
    first: IngestResult | None = None

    @property
    def opened(self) -> IngestResult:
        """The tenant's first inbound message, with its conversation and customer (every
        world's tenants have one)."""
        assert self.first is not None
        return self.first


@dataclass
class World:
    acme: Tenant
    globex: Tenant

    @property
    def alice(self) -> str:
        return self.acme.tokens["alice"]

    @property
    def bob(self) -> str:
        return self.acme.tokens["bob"]

    @property
    def victor(self) -> str:
        return self.acme.tokens["victor"]

    @property
    def mallory(self) -> str:
        return self.globex.tokens["mallory"]


def make_tenant(
    database: Database, settings: Settings, name: str, owner: str, members: dict[str, Role]
) -> Tenant:
    box = box_for(settings.secret_key.get_secret_value())
    with database.session() as db:
        ws, owner_user = workspaces.create(
            db,
            name=name,
            owner_email=f"{owner}@{name.lower()}.test",
            owner_password=PASSWORD,
            owner_name=owner.title(),
        )
        tenant = Tenant(workspace=ws)
        tenant.users[owner] = owner_user
        for person, role in members.items():
            _, user = workspaces.add_member(
                db,
                workspace_id=ws.id,
                email=f"{person}@{name.lower()}.test",
                role=role,
                password=PASSWORD,
                name=person.title(),
                actor_role=Role.owner,
            )
            tenant.users[person] = user
        for person, user in tenant.users.items():
            member = auth.membership(db, user_id=user.id, workspace=ws.id)
            tenant.tokens[person], _ = auth.create_token(
                db, user_id=user.id, workspace_id=ws.id, name="test", role=member.role
            )
        tenant.inbox = inboxes.create(
            db, workspace_id=ws.id, data=InboxCreate(name=f"{name} API", channel="api"), box=box
        )
        db.flush()
        tenant.first = inbound(
            db,
            settings,
            tenant.inbox,
            external_id=f"{name}-1",
            email=f"customer@{name.lower()}.example",
            text=f"Hello {name}",
        )
        conversations.note(
            db, conversation=tenant.first.conversation, author_id=owner_user.id, text="first note"
        )
    return tenant


def inbound(
    db,
    settings: Settings,
    inbox: Inbox,
    *,
    external_id: str | None,
    email: str | None = None,  # type: ignore[no-untyped-def]
    phone: str | None = None,
    text: str = "hi",
    name: str = "",
) -> IngestResult:
    handles = []
    if email:
        handles.append(handle(IdentityKind.email, email))
    if phone:
        handles.append(handle(IdentityKind.phone, phone))
    return receive(
        db,
        InboundMessage(
            inbox_id=inbox.id, external_id=external_id, handles=handles, text=text, sender_name=name
        ),
        settings=settings,
    )


def dead_job(
    database: Database,
    *,
    workspace_id: str | None,
    name: str = "webhook_deliver",
    error: str = "DeliveryError: provider 503",
    seconds_ago: float = 0,
    args: dict[str, object] | None = None,
) -> str:
    """A job dead-lettered after its 8 attempts ``seconds_ago``; its id."""
    died = utcnow() - timedelta(seconds=seconds_ago)
    with database.session() as db:
        row = Job(
            name=name,
            args=args or {},
            workspace_id=workspace_id,
            state=JobState.dead,
            attempts=8,
            last_error=error,
            run_at=died,  # its last attempt was due when it ran, and died
            finished_at=died,
        )
        db.add(row)
        db.flush()
        return row.id


def build_world(database: Database, settings: Settings) -> World:
    # Each tenant's first message is triaged in its tenant's write transaction: the models
    # load here instead (once a process), not under SQLite's one write lock, where they
    # kept a live server's worker waiting past its 10 s on a busy machine (12 s seen).
    triage.warm_up()
    acme = make_tenant(
        database, settings, "Acme", "alice", {"bob": Role.agent, "victor": Role.viewer}
    )
    globex = make_tenant(database, settings, "Globex", "mallory", {})
    return World(acme=acme, globex=globex)


def written_ago(database: Database, external_id: str, ago: timedelta) -> str:
    """Make the customer's message (by its provider id) one written ``ago``, as its
    conversation's last message in; returns the conversation's id."""
    at = utcnow() - ago
    with database.session() as db:
        msg = db.scalars(select(Message).where(Message.external_id == external_id)).one()
        msg.created_at = at
        db.execute(
            update(Conversation)
            .where(Conversation.id == msg.conversation_id)
            .values(last_inbound_at=at)
        )
        return msg.conversation_id


def ada_the_admin(database: Database, world: World) -> tuple[str, str]:
    """ada, an admin of Acme (not its owner): her user id and an API token."""
    with database.session() as db:
        _, user = workspaces.add_member(
            db,
            workspace_id=world.acme.workspace.id,
            email="ada@acme.test",
            role=Role.admin,
            password=PASSWORD,
            name="Ada",
            actor_role=Role.owner,
        )
        token, _ = auth.create_token(
            db, user_id=user.id, workspace_id=world.acme.workspace.id, name="t", role=Role.admin
        )
    return user.id, str(token)
