"""Telegram Bot API: updates by webhook (``X-Telegram-Bot-Api-Secret-Token``), replies by
``sendMessage``."""

import json
import mimetypes
from typing import Any

import httpx
import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from rapport import outbound
from rapport.channels import base, media
from rapport.channels.models import Inbox
from rapport.conversations.models import Conversation, Message
from rapport.crypto import same
from rapport.customers import identity
from rapport.customers.identity import handle
from rapport.customers.models import Identity, IdentityKind
from rapport.ingest import InboundMessage

DEFAULT_API = "https://api.telegram.org"


# Message contents that are a file to fetch, and others that are not text or a file.
_FILES = ("photo", "document", "voice", "video", "video_note", "sticker", "audio")
_OTHER_CONTENT = ("poll", "dice", "venue", "game", "story", "invoice")
# Chats of several people: a customer's message there is answered there.
_GROUPS = ("group", "supergroup")


def _blocked(change: dict[str, Any], inbox_id: str) -> base.WebhookEvents:
    """The customer blocked the bot, or unblocked it (``my_chat_member`` in a private
    chat), or someone removed it from a group or added it back: a line in the
    conversation of the person who did it, since replies cannot reach that chat meanwhile
    (``chat_closed`` refuses them). Recorded as an auto-reply is: nothing to answer,
    nothing reopened. Its id names the chat, so the chat's latest change is found by it."""
    chat, user = change.get("chat") or {}, change.get("from") or {}
    old = (change.get("old_chat_member") or {}).get("status")
    new = (change.get("new_chat_member") or {}).get("status")
    if not user.get("id") or not chat.get("id"):
        return base.WebhookEvents()
    tg: dict[str, Any] = {"chat_id": chat["id"], "member": new}
    if chat.get("type") == "private":
        if new == "kicked":
            text = "[blocked the bot: replies cannot reach them]"
        elif old == "kicked":
            text = "[unblocked the bot]"
        else:
            return base.WebhookEvents()
    elif chat.get("type") in _GROUPS:
        title = chat.get("title") or chat["id"]
        if new in _GONE and old not in _GONE:
            text = f"[removed the bot from the group “{title}”: replies there cannot be sent]"
        elif old in _GONE and new not in _GONE:
            text = f"[added the bot to the group “{title}”]"
        else:
            return base.WebhookEvents()
        tg |= {"chat_type": chat["type"], "chat_title": chat.get("title")}
    else:
        return base.WebhookEvents()
    return base.WebhookEvents(
        messages=[
            InboundMessage(
                inbox_id=inbox_id,
                external_id=f"{chat['id']}{_MEMBER}{change.get('date', '')}:{new}",
                handles=[handle(IdentityKind.telegram, str(user["id"]))],
                text=text,
                sent_at=base.timestamp(change.get("date")),
                meta={"telegram": tg},
                expect_channel="telegram",
                auto_reply=True,
            )
        ]
    )


# A bot's status in a chat it can no longer send to: blocked (private), or removed from
# a group (kicked by an admin, or left).
_GONE = ("left", "kicked")
# What the id of a change of the bot's membership holds after the chat's id.
_MEMBER = ":member:"


def chat_closed(db: Session, *, conversation: Conversation, inbox: Inbox) -> str | None:
    """Why a reply through ``inbox`` cannot reach the chat it would go to (see ``send``:
    the group the customer last wrote in, else their private chat): the bot's latest
    change of membership there says it was blocked or removed; None when it may go."""
    from rapport.conversations.service import last_written  # it reaches the channels

    # What they wrote, as ``deliver`` reads it.
    came = (
        last_written(db, conversation_id=conversation.id, inbox_id=inbox.id)
        if conversation.id
        else None
    )
    tg = (came or {}).get("telegram") or {}
    group = tg.get("chat_type") in _GROUPS and tg.get("chat_id")
    if group:
        chat = str(tg["chat_id"])
    else:
        found = identity.recipient(
            list(
                db.scalars(
                    select(Identity).where(
                        Identity.workspace_id == conversation.workspace_id,
                        Identity.customer_id == conversation.customer_id,
                        Identity.kind == IdentityKind.telegram,
                    )
                )
            ),
            IdentityKind.telegram,
            inbox_id=inbox.id,
        )
        if found is None:
            return None
        chat = found.value
    # The ids of the chat's changes of membership, a range of the inbox's unique index
    # (";" follows ":"): the latest says where the bot stands.
    start = f"{chat}{_MEMBER}"
    latest = db.scalar(
        select(Message.meta)
        .where(
            Message.inbox_id == inbox.id,
            Message.external_id >= start,
            Message.external_id < start[:-1] + ";",
        )
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(1)
    )
    if ((latest or {}).get("telegram") or {}).get("member") not in _GONE:
        return None
    if group:
        title = tg.get("chat_title") or chat
        return f"the bot was removed from the Telegram group “{title}”; add it back to reply there"
    return "the customer blocked the bot on Telegram; replies reach them once they unblock it"


