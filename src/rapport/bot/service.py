"""The bot in front of an inbox: answer, ask one clarifying question, or hand over.

For each customer message on an inbox whose bot is enabled (``inbox.settings["bot"]``),
the ``bot_reply`` job decides, in this order:

1. The conversation is already with a human (handed over, or an agent assigned or answered
   since the bot took it): stay quiet. Resolving a conversation gives it back to the bot:
   when the customer writes again (reopening it), the bot answers first, and a new
   hand-over goes to the agent still assigned, if any.
2. The customer asks for a person ("I want a person", "parler à un conseiller"...), or is
   clearly upset (triage sentiment), or the bot already missed twice: hand over.
3. An intent of the workspace's classifier is confident: its reply, rendered in the
   sandbox; when the intent has an HTTP integration, the reply is rendered from the
   integration's JSON (called signed, with the customer's identifiers).
4. A help-center article matches well: its excerpt and link.
5. Two intents are close: ask which one the customer means (a miss if asked again).
6. Otherwise: hand over.

Handing over assigns the conversation through routing (to the configured team), leaves a
private note with what the customer asked and what the bot tried, tells the customer, and
records the question for the knowledge-base team. Every bot message is a ``bot`` message
whose ``meta["bot"]`` says why it answered (intent or article, and the confidence).
"""

import hashlib
import hmac
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from sqlalchemy import select
from sqlalchemy.orm import Session

from rapport import outbound, templating
from rapport.assistant.classify import TextClassifier
from rapport.assistant.training import learn
from rapport.auth.models import Team
from rapport.bot.models import (
    BotConversation,
    Integration,
    Intent,
    IntentExample,
    IntentModelBlob,
    UnansweredQuestion,
)
from rapport.channels.models import Inbox
from rapport.conversations import routing, sla
from rapport.conversations import service as conversations
from rapport.conversations.models import Conversation, Direction, Message, MessageKind, Status
from rapport.crypto import SecretBox, box_for
from rapport.customers.models import Customer
from rapport.db import Database, utcnow
from rapport.jobs.registry import JobContext, job
from rapport.kb import search as kb_search
from rapport.problems import Unsendable

DEFAULTS: dict[str, Any] = {
    "enabled": False,
    "answer_threshold": 0.55,  # intent confidence needed to answer with it
    "article_threshold": 0.6,  # article confidence needed to answer with it
    "clarify_margin": 0.2,  # two intents this close: ask which one
    # The share of the message's content words one of the intent's examples must share.
    "example_support": 0.25,
    "handover_team_id": None,
    "handover_message": "Let me bring in a colleague who can help; they will reply here.",
    "negative_sentiment": -0.6,  # this upset: a person answers
}

# "a live agent", "a real human", "an actual person": the noun may come with one of these.
_REAL = r"(?:(?:live|real|actual|human)\s+)?"
_HUMAN = re.compile(
    r"\b(?:talk|speak|chat|connect|transfer|put)\s+(?:me\s+)?(?:to|with|through to)\s+"
    r"(?:a|an|some|the|your)?\s*" + _REAL + r"(?:human|person|agent|someone|somebody|operator|"
    r"representative|manager|being)\b"
    r"|\b(?:want|need|get)\s+(?:(?:a|an|to speak to an?|to talk to an?)\s+)?"
    + _REAL
    + r"(?:human|person|agent|operator|representative)\b"
    r"|\b(?:human|agent|operator|representative|person)\s*(?:please|pls|now)\b"
    r"|^\s*(?:human|agent|operator|representative)\s*[.!?]*\s*$"
    r"|\bparler\s+(?:à|a|avec)\s+(?:(?:un|une)\s+(?:vrai\w*\s+)?"
    r"(?:humain|conseill\w*|personne|agent)|quelqu\S*un)"
    r"|\b(?:mit\s+einem?\s+)?(?:menschen|mitarbeiter\w*)\s+sprechen\b"
    r"|\bhablar\s+con\s+(?:una\s+persona|un\s+agente|un\s+humano|alguien)\b",
    re.IGNORECASE,
)
_ORDER_NUMBER = re.compile(r"#?\b(\d{3,12})\b")
log = logging.getLogger(__name__)


