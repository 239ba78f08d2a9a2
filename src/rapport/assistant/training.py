"""Training the workspace's triage classifiers from its own past conversations.

The examples are each labelled conversation's first customer message: its single label is
the category (conversations with several labels say nothing clear and are left out), and
its priority, when an agent set one, the priority. A kind with fewer than
``triage.MIN_EXAMPLES`` examples or a single class is not trained (and a stale model of it
is dropped), so the defaults serve until there is data.
"""

from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Hashable
from typing import Any, TypeVar

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
from rapport.db import Database, utcnow
from rapport.jobs.registry import JobContext, job
from rapport.jobs.service import enqueue
from rapport.problems import Conflict
from rapport.workspaces import service as workspaces
from rapport.workspaces.models import Workspace

MAX_EXAMPLES = 20_000


# One example: (conversation id, kind, text, label).
Example = tuple[str, str, str, str]
Row = TypeVar("Row", bound=Hashable)
Model = TypeVar("Model")
Result = TypeVar("Result")


def learn(
    database: Database,
    workspace_id: str,
    *,
    read: Callable[[Session], list[Row]],
    fit: Callable[[list[Row]], Model],
    store: Callable[[Session, Model], Result],
    recheck: Callable[[Session, list[Row]], list[Row]] | None = None,
    attempts: int = 3,
) -> Result:
    """Fit a workspace's model with no transaction open, then store it, under the
    workspace's lock, if every example it learnt from is still there.

    A fit takes seconds, minutes for a large workspace with the ai extra: inside a write
    transaction it would stop every other writer (SQLite has one, ingest included) or, on
    PostgreSQL, every insert naming the workspace while its row is held. Examples added
    meanwhile only leave the model a little behind (their change queues its own training);
    examples gone (an erasure, an intent deleted, a label taken off) must not live on in
    it, so then it learns again from what is there. ``recheck`` reads what remains of the
    examples seen (by default: everything ``read`` reads now)."""
    for _ in range(attempts):
        with database.session(write=False) as db:
            seen = read(db)
        model = fit(seen)
        with database.session() as db:
            workspaces.lock(db, workspace_id)  # two trainings store one after the other
            now = recheck(db, seen) if recheck is not None else read(db)
            if not Counter(seen) - Counter(now):
                return store(db, model)
    raise Conflict(f"the examples kept changing while the model learnt them ({attempts} tries)")


def examples(
    db: Session, workspace_id: str, *, among: Collection[str] | None = None
) -> list[Example]:
    """The newest labelled conversations' examples: each one's first customer message with
    its single label (kind ``category``), and with its priority when an agent set one.
    ``among`` reads those conversations only, however old."""

    def query(ids: list[str] | None) -> Any:
        """Each conversation's first customer message (of ``ids`` only, when given)."""
        first = select(Message.conversation_id, func.min(Message.created_at).label("at")).where(
            Message.workspace_id == workspace_id,
            Message.direction == Direction.inbound,
            Message.kind == MessageKind.message,
        )
        if ids is not None:  # by each conversation's index, not every message of the workspace
            first = first.where(Message.conversation_id.in_(ids))
        found = first.group_by(Message.conversation_id).subquery()
        return (
            select(Conversation.id, Conversation.priority, Message.text)
            .join(found, found.c.conversation_id == Conversation.id)
            .join(
                Message,
                (Message.conversation_id == Conversation.id) & (Message.created_at == found.c.at),
            )
            .where(Conversation.workspace_id == workspace_id, Message.text != "")
            .order_by(Conversation.created_at.desc())
        )

    if among is None:
        rows = db.execute(query(None).limit(MAX_EXAMPLES)).all()
    else:
        ids = sorted(among)
        rows = [
            r
            for start in range(0, len(ids), 500)
            for r in db.execute(query(ids[start : start + 500]))
        ]
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
    out: list[Example] = []
    seen: set[str] = set()
    for r in rows:
        if r.id in seen:
            continue
        seen.add(r.id)
        if len(labels[r.id]) == 1:
            out.append((r.id, "category", r.text, labels[r.id][0]))
        if r.priority != Priority.none:
            out.append((r.id, "priority", r.text, r.priority.value))
    return out


def train(database: Database, workspace_id: str, box: SecretBox) -> dict[str, int]:
    """Train (or drop) each kind's model; returns the examples used per trained kind."""

    def fit(rows: list[Example]) -> dict[str, tuple[TextClassifier, list[str]]]:
        models = {}
        for kind in ("category", "priority"):
            texts = [text for _, k, text, _ in rows if k == kind]
            labels = [label for _, k, _, label in rows if k == kind]
            if len(texts) < triage.MIN_EXAMPLES or len(set(labels)) < 2:
                continue  # the defaults serve until there is data
            # Lexical only: triage runs on every inbound message before the single ingest
            # writer, where a sentence embedding would cost 15-40 ms each.
            models[kind] = (TextClassifier(use_embeddings=False).fit(texts, labels), labels)
        return models

    def store(db: Session, models: dict[str, tuple[TextClassifier, list[str]]]) -> dict[str, int]:
        # A kind with too few examples now loses the model it had.
        db.execute(delete(TriageModel).where(TriageModel.workspace_id == workspace_id))
        for kind, (model, labels) in models.items():
            db.add(
                TriageModel(
                    workspace_id=workspace_id,
                    kind=kind,
                    model=model.dumps(box),
                    examples=len(labels),
                    classes=len(set(labels)),
                    trained_at=utcnow(),
                )
            )
        return {kind: len(labels) for kind, (_, labels) in models.items()}

    trained = learn(
        database,
        workspace_id,
        read=lambda db: examples(db, workspace_id),
        fit=fit,
        store=store,
        # Conversations labelled since, or past the newest MAX_EXAMPLES, change nothing.
        recheck=lambda db, seen: examples(db, workspace_id, among={r[0] for r in seen}),
    )
    triage.forget_cached(workspace_id)
    return trained


@job("train_triage", max_attempts=3)
def train_triage(ctx: JobContext, workspace_id: str) -> None:
    train(ctx.database, workspace_id, box_for(ctx.settings.secret_key.get_secret_value()))


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
