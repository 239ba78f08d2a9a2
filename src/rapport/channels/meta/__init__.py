"""Messenger and Instagram (Meta): page webhooks signed like WhatsApp's, replies through
the Send API."""

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx

from rapport import outbound
from rapport.channels import base, media
from rapport.channels.whatsapp import (
    META_APP_SETTINGS,
    graph_error,
    refuses_account,
    transient,
    valid_signature,
)
from rapport.customers.identity import handle, page_noun
from rapport.customers.models import IdentityKind
from rapport.db import utcnow
from rapport.ingest import InboundMessage

DEFAULT_API = "https://graph.facebook.com/v21.0"
# Meta's standard messaging window, from the customer's last message; and how long after
# it a person's reply may still go with the human agent tag (Messenger and Instagram).
WINDOW = timedelta(hours=24)
HUMAN_AGENT_WINDOW = timedelta(days=7)
# What the metadata of Rapport's sends starts with (the message's id follows).
ECHO_MARK = "rapport:"


class MetaChannel:
    fields: tuple[base.Setting, ...] = (
        base.Setting(
            "page_id",
            "Page or account ID",
            help="The Facebook page's id (Instagram: the professional account's): "
            "events of other pages are left out.",
            needed=True,
        ),
        base.Setting("page_access_token", "Page access token", "secret", needed=True),
        *META_APP_SETTINGS,
        base.Setting(
            "app_id",
            "App ID",
            help="Your Meta app's id: a handover to or from it is named as Rapport.",
        ),
        base.api_base_setting(DEFAULT_API),
        base.rate_setting(40),
    )
    secret_fields = base.secret_names(fields)
    sends_files = True

    def media_refs(self, meta: dict[str, Any]) -> list[dict[str, Any]]:
        atts = meta.get("attachments") or []
        refs = [
            {"url": a["payload"]["url"], "type": a.get("type", "file"), "n": n}
            for n, a in enumerate(atts)
            if isinstance(a, dict)
            and a.get("type") not in _NOT_FILES
            and (a.get("payload") or {}).get("url")
        ]
        # The story an Instagram reply answers: kept with it, as Meta's link to it expires.
        story = (meta.get("reply_to") or {}).get("story") or {}
        if isinstance(story, dict) and story.get("url"):
            refs.append({"url": story["url"], "type": "story", "n": len(atts)})
        return refs

    def fetch_media(
        self, *, inbox: Any, secrets: dict[str, Any], ref: dict[str, Any], allow_private: bool
    ) -> media.Fetched:
        """Messenger and Instagram send a CDN URL for each attachment."""
        data, content_type = media.download(str(ref["url"]), allow_private=allow_private)
        name = media.filename_for(f"{self.name}-{ref['type']}-{ref['n']}", content_type)
        return media.Fetched(name, content_type, data)

    def __init__(
        self, name: str, kind: IdentityKind, text_limit: int, text_size: Callable[[str], int]
    ) -> None:
        self.name = name
        self.kind = kind
        # The longest text the Send API takes in one message, as it counts: a longer reply
        # goes as several messages.
        self.text_limit = text_limit
        self.text_size = text_size

    def verify(self, *, secrets: dict[str, Any], request: base.WebhookRequest) -> bool:
        return valid_signature(
            base.secret(secrets, "app_secret"),
            request.body,
            request.headers.get("x-hub-signature-256"),
        )

    def check_reply(
        self,
        *,
        last_inbound_at: datetime | None,
        now: datetime,
        template: bool,
        automatic: bool = False,
    ) -> str | None:
        """Why a reply may not go now (None when it may): past Meta's standard messaging
        window (24 hours from what the customer last wrote) only a person's reply goes,
        with the human agent tag (``send``), for up to 7 days; nothing after that. An
        ``automatic`` reply (the bot's, a rule's) never takes the tag: Meta's policy
        allows it for a person's answer only, on Messenger and on Instagram alike."""
        if last_inbound_at is None or now - last_inbound_at > HUMAN_AGENT_WINDOW:
            return (
                "the customer has not written in the last 7 days: past Meta's 24-hour "
                "window a person's reply may go for 7 days (Meta's human agent tag), "
                "and no reply after that"
            )
        if automatic and now - last_inbound_at > WINDOW:
            return (
                "the customer has not written in the last 24 hours: Meta's standard "
                "messaging window is closed, and after it only a person's reply may go "
                "(Meta's human agent tag, for 7 days), not the bot's or a rule's"
            )
        return None

    def messaging(self, out: base.Outbound) -> dict[str, str]:
        """How the Send API is told this message may go: a response inside the standard
        window, else a person's reply with the human agent tag; refused (permanent) when
        neither holds at the time it is sent (queued inside the window, retried after)."""
        now = utcnow()
        opened = out.window_opened_at
        if opened is not None and now - opened <= WINDOW:
            return {"messaging_type": "RESPONSE"}
        person = out.message.sender_type == "user" and out.message.sender_id is not None
        if why := self.check_reply(
            last_inbound_at=opened, now=now, template=False, automatic=not person
        ):
            raise base.DeliveryError(f"not sent: {why}", permanent=True)
        return {"messaging_type": "MESSAGE_TAG", "tag": "HUMAN_AGENT"}

    def parse(self, request: base.WebhookRequest, *, inbox: Any) -> base.WebhookEvents:
        """Each messaging item on its own (one that cannot be read is set aside, the others
        go on); with the inbox's ``page_id`` set, entries of other pages or accounts (one
        Meta app, one callback URL) are not this inbox's and are left out.

        Items of an entry's ``standby`` (Meta's handover protocol: another app holds the
        thread) are recorded as the others are, so agents see the whole thread, but like
        an auto-reply (``meta.standby``): that app answers them, so they neither reopen a
        conversation nor wait for an answer, and no bot or rule acts on them. What the
        customer wrote there still opens Meta's 24-hour window, as it does at Meta. A
        handover (another app took the thread, passed it on, asks for it) is a line in the
        customer's conversation."""
        payload = json.loads(request.body)
        events = base.WebhookEvents()
        ours = inbox.settings.get("page_id")
        app_id = str(inbox.settings.get("app_id") or "")

        def item(item: dict[str, Any], *, standby: bool = False) -> None:
            sender = str(item["sender"]["id"])
            sent_at = base.timestamp(item.get("timestamp"), millis=True)
            marked = {"standby": True} if standby else {}

            def inbound(
                external_id: str,
                text: str,
                meta: dict[str, Any],
                *,
                at: datetime | None = sent_at,
                auto_reply: bool = False,
                wrote: bool = True,
            ) -> None:
                events.messages.append(
                    InboundMessage(
                        inbox_id=inbox.id,
                        external_id=external_id,
                        handles=[handle(self.kind, sender)],
                        text=text,
                        sent_at=at,
                        meta=meta | marked,
                        expect_channel=self.name,
                        auto_reply=auto_reply or standby,
                        # Theirs all the same, though nothing here answers it: Meta's
                        # 24-hour window counts from it (not from the other app's echoes).
                        customer_wrote=wrote,
                    )
                )

            if "message" in item and item["message"].get("is_deleted"):
                # The customer unsent a message (Instagram): nothing new was written.
                pass
            elif "message" in item and item["message"].get("is_echo"):
                # The page wrote: its sender is the page, its recipient the customer.
                m = item["message"]
                atts = m.get("attachments") or []
                said = str(m.get("metadata") or "")
                ours = said.removeprefix(ECHO_MARK) if said.startswith(ECHO_MARK) else None
                events.echoes.append(
                    {
                        "external_id": str(m["mid"]),
                        "kind": self.kind.value,
                        "handle": handle(self.kind, str(item["recipient"]["id"])).value,
                        "text": _text(m),
                        "sent_at": sent_at.isoformat() if sent_at else None,
                        "meta": ({"attachments": atts} if atts else {}) | marked,
                        # Rapport's message, named by the metadata its send gave Meta.
                        "ours": ours,
                        # Instagram's echoes carry no metadata: one of ours names nothing.
                        "marks_ours": self.name == "messenger",
                    }
                )
            elif "message" in item:
                m = item["message"]
                atts = m.get("attachments", [])
                meta: dict[str, Any] = {"attachments": atts} if atts else {}
                text = _text(m)
                if (m.get("reply_to") or {}).get("story"):
                    # An answer to the account's story: without it, the words meant nothing.
                    meta["reply_to"] = m["reply_to"]
                    text = f"[reply to your story] {text}".strip()
                inbound(str(m["mid"]), text, meta)
            elif "reaction" in item:
                r = item["reaction"]
                # A reaction has no id of its own, and the same one can come and go on a
                # message many times: the webhook's time tells each apart, while Meta's
                # redelivery of the same item keeps it (and so is stored once).
                key = f"{r.get('mid')}:{r.get('action')}:{r.get('emoji', '')}"
                if item.get("timestamp"):
                    key += f":{item['timestamp']}"
                inbound(
                    key,
                    "[reaction removed]"
                    if r.get("action") == "unreact"
                    else f"[reaction] {r.get('emoji') or r.get('reaction') or ''}".strip(),
                    {"reaction": r},
                    at=None,
                    # Recorded, but nothing to answer: a like must not reopen a
                    # resolved conversation, start its clocks or wake the bot. Meta
                    # counts a reaction as the customer's word (its window opens), not
                    # one taken back.
                    auto_reply=True,
                    wrote=r.get("action") != "unreact",
                )
            elif "message_edit" in item:
                # As on Telegram, an edit is kept beside what it changed, as a message of
                # its own: the agent may have answered the words as they were.
                e = item["message_edit"]
                inbound(
                    f"{e['mid']}:edited:{e.get('num_edit', '')}",
                    f"(edited) {e.get('text', '')}",
                    {"edit": e},
                )
            elif "postback" in item:
                # The customer tapped a button (Get Started, the page's menu, an ice
                # breaker): what they chose is what they said. (In standby, Meta leaves
                # the payload out: it is the other app's.)
                p = item["postback"]
                inbound(
                    str(p.get("mid") or f"postback:{sender}:{item['timestamp']}"),
                    str(p.get("title") or p.get("payload") or "[button]"),
                    {"postback": p},
                )
            for control in _HANDOVERS:
                if control in item:
                    # No id of its own: the webhook's time tells one from the next, and
                    # Meta's redelivery keeps it (so the line is written once).
                    events.activities.append(
                        {
                            "external_id": f"{control}:{sender}:{item['timestamp']}",
                            "kind": self.kind.value,
                            "handle": handle(self.kind, sender).value,
                            "text": _handover(control, item[control], app_id),
                            "meta": {"handover": {"event": control, **item[control]}},
                        }
                    )
            delivery, read = item.get("delivery") or {}, item.get("read") or {}
            # When it was delivered or read: the item's own time, which Meta keeps when it
            # sends the call again (for hours). Not the watermark: that says which messages
            # (those sent before it), not when; a receipt without a time of its own is
            # recorded at its arrival.
            at = sent_at.isoformat() if sent_at else None
            for mid in delivery.get("mids") or []:
                events.statuses.append(
                    {"external_id": str(mid), "status": "delivered", "error": None, "at": at}
                )
            if read.get("mid"):  # Instagram names the message read
                events.statuses.append(
                    {"external_id": str(read["mid"]), "status": "read", "error": None, "at": at}
                )
            # Messenger names a moment: everything sent up to it.
            for status, report in (("delivered", delivery), ("read", read)):
                if report.get("mids") or report.get("mid"):
                    continue
                # A moment that cannot be one (not a number, past any date) names nothing.
                if base.timestamp(report.get("watermark"), millis=True) is not None:
                    events.statuses.append(
                        {
                            "watermark": int(report["watermark"]),
                            "status": status,
                            "kind": self.kind.value,
                            "handle": handle(self.kind, sender).value,
                            "at": at,
                        }
                    )

        for entry in payload.get("entry", []):
            if ours and entry.get("id") and str(entry["id"]) != str(ours):
                continue  # another page's (the router says if no inbox took it)
            events.each(entry.get("messaging", []), item)
            events.each(entry.get("standby", []), lambda i: item(i, standby=True))
        return events

    def check_files(self, files: list[tuple[str, str, int]]) -> str | None:
        """Why these files cannot go through this channel (None when they can): Instagram
        takes only some kinds of file, and images up to 8 MB; Messenger takes any."""
        if self.name != "instagram":
            return None
        for name, content_type, size in files:
            most = _INSTAGRAM_FILES.get(content_type.split(";")[0].strip().lower())
            if most is None:
                return (
                    f"Instagram does not take {name} ({content_type}): only images (PNG, "
                    "JPEG, GIF), videos (MP4, MOV, AVI, OGG, WebM), audio (AAC, M4A, WAV) "
                    "and PDF files"
                )
            if size > most:
                return f"Instagram takes {name} up to {most // (1024 * 1024)} MB"
        return None

    # What tells the pages (or accounts) of one Meta app apart (``accounts``; the router).
    account_key = "page_id"

    def accounts(self, request: base.WebhookRequest) -> set[str]:
        """The pages or accounts (``entry.id``) a call has events for; none if unreadable."""
        try:
            payload = json.loads(request.body)
            return {str(e["id"]) for e in payload.get("entry", []) if e.get("id")}
        except (ValueError, KeyError, TypeError, AttributeError):
            return set()

    def recipient(self, to: base.Addressee) -> str:
        found = to.handle(self.kind)
        if not found:
            raise base.NoRecipient(self._no_recipient(to))
        return found

    def send(self, out: base.Outbound) -> base.SendResult:
        token = out.secrets.get("page_access_token")
        if not token:
            raise base.DeliveryError("the inbox has no page_access_token", permanent=True)
        to = self.recipient(out)
        api = str(out.inbox.settings.get("api_base_url") or DEFAULT_API).rstrip("/")
        # Decided at the first part that still has to go: a retry whose parts all went
        # earlier sends nothing, and must not fail for a window closed since.
        how: dict[str, str] = {}

        # Messenger hands a message's metadata back in its echo: Rapport's own are known by
        # it, however early the echo comes (Instagram documents no such field).
        mark = {"metadata": f"{ECHO_MARK}{out.message.id}"} if self.name == "messenger" else {}

        def post(message: dict[str, Any]) -> str | None:
            if not how:
                how.update(self.messaging(out))
            body = {"recipient": {"id": to}, **how, "message": message | mark}
            return self._post(f"{api}/me/messages", str(token), body, out.allow_private)

        ids = base.send_parts(
            out,
            base.file_parts(
                out,
                lambda piece: post({"text": piece}),
                lambda f: post({"attachment": attachment(f)}),
                limit=self.text_limit,
                size=self.text_size,
            ),
        )
        return base.SendResult(external_id=ids[-1] or None, meta=base.parts_meta(ids))

    def _no_recipient(self, to: base.Addressee) -> str:
        """Why a message has nobody to go to: the customer has no id of this channel, or
        only ids other pages issued, which Meta would refuse."""
        if not any(i.kind == self.kind for i in to.identities):
            return f"the customer has no {self.name} id"
        page = page_noun(self.kind)
        return (
            f"the customer never wrote to this {page} ({to.inbox.name}), and {self.name} "
            f"ids belong to the {page} that issued them: reply through the inbox they wrote to"
        )

    def _post(self, url: str, token: str, body: dict[str, Any], allow_private: bool) -> str | None:
        try:
            resp = outbound.request(
                "POST",
                url,
                allow_private=allow_private,
                params={"access_token": token},
                json=body,
                timeout=20,
            )
        except httpx.HTTPError as exc:
            raise base.DeliveryError(f"{self.name} unreachable: {type(exc).__name__}") from exc
        if resp.status_code == 429 or resp.status_code >= 500:
            raise base.DeliveryError(f"{self.name} answered {resp.status_code}")
        if resp.status_code >= 400:
            err = graph_error(resp)
            reason = f"{err.get('code')}: {err.get('message')}" if err else resp.text[:200]
            raise base.DeliveryError(
                f"{self.name} refused the message ({reason})",
                permanent=not transient(err),
                account=refuses_account(resp.status_code, err),
            )
        found = resp.json().get("message_id")
        return str(found) if found else None