def settings_of(inbox: Inbox | None) -> dict[str, Any]:
    configured = ((inbox.settings or {}).get("bot") if inbox else None) or {}
    return {**DEFAULTS, **configured}


def switched_on(db: Session, *, inbox: Inbox) -> int:
    """The bot was put in front of ``inbox``: the conversations already waiting there (which
    it never saw) are left to routing, as handed over, instead of waiting for the bot's
    hand-over that never comes; how many."""
    from rapport.conversations import routing  # routing asks this module whether bots hold

    waiting = list(
        db.scalars(
            select(Conversation.id).where(
                Conversation.inbox_id == inbox.id,
                Conversation.status == Status.open,
                Conversation.assignee_id.is_(None),
                ~select(BotConversation.conversation_id)
                .where(BotConversation.conversation_id == Conversation.id)
                .exists(),
            )
        )
    )
    now = utcnow()
    for conversation_id in waiting:
        db.add(
            BotConversation(
                conversation_id=conversation_id,
                workspace_id=inbox.workspace_id,
                handed_over_at=now,
            )
        )
    if waiting:
        routing.wake(db, workspace_id=inbox.workspace_id)
    return len(waiting)


def enabled(inbox: Inbox | None) -> bool:
    return bool(settings_of(inbox)["enabled"])


def asks_for_a_person(text: str) -> bool:
    return bool(_HUMAN.search(text))


# --- intents ---------------------------------------------------------------------------


def train(database: Database, *, workspace_id: str, box: SecretBox) -> int:
    """Train the workspace's intent classifier from its examples; returns the count used.

    The fit runs with no transaction open (``training.learn``): minutes for a large
    workspace with the ai extra, while the inbox goes on."""

    def read(db: Session) -> list[tuple[str, str]]:
        return [
            (text, name)
            for text, name in db.execute(
                select(IntentExample.text, Intent.name)
                .join(Intent, Intent.id == IntentExample.intent_id)
                .where(IntentExample.workspace_id == workspace_id)
                # A fixed order: the same examples always train the same model.
                .order_by(Intent.name, IntentExample.text)
            )
        ]

    def fit(rows: list[tuple[str, str]]) -> tuple[TextClassifier, int] | None:
        labels = [name for _, name in rows]
        if len(set(labels)) < 2:
            return None
        return TextClassifier().fit([text for text, _ in rows], labels), len(rows)

    def store(db: Session, fitted: tuple[TextClassifier, int] | None) -> int:
        existing = db.get(IntentModelBlob, workspace_id)
        if fitted is None:
            if existing is not None:
                db.delete(existing)
            return 0
        model, count = fitted
        if existing is None:
            existing = IntentModelBlob(workspace_id=workspace_id, model=b"")
            db.add(existing)
        existing.model, existing.examples, existing.trained_at = model.dumps(box), count, utcnow()
        return count

    count = learn(database, workspace_id, read=read, fit=fit, store=store)
    _models.pop(workspace_id, None)
    return count


@dataclass
class _Trained:
    """A workspace's classifier with its examples' words, to check that a message resembles
    what an intent was taught: a handful of examples makes any classifier overconfident,
    and "Do you sponsor chess tournaments?" must not become "opening hours" for want of
    another choice."""

    stamp: str
    model: TextClassifier
    examples: list[tuple[frozenset[str], str]]

    def support(self, text: str, label: str) -> float:
        """The largest share of the message's content words found in one example of
        ``label`` (stemmed, function words left out)."""
        words = set(kb_search.terms(text))
        if not words:
            return 0.0
        return max(
            (len(words & example) / len(words) for example, name in self.examples if name == label),
            default=0.0,
        )


_models: dict[str, _Trained] = {}


def _classifier(db: Session, workspace_id: str, box: SecretBox) -> _Trained | None:
    row = db.get(IntentModelBlob, workspace_id)
    if row is None:
        return None
    stamp = row.trained_at.isoformat()
    cached = _models.get(workspace_id)
    if cached is None or cached.stamp != stamp:
        model = TextClassifier.trusted(row.model, box, kind="bot", workspace_id=workspace_id)
        if model is None:
            return None
        examples = db.execute(
            select(IntentExample.text, Intent.name)
            .join(Intent, Intent.id == IntentExample.intent_id)
            .where(IntentExample.workspace_id == workspace_id)
        ).all()
        cached = _Trained(
            stamp, model, [(frozenset(kb_search.terms(t)), name) for t, name in examples]
        )
        _models[workspace_id] = cached
    return cached


