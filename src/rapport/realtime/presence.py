"""Who has a conversation open, who is typing in it: said to the workspace's other agents
on that conversation and never stored (collision notice).

An agent's page says it over its socket (``Presence``, one per socket); a page whose socket
cannot open says it by request (``POST /api/v1/conversations/{id}/viewing`` and
``/typing``). Either way it goes through the bus, to every process's sockets.
"""

import time
from typing import Any

from sqlalchemy.orm import Session

from rapport.auth.models import Role
from rapport.auth.ratelimit import RateLimiter
from rapport.auth.service import Principal
from rapport.bus import Event, get_bus
from rapport.conversations import service as conversations
from rapport.conversations.models import Conversation
from rapport.db import Database, utcnow
from rapport.problems import Problem

VIEWING = "agent.viewing"
TYPING = "agent.typing"
LEFT = "agent.left"  # the page that had it open is gone: its viewer goes from the notice
# What is said of one conversation, to the sockets of the agents on it.
ABOUT_ONE = frozenset({VIEWING, TYPING, LEFT, "visitor.typing"})

# What one socket may say: BURST at once, then PER_SECOND (a page says it is viewing every
# 15 s and on each colleague's arrival, typing every 3 s at most); the rest is dropped.
BURST = 10
PER_SECOND = 1.0
# What one member may say by request (a page whose socket cannot open), from all their
# tabs and in every process: each request is told to every agent's socket in the
# workspace, and one client could flood them all. A page says it is viewing every 15 s and
# typing every 3 s at most: REQUESTS a REQUEST_WINDOW leaves room for a few tabs at once.
REQUESTS = 60
REQUEST_WINDOW = 60
# The conversations one socket keeps looked up (a page says things of one).
KNOWN_MAX = 50
KNOWN_SECONDS = 60.0


def _said(workspace_id: str, type: str, payload: dict[str, Any]) -> Event:
    return {
        "id": 0,  # no id: never stored, never replayed
        "workspace_id": workspace_id,
        "type": type,
        "payload": payload,
        "created_at": utcnow().isoformat(),
    }


def requests_limiter(redis_url: str | None) -> RateLimiter:
    """The members' budget of viewing and typing requests: in Redis when it is configured
    (counted across processes, as the login limiter counts), else in this process."""
    return RateLimiter(limit=REQUESTS, window=REQUEST_WINDOW, redis_url=redis_url)


def spend_request(limiter: RateLimiter, principal: Principal) -> None:
    """Count one viewing or typing request of this member; TooMany once theirs are spent."""
    _spend(limiter, f"presence:{principal.workspace_id}:{principal.user_id}")


def _spend(limiter: RateLimiter, key: str) -> None:
    limiter.spend(key, "too many viewing or typing notices")


def viewing(*, conversation: Conversation, user_id: str, name: str) -> None:
    """Tell the other agents that this one has the conversation open (not stored)."""
    get_bus().publish(
        _said(
            conversation.workspace_id,
            VIEWING,
            {"conversation_id": conversation.id, "user_id": user_id, "name": name},
        )
    )


def left(*, workspace_id: str, conversation_id: str, user_id: str) -> None:
    """Tell the other agents that this one's page on the conversation is gone."""
    get_bus().publish(
        _said(workspace_id, LEFT, {"conversation_id": conversation_id, "user_id": user_id})
    )


class Presence:
    """What one agent's socket says of the conversation its page shows, and which of the
    workspace's passing events it is sent: those of that conversation alone, once it said
    which (a socket that never says gets them all, as an API client's did)."""

    def __init__(self, principal: Principal) -> None:
        self.principal = principal
        self.conversation_id: str | None = None
        # Looked up a while (a merge may move it to another customer meanwhile).
        self._known: dict[str, tuple[Conversation, float]] = {}
        self._tokens = float(BURST)
        self._at = time.monotonic()

    def allowed(self) -> bool:
        """Whether the socket may say one more thing now (a token bucket)."""
        now = time.monotonic()
        self._tokens = min(BURST, self._tokens + (now - self._at) * PER_SECOND)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def wants(self, event: Event) -> bool:
        """Whether a passing event of its workspace goes to this socket: never what its own
        member said (this page's, or another of theirs)."""
        if event["type"] not in ABOUT_ONE:
            return True
        said = event["payload"]
        if said.get("user_id") == self.principal.user_id:
            return False
        return self.conversation_id is None or said.get("conversation_id") == self.conversation_id

    def hear(self, database: Database, message: Any) -> None:
        """Act on what the page said (a thread's work: it reads and publishes): ``viewing``
        or ``typing`` with a ``conversation_id`` of its workspace; anything else, another
        workspace's conversation, typing by a viewer, or too much at once is ignored."""
        if not isinstance(message, dict) or message.get("type") not in ("viewing", "typing"):
            return
        conversation_id = message.get("conversation_id")
        if not isinstance(conversation_id, str) or not 0 < len(conversation_id) <= 32:
            return
        typing = message["type"] == "typing"
        if typing and not self.principal.has(Role.agent):
            return  # a viewer reads along; only who may reply is said to be typing
        if not self.allowed():
            return
        conversation = self._conversation(database, conversation_id)
        if conversation is None:
            return
        if typing:
            conversations.typing(conversation=conversation, user_id=self.principal.user_id)
            return
        if self.conversation_id not in (None, conversation_id):
            self.leave()
        self.conversation_id = conversation_id
        viewing(
            conversation=conversation,
            user_id=self.principal.user_id,
            name=self.principal.name,
        )

    def leave(self) -> None:
        """The page is gone (its socket closed): its viewer goes from the others' notice."""
        if self.conversation_id is not None:
            left(
                workspace_id=self.principal.workspace_id,
                conversation_id=self.conversation_id,
                user_id=self.principal.user_id,
            )
            self.conversation_id = None

    def _conversation(self, database: Database, conversation_id: str) -> Conversation | None:
        known, until = self._known.get(conversation_id, (None, 0.0))
        if known is not None and until > time.monotonic():
            return known
        with database.session(write=False) as db:
            found = _in_workspace(db, self.principal.workspace_id, conversation_id)
        if found is not None:
            if len(self._known) >= KNOWN_MAX:
                self._known.clear()
            self._known[conversation_id] = (found, time.monotonic() + KNOWN_SECONDS)
        return found


def _in_workspace(db: Session, workspace_id: str, conversation_id: str) -> Conversation | None:
    try:
        conversation = conversations.get(
            db, workspace_id=workspace_id, conversation_id=conversation_id
        )
    except Problem:  # not found, in this workspace
        return None
    db.expunge(conversation)
    return conversation