class TelegramChannel:
    name = "telegram"
    fields: tuple[base.Setting, ...] = (
        base.Setting("bot_token", "Bot token", "secret", "From @BotFather.", needed=True),
        base.Setting(
            "secret_token",
            "Webhook secret token",
            "secret",
            "Any text of letters, digits, _ and - (1-256); give it to setWebhook as "
            "secret_token: calls without it are refused.",
            needed=True,
        ),
        base.api_base_setting(DEFAULT_API),
        base.rate_setting(30),
    )
    secret_fields = base.secret_names(fields)
    sends_files = True
    reply_blocked = staticmethod(chat_closed)

    def media_refs(self, meta: dict[str, Any]) -> list[dict[str, Any]]:
        found = (meta.get("telegram") or {}).get("file")
        return [found] if isinstance(found, dict) and found.get("file_id") else []

    def fetch_media(
        self, *, inbox: Any, secrets: dict[str, Any], ref: dict[str, Any], allow_private: bool
    ) -> media.Fetched:
        """Bot API: ``getFile`` gives the file's path, then ``/file/bot<token>/<path>``."""
        api = str(inbox.settings.get("api_base_url") or DEFAULT_API).rstrip("/")
        token = secrets.get("bot_token", "")
        info = outbound.request(
            "GET",
            f"{api}/bot{token}/getFile",
            allow_private=allow_private,
            params={"file_id": ref["file_id"]},
            timeout=20,
        )
        info.raise_for_status()
        path = str(info.json()["result"]["file_path"])
        data, _ = media.download(f"{api}/file/bot{token}/{path}", allow_private=allow_private)
        content_type = str(ref.get("mime_type") or mimetypes.guess_type(path)[0] or "")
        name = ref.get("file_name") or path.rsplit("/", 1)[-1]
        return media.Fetched(str(name)[:200], content_type, data)

    def verify(self, *, secrets: dict[str, Any], request: base.WebhookRequest) -> bool:
        expected = base.secret(secrets, "secret_token")
        given = request.headers.get("x-telegram-bot-api-secret-token")
        return expected is not None and same(given, expected)

    def parse(self, request: base.WebhookRequest, *, inbox: Any) -> base.WebhookEvents:
        inbox_id = inbox.id
        update = orjson.loads(request.body)
        # A channel's own posts (``channel_post``) are its admins broadcasting, not a
        # customer writing: a reply would go to the channel, in public, for every reader.
        msg = update.get("message") or update.get("edited_message")
        edited = msg is not None and msg is update.get("edited_message")
        if "my_chat_member" in update:
            return _blocked(update["my_chat_member"], inbox_id)
        if msg is None:
            return base.WebhookEvents()  # callbacks, polls, channel posts: nothing for the inbox
        sender = msg.get("from") or msg.get("chat") or {}
        chat_id = msg["chat"]["id"]
        name = " ".join(p for p in (sender.get("first_name"), sender.get("last_name")) if p)
        handles = [handle(IdentityKind.telegram, str(sender.get("id", chat_id)))]
        text = msg.get("text") or msg.get("caption") or ""
        extra: dict[str, Any] = {
            "telegram": {"chat_id": chat_id, "username": sender.get("username")}
        }
        if msg["chat"].get("type") in _GROUPS:
            # Written in a group: the sender's conversation, answered in that group (see
            # ``send``), as a reply to this message; in a forum, in its topic.
            extra["telegram"] |= {
                "chat_type": msg["chat"]["type"],
                "chat_title": msg["chat"].get("title"),
                "message_id": msg["message_id"],
            }
            if msg.get("is_topic_message") and msg.get("message_thread_id"):
                extra["telegram"]["thread_id"] = msg["message_thread_id"]
        for kind in _FILES:
            if kind in msg:
                extra["telegram"]["media"] = kind
                # A photo comes in several sizes: the last is the largest.
                item = msg[kind][-1] if isinstance(msg[kind], list) else msg[kind]
                extra["telegram"]["file"] = {
                    k: item.get(k) for k in ("file_id", "mime_type", "file_name") if item.get(k)
                }
                # A file's name, a sticker's emoji: what the agent would see in Telegram.
                label = item.get("file_name") or item.get("emoji") or ""
                text = text or f"[{kind}] {label}".strip()
        if "location" in msg:
            loc = msg["location"]
            extra["location"] = loc
            text = f"[location] ({loc.get('latitude')}, {loc.get('longitude')})"
        if "contact" in msg:
            c = msg["contact"]
            extra["contact"] = c
            text = f"[contact] {c.get('first_name', '')} {c.get('phone_number', '')}".strip()
        for kind in _OTHER_CONTENT:
            if kind in msg:
                question = msg[kind].get("question", "") if kind == "poll" else ""
                text = text or f"[{kind}] {question}".strip()
        if not text:
            # A service message (someone joined or left a group, a pin, a new title...):
            # nobody wrote anything, and an empty message would wait for an answer.
            return base.WebhookEvents()
        return base.WebhookEvents(
            messages=[
                InboundMessage(
                    inbox_id=inbox_id,
                    # Telegram numbers messages per chat. An edit keeps its message's
                    # number: it is a message of its own, kept beside what it changed.
                    external_id=f"{chat_id}:{msg['message_id']}"
                    + (f":edited:{msg.get('edit_date', '')}" if edited else ""),
                    handles=handles,
                    text=f"(edited) {text}" if edited else text,
                    sender_name=name or str(sender.get("username") or ""),
                    sent_at=base.timestamp(msg.get("date")),
                    meta=extra,
                    expect_channel="telegram",
                )
            ]
        )

    def recipient(self, to: base.Addressee) -> str:
        found = to.handle(IdentityKind.telegram)
        if not found:
            raise base.NoRecipient("the customer has no Telegram chat")
        return found

    def send(self, out: base.Outbound) -> base.SendResult:
        token = out.secrets.get("bot_token")
        if not token:
            raise base.DeliveryError("the inbox has no bot_token", permanent=True)
        chat = self.recipient(out)
        where: dict[str, Any] = {"chat_id": chat}
        came = out.last_inbound.get("telegram") or {}
        if came.get("chat_type") in _GROUPS and came.get("chat_id"):
            # The customer last wrote in a group: the answer goes there, as a reply to what
            # they wrote (sent on if that was deleted). Sent to the user's private chat, it
            # never showed in the group, and Telegram refused it ("bot can't initiate
            # conversation with a user") unless they had started the bot.
            where = {"chat_id": str(came["chat_id"])}
            if came.get("thread_id"):
                where["message_thread_id"] = came["thread_id"]
            if came.get("message_id"):
                where["reply_parameters"] = {
                    "message_id": came["message_id"],
                    "allow_sending_without_reply": True,
                }
        chat = where["chat_id"]
        api = f"{str(out.inbox.settings.get('api_base_url') or DEFAULT_API).rstrip('/')}/bot{token}"

        # A Telegram message id counts within its chat: each part is known as chat:id, as
        # inbound messages are, so that two chats' parts never share an id in the inbox.
        def text(piece: str) -> str:
            sent = _call(f"{api}/sendMessage", out.allow_private, json=where | {"text": piece})
            return f"{chat}:{sent}"

        def send_file(f: base.OutboundFile) -> str:
            return f"{chat}:{_send_file(api, where, f, out.allow_private)}"

        ids = base.send_parts(out, base.file_parts(out, text, send_file, limit=TEXT_MAX))
        return base.SendResult(external_id=ids[-1])