# --- deciding --------------------------------------------------------------------------


@dataclass
class Decision:
    kind: str  # skip / answer / clarify / handover
    text: str = ""
    reason: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    integration: Integration | None = None
    intent: Intent | None = None


def with_a_human(db: Session, conversation: Conversation, state: BotConversation | None) -> bool:
    """Whether a person has the conversation: the bot handed it over, or an agent was
    assigned or answered since the bot took it (an assignee from before a resolve is not)."""
    if state is not None and state.handed_over_at is not None:
        return True
    since = state.held_since if state is not None else None
    if conversation.assignee_id is not None and (
        since is None or conversation.assigned_at is None or conversation.assigned_at >= since
    ):
        return True
    answered = select(Message.id).where(
        Message.conversation_id == conversation.id,
        Message.direction == Direction.outbound,
        Message.kind == MessageKind.message,
        Message.sender_type == "user",
    )
    if since is not None:
        answered = answered.where(Message.created_at >= since)
    return db.scalar(answered.limit(1)) is not None


def on_resolved(db: Session, *, conversation: Conversation) -> None:
    """Resolved: the customer's next message in this conversation is the bot's again."""
    state = db.get(BotConversation, conversation.id)
    if state is None:
        if not enabled(db.get(Inbox, conversation.inbox_id)):
            return
        state = BotConversation(
            conversation_id=conversation.id, workspace_id=conversation.workspace_id, log=[]
        )
        db.add(state)
    state.handed_over_at, state.failures, state.log = None, 0, []
    state.held_since = utcnow()


def decide(
    db: Session,
    *,
    message: Message,
    conversation: Conversation,
    inbox: Inbox,
    state: BotConversation | None,
    base_url: str,
    box: SecretBox,
) -> Decision:
    config = settings_of(inbox)
    if with_a_human(db, conversation, state):
        return Decision("skip", reason="with a human")
    text = message.text.strip()
    if not text:
        # A photo or a file alone: a person looks (skipped, it was left to the bot, which
        # routing leaves alone, and nobody ever saw it).
        return Decision("handover", reason="the message has no text to read (a file or a photo)")
    if asks_for_a_person(text):
        return Decision("handover", reason="the customer asked for a person")
    triage = (message.meta or {}).get("triage") or {}
    score = triage.get("sentiment_score")
    if triage.get("sentiment") == "negative" and score is not None:
        if float(score) <= float(config["negative_sentiment"]):
            return Decision("handover", reason="the customer is upset")
    if state and state.failures >= 2:
        return Decision("handover", reason="the bot missed twice")
    trained = _classifier(db, conversation.workspace_id, box)
    prediction = trained.model.predict([text])[0] if trained is not None else None
    support = trained.support(text, prediction.label) if trained and prediction else 0.0
    if prediction and not prediction.out_of_scope and support >= float(config["example_support"]):
        if prediction.confidence >= float(config["answer_threshold"]):
            intent = db.scalar(
                select(Intent).where(
                    Intent.workspace_id == conversation.workspace_id,
                    Intent.name == prediction.label,
                )
            )
            if intent is not None:
                meta = {
                    "source": "intent",
                    "intent": intent.name,
                    "confidence": round(prediction.confidence, 3),
                    "support": round(support, 3),
                }
                integration = (
                    db.get(Integration, intent.integration_id) if intent.integration_id else None
                )
                return Decision("answer", meta=meta, integration=integration, intent=intent)
    hits = kb_search.search_articles(
        db, conversation.workspace_id, text, limit=3, base_url=base_url
    )
    if hits and hits[0].confidence >= float(config["article_threshold"]):
        best = hits[0]
        answer = f"{best.excerpt}\n\n{best.title}: {best.url}" if best.url else best.excerpt
        return Decision(
            "answer",
            text=answer,
            meta={
                "source": "article",
                "article_id": best.article_id,
                "title": best.title,
                "confidence": best.confidence,
            },
        )
    if (
        prediction
        and support >= float(config["example_support"])
        and len(prediction.alternatives) >= 2
    ):
        (first, p1), (second, p2) = prediction.alternatives[:2]
        if p1 - p2 <= float(config["clarify_margin"]) and p1 + p2 >= 0.5:
            return Decision(
                "clarify",
                text=f"Just to be sure: is this about {_readable(first)} or {_readable(second)}?",
                meta={"source": "clarify", "options": [first, second], "confidence": round(p1, 3)},
            )
    tried = []
    if prediction:
        tried.append(f"intent {prediction.label} ({prediction.confidence:.2f})")
    if hits:
        tried.append(f"article “{hits[0].title}” ({hits[0].confidence:.2f})")
    return Decision("handover", reason="no confident answer", meta={"tried": tried})