# Meta's handover protocol (``messaging_handovers``): the app a thread was passed to, the
# one that took it, the one that asks for it.
_HANDOVERS = {
    "pass_thread_control": "new_owner_app_id",
    "take_thread_control": "new_owner_app_id",
    "request_thread_control": "requested_owner_app_id",
}


def _handover(control: str, event: dict[str, Any], app_id: str) -> str:
    """A handover as agents read it. Every app of the page subscribed to handovers is told
    of each, so which app is Rapport is known only by the inbox's ``app_id``."""
    owner = str(event.get(_HANDOVERS[control]) or "")
    who = "Rapport" if app_id and owner == app_id else "another app"
    if control == "pass_thread_control":
        return f"This conversation was passed to {who}"
    if control == "take_thread_control":
        return f"{who[0].upper()}{who[1:]} took over this conversation"
    return f"{who[0].upper()}{who[1:]} asked to take over this conversation"


# What Instagram's Send API takes, by type, and how large (its documentation: images 8 MB,
# video, audio and files 25 MB). Refused when the agent sends, not by Meta afterwards.
_MB = 1024 * 1024
_INSTAGRAM_FILES = {
    **dict.fromkeys(("image/png", "image/jpeg", "image/gif"), 8 * _MB),
    **dict.fromkeys(
        (
            "video/mp4",
            "video/ogg",
            "video/x-msvideo",
            "video/avi",
            "video/quicktime",
            "video/webm",
            "audio/aac",
            "audio/mp4",
            "audio/x-m4a",
            "audio/m4a",
            "audio/wav",
            "audio/x-wav",
            "audio/vnd.wave",
            "application/pdf",
        ),
        25 * _MB,
    ),
}