# The longest text sendMessage takes (its documentation: 1-4096 characters): a longer
# reply goes as several messages.
TEXT_MAX = 4096
# Telegram fetches photos by URL up to 5 MB; sendDocument by URL only takes GIF, PDF and
# ZIP files (its documentation says so), so other files are uploaded as multipart.
PHOTO_URL_MAX = 5 * 1024 * 1024
_DOCUMENT_BY_URL = {"image/gif", "application/pdf", "application/zip"}


def _send_file(api: str, where: dict[str, Any], f: base.OutboundFile, allow_private: bool) -> str:
    """``where``: the chat (and topic, message replied to) a part goes to."""
    if f.is_image and f.size <= PHOTO_URL_MAX:
        return _call(f"{api}/sendPhoto", allow_private, json=where | {"photo": f.url})
    if f.content_type in _DOCUMENT_BY_URL:
        return _call(f"{api}/sendDocument", allow_private, json=where | {"document": f.url})
    # A multipart form's fields are text: an object as the JSON the Bot API reads.
    form = {k: v if isinstance(v, str | int) else json.dumps(v) for k, v in where.items()}
    return _call(
        f"{api}/sendDocument",
        allow_private,
        data=form,
        files={"document": (f.filename, f.data(), f.content_type)},
    )


def _call(url: str, allow_private: bool, **request: Any) -> str:
    """One Bot API call; the sent message's id."""
    try:
        resp = outbound.request("POST", url, allow_private=allow_private, timeout=30, **request)
    except httpx.HTTPError as exc:
        raise base.DeliveryError(f"Telegram unreachable: {type(exc).__name__}") from exc
    if resp.status_code == 429 or resp.status_code >= 500:
        raise base.DeliveryError(f"Telegram answered {resp.status_code}")
    try:
        data = resp.json() if resp.content else {}
    except ValueError:
        data = None
    if not isinstance(data, dict):  # a proxy's page, not the Bot API's answer
        data = {"description": resp.text[:200] or resp.status_code}
    if not data.get("ok"):
        raise base.DeliveryError(
            f"Telegram refused: {data.get('description', resp.status_code)}",
            permanent=True,
            # 401 Unauthorized: the bot token was revoked or is wrong (a 403 is one chat's:
            # the customer blocked the bot).
            account=resp.status_code == 401 or data.get("error_code") == 401,
        )
    return str(data["result"]["message_id"])


CHANNEL = base.register(TelegramChannel())