def _readable(name: str) -> str:
    return name.replace("_", " ").replace("-", " ")


def _context(customer: Customer | None, text: str) -> dict[str, Any]:
    first = (customer.name.split() or [""])[0] if customer and customer.name else ""
    number = _ORDER_NUMBER.search(text)
    return {
        "customer": {
            "id": customer.id if customer else "",
            "name": customer.name if customer else "",
            "first_name": first,
            "email": (customer.email or "") if customer else "",
            "phone": (customer.phone or "") if customer else "",
            "attributes": dict(customer.attributes) if customer else {},
        },
        "order_number": number.group(1) if number else "",
        "message": text,
    }


def _quoted(value: Any) -> Any:
    """The context with every string percent-encoded: safe to place in a URL."""
    if isinstance(value, dict):
        return {k: _quoted(v) for k, v in value.items()}
    if isinstance(value, str):
        return quote(value, safe="")
    return value


def sign(secret: str, timestamp: int, url: str) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.{url}".encode(), hashlib.sha256).hexdigest()
    return f"v1={mac}"


def call_integration(
    integration: Integration,
    box: SecretBox,
    context: dict[str, Any],
    *,
    allow_private: bool = False,
) -> dict[str, Any]:
    """GET the integration's URL (rendered in the sandbox), signed; its JSON object."""
    url = templating.render(integration.url, _quoted(context))
    timestamp = int(time.time())
    secret = box.decrypt(integration.secret_encrypted)
    response = outbound.request(
        "GET",
        url,
        allow_private=allow_private,
        headers={
            "Accept": "application/json",
            "User-Agent": "Rapport-Bot",
            "X-Rapport-Timestamp": str(timestamp),
            "X-Rapport-Signature": sign(secret, timestamp, url),
        },
        timeout=integration.timeout_seconds,
    )
    response.raise_for_status()
    data = response.json()
    if not isinstance(data, dict):
        raise ValueError("the integration did not answer a JSON object")
    return data


# --- acting ----------------------------------------------------------------------------


def handle(
    database: Database,
    *,
    message_id: str,
    box: SecretBox,
    base_url: str,
    allow_private: bool = False,
) -> str:
    """Decide (reading), call an integration if needed (no transaction open), then act
    (writing). Returns what the bot did."""
    with database.session(write=False) as db:
        message = db.get(Message, message_id)
        if message is None:
            return "skip"
        conversation = db.get(Conversation, message.conversation_id)
        inbox = db.get(Inbox, conversation.inbox_id) if conversation else None
        if conversation is None or inbox is None or not enabled(inbox):
            return "skip"
        state = db.get(BotConversation, conversation.id)
        decision = decide(
            db,
            message=message,
            conversation=conversation,
            inbox=inbox,
            state=state,
            base_url=base_url,
            box=box,
        )
        if decision.integration is not None and (
            refusal := conversations.reply_refusal(
                db, conversation=conversation, automatic=True, hold=False
            )
        ):
            # The answer could not go (an SMS STOP, another page's id): the integration is
            # an outside call, with its cost and side effects, for nothing. A person takes
            # over, as _act hands over any answer it cannot send. The cap is only counted
            # here, the customer's row not held: this reading session would keep it from a
            # merge and from their next message until it ends; _act counts again, held.
            decision = Decision("handover", reason=refusal.why, meta=decision.meta)
        customer = db.get(Customer, conversation.customer_id)
        context = _context(customer, message.text)
        db.expunge_all()
    if decision.kind == "answer" and decision.intent is not None:
        try:
            if decision.integration is not None:
                context["data"] = call_integration(
                    decision.integration, box, context, allow_private=allow_private
                )
                decision.meta["integration"] = decision.integration.name
            decision.text = templating.render(decision.intent.reply, context)
        except Exception as exc:  # an integration down or a template error: a person helps
            decision = Decision(
                "handover",
                reason=f"the {decision.meta.get('integration', 'intent')} lookup failed "
                f"({type(exc).__name__})",
                meta={"tried": [f"intent {decision.meta.get('intent')}"]},
            )
    if decision.kind == "answer" and not decision.text.strip():
        # Nothing to send (a reply that renders blank, {{ customer.attributes.get('vip', '') }}):
        # the customer would get no answer and, the bot holding the conversation, no person.
        meta = decision.meta
        tried = f"intent {meta['intent']}" if "intent" in meta else f"article “{meta.get('title')}”"
        decision = Decision("handover", reason="the answer was empty", meta={"tried": [tried]})
    with database.session() as db:
        return _act(db, message_id=message_id, decision=decision)


