"""The channel adapter protocol: every channel package provides one ``Channel``.

Inbound, a channel turns its provider's payload into ``ingest.InboundMessage``; outbound,
``send()`` hands one message to the provider and says, by the error it raises, whether a
failure is worth retrying.
"""

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from rapport.channels.models import Inbox
from rapport.conversations.models import Conversation, Message
from rapport.customers.models import Customer, Identity

if TYPE_CHECKING:
    from rapport.ingest import InboundMessage


class DeliveryError(Exception):
    """A send that failed. ``permanent`` failures are not retried (bad number, blocked...)."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


@dataclass(frozen=True)
class Outbound:
    """Everything a channel needs to send one message, read before the call is made."""

    inbox: Inbox
    secrets: dict[str, Any]
    message: Message
    conversation: Conversation
    customer: Customer
    identities: list[Identity]
    public_url: str
    # Provider ids of the conversation's earlier messages, oldest first (email threading).
    thread_refs: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SendResult:
    external_id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WebhookRequest:
    """A provider's webhook call as the channel needs it: the raw body for signatures, and
    the URL the provider signed (the public URL, not whatever proxy forwarded it)."""

    body: bytes
    headers: dict[str, str]
    url: str
    form: dict[str, str] = field(default_factory=dict)


@dataclass
class WebhookEvents:
    messages: list["InboundMessage"] = field(default_factory=list)
    # {"external_id", "status": sent/delivered/read/failed, "error"}
    statuses: list[dict[str, Any]] = field(default_factory=list)


class WebhookChannel(Protocol):
    """A channel that receives by webhook: it checks the provider's signature, then parses."""

    def verify(self, *, secrets: dict[str, Any], request: WebhookRequest) -> bool: ...

    def parse(self, request: WebhookRequest, *, inbox_id: str) -> WebhookEvents: ...


class Channel(Protocol):
    name: str
    # Names of inbox settings that are credentials: stored encrypted, never shown back.
    secret_fields: frozenset[str]

    def send(self, out: Outbound) -> SendResult: ...


_CHANNELS: dict[str, Channel] = {}
# Channel packages; importing one registers it.
PACKAGES = (
    "rapport.channels.api",
    "rapport.channels.email",
    "rapport.channels.whatsapp",
    "rapport.channels.meta",
    "rapport.channels.telegram",
    "rapport.channels.twilio",
    "rapport.channels.webchat",
)
_loaded = False


def register(channel: Channel) -> Channel:
    _CHANNELS[channel.name] = channel
    return channel


def _load() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in PACKAGES:
            importlib.import_module(module)


def get(name: str) -> Channel | None:
    _load()
    return _CHANNELS.get(name)


def names() -> list[str]:
    _load()
    return sorted(_CHANNELS)
