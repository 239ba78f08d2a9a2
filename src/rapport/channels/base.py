"""The channel adapter protocol: every channel package provides one ``Channel``.

Inbound, a channel turns its provider's payload into ``ingest.InboundMessage``; outbound,
``send()`` hands one message to the provider and says, by the error it raises, whether a
failure is worth retrying.
"""

import importlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy.orm import Session

from rapport.channels.models import Inbox
from rapport.conversations.models import Conversation, Message
from rapport.customers import identity
from rapport.customers.models import ConsentChannel, Customer, Identity, IdentityKind

if TYPE_CHECKING:
    from rapport.ingest import InboundMessage


class DeliveryError(Exception):
    """A send that failed. ``permanent`` failures are not retried (bad number, blocked...).

    ``opted_out`` names the provider's own record of an opt-out the customer made there,
    which Rapport may not have seen (Twilio's 21610: a STOP to the number, perhaps
    through another tool): the channel is then withdrawn in the customer's consents.

    ``account`` says the provider refused the inbox's own credentials (an expired token,
    a wrong password), not this one message: every send through the inbox will fail
    alike, and its health says it is failing at once (``channels.health``)."""

    def __init__(
        self,
        reason: str,
        *,
        permanent: bool = False,
        opted_out: str | None = None,
        account: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent or opted_out is not None
        self.opted_out = opted_out
        self.account = account


class NoRecipient(DeliveryError):
    """A send with nobody to go to: the customer has no address this channel sends to
    (said as an agent reads it). Permanent: another attempt finds nobody either."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, permanent=True)


@dataclass(frozen=True)
class OutboundFile:
    """A file going out with a message: providers fetch it from ``url`` (signed, expiring,
    serving this file only); channels that carry the bytes themselves (email) ``read()``."""

    id: str
    filename: str
    content_type: str
    size: int
    url: str
    read: Callable[[], bytes]

    @property
    def is_image(self) -> bool:
        return self.content_type in ("image/jpeg", "image/png")

    def data(self) -> bytes:
        """The file's bytes, for channels that carry them; a clear error when they are gone."""
        try:
            return self.read()
        except OSError as exc:
            raise DeliveryError(f"the file {self.filename} cannot be read") from exc


@dataclass(frozen=True)
class Addressee:
    """Whom a message through ``inbox`` is for: the customer, with every handle of theirs.
    What a channel's ``recipient`` reads: at a send, and before a conversation is started."""

    inbox: Inbox
    customer: Customer
    identities: list[Identity]

    def handle(self, kind: IdentityKind) -> str | None:
        """The customer's handle of this kind to send to, the same rule for every channel
        (``identity.recipient``): their newest, never whichever happened to load first, and
        for a Messenger or Instagram id, only one this inbox's page issued. A conversation
        does not record the handle it came from, so that cannot be preferred."""
        found = identity.recipient(self.identities, kind, inbox_id=self.inbox.id)
        return found.value if found is not None else None


@dataclass(frozen=True)
class Outbound(Addressee):
    """Everything a channel needs to send one message, read before the call is made."""

    secrets: dict[str, Any]
    message: Message
    conversation: Conversation
    public_url: str
    # Provider ids of the conversation's earlier messages, oldest first (email threading).
    thread_refs: list[str] = field(default_factory=list)
    # The meta of the customer's latest message in the conversation through this inbox:
    # where they last wrote from (a Telegram group), for channels that answer there.
    last_inbound: dict[str, Any] = field(default_factory=dict)
    files: list[OutboundFile] = field(default_factory=list)
    # Parts of this message (its text, each file) a provider already accepted in an earlier
    # attempt, with the provider's id for each: a retry sends only the rest.
    parts_sent: dict[str, str] = field(default_factory=dict)
    record_part: Callable[[str, str], None] | None = None
    # Whether URLs an admin set may point into our own network (RAPPORT_OUTBOUND_PRIVATE_OK):
    # calls to them go through ``rapport.outbound.request``.
    allow_private: bool = False
    # When the customer last wrote through the inbox (any of their conversations), for a
    # channel with a reply window (``check_reply``: Meta's); None otherwise.
    window_opened_at: datetime | None = None


def timestamp(value: Any, *, millis: bool = False) -> datetime | None:
    """A provider's Unix time (seconds, or ``millis``), or None when it cannot be one: not a
    whole number, not after 1970, past what a datetime holds. Read as absent (the receipt
    time stands): raised, it failed a correctly signed call with a 500, which the provider
    sends again, failing the same way, for days."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    try:
        number = int(value)
        return (
            datetime.fromtimestamp(number / 1000 if millis else number, UTC) if number > 0 else None
        )
    except (ValueError, OverflowError, OSError):
        return None


def send_parts(out: Outbound, parts: list[tuple[str, str, Callable[[], str | None]]]) -> list[str]:
    """Send a message that a provider takes as several calls (text, then each file), each
    part once across retries. ``parts`` are (key, what it is for an error, send); returns
    the provider's ids in order. A failure names the part that failed."""
    if not parts:
        raise DeliveryError("the message has neither text nor files", permanent=True)
    ids = []
    for key, what, send in parts:
        done = out.parts_sent.get(key)
        if done is None:
            try:
                done = send() or ""
            except DeliveryError as exc:
                sent = sum(1 for k, _, _ in parts if k in out.parts_sent)
                prefix = f"{what}: " if len(parts) > 1 or key.startswith("file:") else ""
                note = f" ({sent} of {len(parts)} parts already sent)" if sent else ""
                raise DeliveryError(
                    f"{prefix}{exc.reason}{note}",
                    permanent=exc.permanent,
                    opted_out=exc.opted_out,
                    account=exc.account,
                ) from exc
            out.parts_sent[key] = done
            if out.record_part is not None:
                out.record_part(key, done)
        ids.append(done)
    return ids


def parts_meta(ids: list[str]) -> dict[str, Any]:
    """What a message sent as several provider messages records of them."""
    return {"message_ids": ids} if len(ids) > 1 else {}


def utf16_units(text: str) -> int:
    """A text's length as most providers count it (an emoji is two)."""
    return len(text.encode("utf-16-le")) // 2


def utf8_bytes(text: str) -> int:
    return len(text.encode())


def text_pieces(text: str, limit: int, size: Callable[[str], int] = utf16_units) -> list[str]:
    """``text`` as the messages a provider that takes at most ``limit`` (as ``size``
    counts) in one needs: cut where a reader would, after the last line break or else the
    last space of the second half of a piece (a longer word is cut where it must be)."""
    pieces: list[str] = []
    rest = text
    while size(rest) > limit:
        end = used = 0
        for ch in rest:
            used += size(ch)
            if used > limit:
                break
            end += 1
        end = max(end, 1)
        cut = next(
            (i + 1 for sep in ("\n", " ") if (i := rest.rfind(sep, end // 2, end)) >= 0), end
        )
        pieces.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    pieces.append(rest)
    return [p for p in pieces if p.strip()]


def file_parts(
    out: Outbound,
    text: Callable[[str], str | None] | None,
    send_file: Callable[[OutboundFile], str | None],
    *,
    limit: int | None = None,
    size: Callable[[str], int] = utf16_units,
) -> list[tuple[str, str, Callable[[], str | None]]]:
    """The parts of a reply for channels that send text and files separately: the text
    first (when there is any; as several messages when it is longer than the provider's
    ``limit`` for one), then each file in the agent's order."""
    parts: list[tuple[str, str, Callable[[], str | None]]] = []
    if text is not None and out.message.text.strip():
        given = out.message.text
        pieces = text_pieces(given, limit, size) if limit is not None else [given]
        for n, piece in enumerate(pieces):
            # The first keeps the key of a text sent whole: what a retry knows stays known.
            key = "text" if n == 0 else f"text:{n + 1}"
            what = "the text" if len(pieces) == 1 else f"part {n + 1} of the text"
            parts.append((key, what, lambda piece=piece: text(piece)))  # type: ignore[misc]
    for f in out.files:
        parts.append((f"file:{f.id}", f"the file {f.filename}", lambda f=f: send_file(f)))  # type: ignore[misc]
    return parts


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
    # Every (name, value) of a form body, in order: a name may come more than once.
    pairs: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class WebhookEvents:
    messages: list["InboundMessage"] = field(default_factory=list)
    # {"external_id", "status": sent/delivered/read/failed, "error", and optionally "at":
    # when the provider says the status came about (ISO time), for a provider that says;
    # with no offset, its wall clock in a zone it does not say (Twilio's carriers')}
    statuses: list[dict[str, Any]] = field(default_factory=list)
    # Messages the business sent a customer itself, by the provider's own inbox or another
    # tool (Meta's ``is_echo``): {"external_id", "kind" and "handle" (the customer it went
    # to), "text", "sent_at" (ISO time or None), "meta", "ours": the id of the Rapport
    # message it echoes when the provider says so (Messenger's metadata), else None, and
    # "marks_ours": whether the provider would have said so (Instagram's echoes never do:
    # one of Rapport's is known by what it says, ``deliver.apply_echo``)}.
    echoes: list[dict[str, Any]] = field(default_factory=list)
    # What happened to a customer's thread at the provider, said by nobody (Meta's handover
    # protocol: another app took the thread, passed it back): {"external_id", "kind" and
    # "handle" (the customer), "text", "meta"}, a line in their latest conversation.
    activities: list[dict[str, Any]] = field(default_factory=list)
    # Items of the call that could not be read (the item as JSON text, the error): kept
    # raw and flagged, while the others of the same call go on.
    unparsed: list[tuple[str, str]] = field(default_factory=list)

    def each(self, items: Iterable[Any], read: Callable[[Any], None]) -> None:
        """``read`` each item on its own: one that fails is set aside, the rest go on."""
        for item in items:
            try:
                read(item)
            except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
                raw = json.dumps(item, default=str, ensure_ascii=False)
                self.unparsed.append((raw, f"{type(exc).__name__}: {exc}"[:1000]))


class WebhookChannel(Protocol):
    """A channel that receives by webhook: it checks the provider's signature, then parses."""

    def verify(self, *, secrets: dict[str, Any], request: WebhookRequest) -> bool: ...

    def parse(self, request: WebhookRequest, *, inbox: Inbox) -> WebhookEvents: ...


def secret(secrets: dict[str, Any], name: str) -> bytes | None:
    """A provider secret of the inbox as the key for a signature: only a non-empty text
    counts (anything else would be a key anyone can guess, such as ``"None"``)."""
    value = secrets.get(name)
    return value.encode() if isinstance(value, str) and value else None


@dataclass(frozen=True)
class Setting:
    """One setting of a channel's inboxes: what the settings page asks for under ``label``,
    and what the API takes under ``name`` (checked by ``channels.service.checked_settings``).

    ``kind`` is one of: ``text``, ``email``, ``url``, ``phone`` (one number, stored in
    E.164), ``phones`` (several, comma-separated), ``number`` (a whole number from ``low``
    to ``high``), ``flag`` (true or false), ``choice`` (one of ``choices``), ``list`` (of
    texts), ``inbox`` (the id of another inbox of the workspace, of the channel
    ``choices[0]``) and ``secret`` (a credential: stored encrypted, never shown back).
    ``default`` is what applies while it is not set; ``needed``, that the inbox cannot
    take in or send messages without it."""

    name: str
    label: str
    kind: str = "text"
    help: str = ""
    needed: bool = False
    choices: tuple[str, ...] = ()
    default: str | int | bool | None = None
    low: int | None = None
    high: int | None = None

    @property
    def secret(self) -> bool:
        return self.kind == "secret"


def secret_names(fields: Iterable[Setting]) -> frozenset[str]:
    """The names of the credentials among a channel's settings."""
    return frozenset(f.name for f in fields if f.secret)


def rate_setting(default: int) -> Setting:
    """How fast replies go out through one inbox (``deliver``'s limiter), for the channels
    whose provider caps a sender."""
    return Setting(
        "rate_per_second",
        "Messages per second",
        "number",
        "At most this many replies a second go out through this inbox (the provider's own "
        "limit for one sender, unless your account has another).",
        default=default,
        low=1,
        high=10_000,
    )


def api_base_setting(default: str) -> Setting:
    return Setting(
        "api_base_url",
        "API address",
        "url",
        "Only to reach the provider through a proxy or a stand-in.",
        default=default,
    )


class Channel(Protocol):
    """A channel may also declare ``recipient(to: Addressee) -> str``: the address its
    ``send`` goes to, raising ``NoRecipient`` when the customer has none (a channel that
    sends to no address of theirs, the API's webhook, declares none); and, where that takes
    the database, ``unreachable(db, to) -> str | None`` (web chat: a visitor of the inbox)."""

    name: str
    # Every setting its inboxes take, in the order the settings page shows them.
    fields: tuple[Setting, ...]
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


def consent_channel(name: str) -> ConsentChannel | None:
    """The channel a customer's consent to messages through this kind of inbox is recorded
    for (``consent_channel`` of the channel: SMS, email, WhatsApp); None where there is none
    to record (web chat, Messenger, Telegram...: the customer reaches us there, and blocks
    us there, themselves)."""
    found: ConsentChannel | None = getattr(get(name), "consent_channel", None)
    return found


def unreachable(db: Session, to: Addressee) -> str | None:
    """Why a message through ``to.inbox`` cannot reach the customer, by the rule its channel
    sends by (``recipient``, or ``unreachable`` where that reads the database); None when
    it can."""
    channel = get(to.inbox.channel)
    if channel is None:
        return f"no channel {to.inbox.channel!r} is installed"
    ask = getattr(channel, "unreachable", None)
    if ask is not None:
        why: str | None = ask(db, to)
        return why
    recipient = getattr(channel, "recipient", None)
    if recipient is not None:
        try:
            recipient(to)
        except NoRecipient as exc:
            return exc.reason
    return None


def default_of(channel: str, name: str) -> Any:
    """What a channel's setting is while an inbox leaves it unset (None if it has no such
    setting or no default)."""
    found = get(channel)
    return next((f.default for f in found.fields if f.name == name), None) if found else None


def setting(channel: str, settings: dict[str, Any], name: str) -> Any:
    """An inbox's setting as it applies: the value the inbox holds, else the default its
    channel declares (one place for each default: the code that reads it and the settings
    page that shows it)."""
    value = settings.get(name)
    return default_of(channel, name) if value in (None, "") else value


def names() -> list[str]:
    _load()
    return sorted(_CHANNELS)