def _act(db: Session, *, message_id: str, decision: Decision) -> str:
    message = db.get(Message, message_id)
    assert message is not None
    conversation = db.get(Conversation, message.conversation_id)
    assert conversation is not None
    if decision.kind == "skip":
        return "skip"
    state = db.get(BotConversation, conversation.id)
    # Asked again in the writing transaction: an agent may have taken it meanwhile.
    if with_a_human(db, conversation, state):
        return "skip"
    refusal = conversations.reply_refusal(db, conversation=conversation, automatic=True)
    if refusal is not None and decision.kind in ("answer", "clarify"):
        # The customer opted out of the channel (an SMS STOP), or their id is another
        # page's: the bot cannot answer there, a person can, through another channel; the
        # hand-over note says why (what it understood stays in its log).
        decision = Decision("handover", reason=refusal.why, meta=decision.meta)
    if state is None:
        state = BotConversation(
            conversation_id=conversation.id,
            workspace_id=conversation.workspace_id,
            log=[],
            held_since=message.created_at,
        )
        db.add(state)
    state.log = [
        *state.log[-9:],
        {"asked": message.text[:300], "did": decision.kind, **_brief(decision)},
    ]
    if decision.kind in ("answer", "clarify"):
        if decision.kind == "clarify":
            state.failures += 1
        bot_message = conversations.reply(
            db,
            conversation=conversation,
            author_id=None,
            text=decision.text,
            kind=MessageKind.bot,
        )
        bot_message.meta = {**(bot_message.meta or {}), "bot": decision.meta}
        return decision.kind
    _hand_over(
        db,
        conversation=conversation,
        state=state,
        message=message,
        decision=decision,
        refusal=refusal,
    )
    return "handover"


def _brief(decision: Decision) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if decision.reason:
        out["reason"] = decision.reason
    for key in ("intent", "title", "confidence", "tried", "options"):
        if key in decision.meta:
            out[key] = decision.meta[key]
    return out