# Attachments whose URL is not a file: a shared link (``fallback``: the page it points
# to, which may be anything, anywhere), a template's, a location's map.
_NOT_FILES = frozenset({"fallback", "template", "location"})


def _text(message: dict[str, Any]) -> str:
    """A message's text, or what it carried when it has none (a shared link by its title
    and address)."""
    if message.get("text"):
        return str(message["text"])
    parts = []
    for a in message.get("attachments") or []:
        if a.get("type") == "fallback":
            payload = a.get("payload") or {}
            title, url = payload.get("title") or a.get("title"), payload.get("url") or a.get("url")
            parts.append(" ".join(str(p) for p in ("[link]", title, url) if p))
        elif a.get("type") == "story_mention":
            parts.append("[mentioned you in their story]")
        else:
            parts.append(f"[{a.get('type', 'attachment')}]")
    if not parts and message.get("is_unsupported"):
        # Instagram passes on no GIF or sticker, only that one came: it was an empty message.
        return "[unsupported] something Instagram does not pass on (a GIF, a sticker...)"
    return " ".join(parts)


def attachment(f: base.OutboundFile) -> dict[str, Any]:
    """The Send API's attachment by URL: Meta fetches the file from our signed link."""
    main = f.content_type.split("/", 1)[0]
    kind = main if main in ("image", "video", "audio") else "file"
    return {"type": kind, "payload": {"url": f.url, "is_reusable": False}}


# Messenger takes 2000 characters; Instagram less than 1000 (UTF-8 bytes, some say).
MESSENGER = base.register(MetaChannel("messenger", IdentityKind.messenger, 2000, base.utf16_units))
INSTAGRAM = base.register(MetaChannel("instagram", IdentityKind.instagram, 999, base.utf8_bytes))
