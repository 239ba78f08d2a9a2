"""Training the workspace's triage classifiers from its own past conversations.

The examples are each labelled conversation's first customer message: its single label is
the category (conversations with several labels say nothing clear and are left out), and
its priority, when an agent set one, the priority. A kind with fewer than
``triage.MIN_EXAMPLES`` examples or a single class is not trained (and a stale model of it
is dropped), so the defaults serve until there is data.
"""

from collections import defaultdict

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from rapport.assistant import triage
from rapport.assistant.classify import TextClassifier
from rapport.assistant.models import TriageModel
from rapport.conversations.models import (
    Conversation,
    ConversationLabel,
    Direction,
    Message,
    MessageKind,
    Priority,
)
from rapport.crypto import SecretBox, box_for
from rapport.db import utcnow
from rapport.jobs.registry import JobContext, job
from rapport.jobs.service import enqueue
from rapport.workspaces import service as workspaces
from rapport.workspaces.models import Workspace

MAX_EXAMPLES = 20_000


def examples(db: Session, workspace_id: str) -> dict[str, tuple[list[str], list[str]]]:
    """(texts, labels) per kind, from the newest labelled conversations."""
    first = (
        select(Message.conversation_id, func.min(Message.created_at).label("at"))
        .where(
            Message.workspace_id == workspace_id,
            Message.direction == Direction.inbound,
            Message.kind == MessageKind.message,
        )
        .group_by(Message.conversation_id)
        .subquery()
    )
    rows = db.execute(
        select(Conversation.id, Conversation.priority, Message.text)
        .join(first, first.c.conversation_id == Conversation.id)
        .join(
            Message,
            (Message.conversation_id == Conversation.id) & (Message.created_at == first.c.at),
        )
        .where(Conversation.workspace_id == workspace_id, Message.text != "")
        .order_by(Conversation.created_at.desc())
        .limit(MAX_EXAMPLES)
    ).all()
    labels: dict[str, list[str]] = defaultdict(list)
    ids = [r.id for r in rows]
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        for cid, label in db.execute(
            select(ConversationLabel.conversation_id, ConversationLabel.label).where(
                ConversationLabel.conversation_id.in_(chunk)
            )
        ):
            labels[cid].append(label)
    out: dict[str, tuple[list[str], list[str]]] = {"category": ([], []), "priority": ([], [])}
    seen: set[str] = set()
    for r in rows:
        if r.id in seen:
            continue
        seen.add(r.id)
        if len(labels[r.id]) == 1:
            out["category"][0].append(r.text)
            out["category"][1].append(labels[r.id][0])
        if r.priority != Priority.none:
            out["priority"][0].append(r.text)
            out["priority"][1].append(r.priority.value)
    return out


def train(db: Session, workspace_id: str, box: SecretBox) -> dict[str, int]:
    """Train (or drop) each kind's model; returns the examples used per trained kind."""
    workspaces.lock(db, workspace_id)  # the nightly pass and an erasure's, say
    trained: dict[str, int] = {}
    for kind, (texts, labels) in examples(db, workspace_id).items():
        db.execute(
            delete(TriageModel).where(
                TriageModel.workspace_id == workspace_id, TriageModel.kind == kind
            )
        )
        if len(texts) < triage.MIN_EXAMPLES or len(set(labels)) < 2:
            continue
        # Lexical only: triage runs on every inbound message in the caller's thread, before
        # the single ingest writer, where a sentence embedding would cost 15-40 ms each.
        model = TextClassifier(use_embeddings=False).fit(texts, labels)
        db.add(
            TriageModel(
                workspace_id=workspace_id,
                kind=kind,
                model=model.dumps(box),
                examples=len(texts),
                classes=len(set(labels)),
                trained_at=utcnow(),
            )
        )
        trained[kind] = len(texts)
    triage.forget_cached(workspace_id)
    return trained


@job("train_triage", max_attempts=3)
def train_triage(ctx: JobContext, workspace_id: str) -> None:
    with ctx.database.session() as db:
        train(db, workspace_id, box_for(ctx.settings.secret_key.get_secret_value()))


@job("train_triage_all")
def train_triage_all(ctx: JobContext) -> None:
    """The nightly pass: every workspace learns from the day's labelled conversations."""
    with ctx.database.session() as db:
        for workspace_id in db.scalars(select(Workspace.id)):
            enqueue(
                db,
                name="train_triage",
                args={"workspace_id": workspace_id},
                workspace_id=workspace_id,
                max_attempts=3,
            )