def _hand_over(
    db: Session,
    *,
    conversation: Conversation,
    state: BotConversation,
    message: Message,
    decision: Decision,
    refusal: Unsendable | None,
) -> None:
    inbox = db.get(Inbox, conversation.inbox_id)
    config = settings_of(inbox)
    state.handed_over_at = utcnow()
    lines = [f"Bot handed over: {decision.reason}."]
    if refusal is not None and decision.reason != refusal.why:
        lines.append(f"The customer was not told: {refusal.why}.")
    for entry in state.log:
        did = entry.get("did")
        detail = entry.get("intent") or entry.get("title") or ", ".join(entry.get("tried", []))
        lines.append(f"• Customer: “{entry['asked']}” → {did}" + (f" ({detail})" if detail else ""))
    # The customer's words quoted mention nobody: "@bob" in a question pings no one.
    conversations.note(
        db, conversation=conversation, author_id=None, text="\n".join(lines), mentioning=""
    )
    if decision.reason in ("no confident answer",) or decision.reason.startswith("the bot missed"):
        db.add(
            UnansweredQuestion(
                workspace_id=conversation.workspace_id,
                conversation_id=conversation.id,
                text=message.text[:2000],
                reason=decision.reason,
            )
        )
    if refusal is None:
        reply = conversations.reply(
            db,
            conversation=conversation,
            author_id=None,
            text=str(config["handover_message"]),
            kind=MessageKind.bot,
        )
        reply.meta = {
            **(reply.meta or {}),
            "bot": {"source": "handover", "reason": decision.reason},
        }
    # Telling the customer a person comes is not an answer: they still wait for one (since
    # their first question no person answered, which a bot message never clears).
    conversation.waiting_since = conversation.waiting_since or message.created_at
    handover_team_id = config.get("handover_team_id")
    if handover_team_id and not db.scalar(
        select(Team.id).where(
            Team.id == handover_team_id, Team.workspace_id == conversation.workspace_id
        )
    ):
        # Deleted since the bot was set up (its settings still name it): hand over as if
        # none were set, rather than fail and leave the customer with nobody.
        log.warning(
            "bot hand-over team not found",
            extra={
                "event": "bot.handover_team_missing",
                "workspace_id": conversation.workspace_id,
                "conversation_id": conversation.id,
                "team_id": handover_team_id,
            },
        )
        handover_team_id = None
    team_id = handover_team_id or conversation.team_id or (inbox.team_id if inbox else None)
    if team_id and conversation.team_id != team_id:
        conversations.assign(
            db,
            conversation=conversation,
            assignee_id=None,
            team_id=team_id,
            actor_id=None,
            via="the bot",
        )
    # Set aside meanwhile (pending, snoozed, even resolved before the bot's job ran): open
    # again as any status change is made, so the SLA resolution clock runs again now and
    # the change is recorded (an activity line by the bot, the event, the rules).
    was_open = conversation.status == Status.open
    conversations.set_status(db, conversation=conversation, status=Status.open, by_bot=True)
    # Routed once: a conversation set_status opened again is back in the queue, whose pass
    # it queued (and that pass takes it, handed over); one open already wakes the same
    # pass, which this transaction queues once whatever else woke it.
    if was_open and conversation.assignee_id is None and inbox is not None and inbox.auto_assign:
        routing.wake(db, workspace_id=conversation.workspace_id)


def rate(db: Session, *, message: Message, helpful: bool) -> None:
    """A customer's verdict on a bot answer: an unhelpful one counts as a miss; a helpful
    answer (from an intent or an article) ends the customer's wait for a person."""
    previous = (message.meta or {}).get("rating")
    message.meta = {
        **(message.meta or {}),
        "rating": {"helpful": helpful, "at": utcnow().isoformat()},
    }
    if not helpful and (previous is None or previous.get("helpful")):
        missed = db.get(BotConversation, message.conversation_id)
        if missed is not None:
            missed.failures += 1
    answered = ((message.meta or {}).get("bot") or {}).get("source") in ("intent", "article")
    conversation = db.get(Conversation, message.conversation_id)
    state = db.get(BotConversation, message.conversation_id)
    if state is not None and state.handed_over_at is not None:
        # The customer asked for a person (or the bot handed over) after that answer, or
        # in the same breath: they wait for them, whatever they think of the answer.
        answered = False
    if helpful and answered and conversation is not None and conversation.status != Status.resolved:
        asked_since = db.scalar(
            select(Message.id)
            .where(
                Message.conversation_id == conversation.id,
                Message.direction == Direction.inbound,
                Message.kind == MessageKind.message,
                Message.created_at > message.created_at,
            )
            .limit(1)
        )
        if asked_since is None:
            # The bot's answer resolved the question: the customer no longer waits for a
            # person, and the response clocks stop as for an agent's reply. It is still no
            # human first response (``first_response_at`` stays empty).
            conversation.waiting_since = None
            sla.on_agent_reply(db, conversation=conversation)


@job("bot_reply", max_attempts=3)
def bot_reply(ctx: JobContext, message_id: str) -> None:
    box = box_for(ctx.settings.secret_key.get_secret_value())
    handle(
        ctx.database,
        message_id=message_id,
        box=box,
        base_url=ctx.settings.public_url,
        allow_private=ctx.settings.outbound_private_ok,
    )


@job("bot_train", max_attempts=3)
def bot_train(ctx: JobContext, workspace_id: str) -> None:
    train(
        ctx.database,
        workspace_id=workspace_id,
        box=box_for(ctx.settings.secret_key.get_secret_value()),
    )
