"""WhatsApp Cloud API: webhooks in (verified with the app secret), messages out.

Inbound: Meta's ``GET`` verification handshake, then ``POST`` events signed with
``X-Hub-Signature-256: sha256=<HMAC-SHA256(app secret, raw body)>``. Each event holds
``messages`` (what customers wrote) and ``statuses`` (what became of ours). Outbound:
``POST {api_base_url}/{phone_number_id}/messages``. Outside the 24-hour customer-service
window only an approved template may be sent.
"""

import json
import logging
from datetime import datetime, timedelta
from typing import Any

import httpx

from rapport import outbound
from rapport.channels import base, media
from rapport.crypto import hmac_sha256_hex, same
from rapport.customers.identity import Handle, InvalidHandle, handle
from rapport.customers.models import ConsentChannel, IdentityKind
from rapport.ingest import InboundMessage

log = logging.getLogger(__name__)
DEFAULT_API = "https://graph.facebook.com/v21.0"
WINDOW = timedelta(hours=24)
_STATUSES = {"sent": "sent", "delivered": "delivered", "read": "read", "failed": "failed"}


def valid_signature(app_secret: bytes | None, body: bytes, header: str | None) -> bool:
    """Whether ``X-Hub-Signature-256`` is the HMAC of this exact body with the app secret
    (``base.secret``: none set, nothing is valid)."""
    if not app_secret or not header or not header.startswith("sha256="):
        return False
    return same(header.removeprefix("sha256="), hmac_sha256_hex(app_secret, body))


# Meta's errors that mean "not now" rather than "never", whatever HTTP status carries them
# (most come with a 400: Meta tells apps to act on the code, not the status): the service
# down or overloaded, a rate limit of the app, the account, the number or the pair of
# numbers, Messenger's temporary send failure. Failed for good, a reply that a moment's
# wait would have sent was lost (an agent had to notice and send it again).
_TRANSIENT = frozenset({2, 4, 17, 32, 613, 1200, 80007, 130429, 131000, 131016, 131056})


def graph_error(resp: httpx.Response) -> dict[str, Any]:
    """The ``error`` object of a Graph API answer, or {} when it has none (an HTML page
    from a proxy)."""
    try:
        body = resp.json()
    except ValueError:
        return {}
    found = body.get("error") if isinstance(body, dict) else None
    return found if isinstance(found, dict) else {}


def transient(error: dict[str, Any]) -> bool:
    """Whether a Graph API error is worth trying again (``is_transient``, or its code)."""
    code = error.get("code")
    return error.get("is_transient") is True or (
        str(code).isdigit() and int(str(code)) in _TRANSIENT
    )


# Meta's errors that refuse the app's token or its rights, not one message (its auth and
# permission codes: 190 an expired or revoked token, 102 a session gone, 10 and 200-299 a
# permission missing, 0 an auth failure): every send through the inbox fails alike until
# an admin sets a new token.
_ACCOUNT = frozenset({0, 10, 102, 190, *range(200, 300)})


def refuses_account(status: int, error: dict[str, Any]) -> bool:
    """Whether a Graph API answer refused the inbox's credentials (``DeliveryError.account``):
    a 401, or one of the auth and permission codes, whatever the status carrying it."""
    code = error.get("code")
    return status == 401 or (str(code).isdigit() and int(str(code)) in _ACCOUNT)


def _error(error: dict[str, Any]) -> str:
    """One of Meta's errors as an agent can act on it: its code and title, and the details
    (``error_data.details``) that say why, which the title alone does not ("Re-engagement
    message": the 24-hour window had closed)."""
    title = error.get("title") or error.get("message") or ""
    details = (error.get("error_data") or {}).get("details") or error.get("details")
    text = f"{error.get('code')}: {title}"
    return f"{text} ({details})" if details and details != title else text


def _text_of(msg: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Readable text for any message type, and what else it carried."""
    kind = msg.get("type", "unknown")
    extra: dict[str, Any] = {"whatsapp_type": kind}
    if kind == "text":
        return str(msg.get("text", {}).get("body", "")), extra
    if kind in ("image", "video", "audio", "document", "sticker"):
        media = msg.get(kind, {})
        extra["media"] = {k: media.get(k) for k in ("id", "mime_type", "sha256", "filename")}
        caption = media.get("caption") or media.get("filename") or ""
        return (f"[{kind}] {caption}").strip(), extra
    if kind == "location":
        loc = msg.get("location", {})
        extra["location"] = loc
        name = " ".join(str(loc.get(k, "")) for k in ("name", "address")).strip()
        return f"[location] {name} ({loc.get('latitude')}, {loc.get('longitude')})".strip(), extra
    if kind == "contacts":
        extra["contacts"] = msg.get("contacts", [])
        names = [c.get("name", {}).get("formatted_name", "") for c in msg.get("contacts", [])]
        return "[contact] " + ", ".join(n for n in names if n), extra
    if kind == "reaction":
        reaction = msg.get("reaction", {})
        extra["reaction"] = reaction
        if not reaction.get("emoji"):  # Meta leaves the emoji out when one is taken back
            return "[reaction removed]", extra
        return f"[reaction] {reaction['emoji']}", extra
    if kind == "button":
        return str(msg.get("button", {}).get("text", "")), extra
    if kind == "interactive":
        reply = msg.get("interactive", {})
        chosen = reply.get("button_reply") or reply.get("list_reply") or {}
        if chosen.get("title"):
            return str(chosen["title"]), extra
        # A Flow's answer (nfm_reply): its summary line, the answers kept as given.
        form = reply.get(str(reply.get("type"))) or {}
        extra["interactive"] = reply
        return str(form.get("body") or f"[{reply.get('type') or kind}]"), extra
    if kind == "order":
        order = msg.get("order", {})
        extra["order"] = order
        items = ", ".join(
            f"{i.get('quantity')} × {i.get('product_retailer_id')}"
            for i in order.get("product_items", [])
        )
        return " ".join(p for p in ("[order]", items, order.get("text")) if p), extra
    if kind == "system":  # the customer changed number, say: WhatsApp writes the sentence
        extra["system"] = msg.get("system", {})
        return f"[system] {extra['system'].get('body', '')}".strip(), extra
    if msg.get("errors"):  # "unsupported": what the customer sent, WhatsApp did not pass on
        extra["errors"] = msg["errors"]
        return f"[{kind}] " + "; ".join(_error(e) for e in msg["errors"]), extra
    return f"[{kind}]", extra


def _handles(wa_id: str) -> list[Handle]:
    """A WhatsApp user's handles: their WhatsApp id, which is also their phone number (the
    same person as SMS and calls), when it reads as one."""
    handles = [handle(IdentityKind.whatsapp, wa_id)]
    try:
        handles.append(handle(IdentityKind.phone, "+" + wa_id))
    except InvalidHandle:
        pass
    return handles


# The system notice of a new number: ``user_changed_number`` (its new id in ``wa_id``) and,
# before Graph API v12, ``customer_changed_number`` (in ``new_wa_id``). The notice comes
# ``from`` the old number.
_NUMBER_CHANGED = frozenset({"user_changed_number", "customer_changed_number"})


def _moved_to(msg: dict[str, Any], wa_id: str) -> list[Handle]:
    """The handles of the number a system notice says the sender moved to, if it does."""
    system = msg.get("system") or {}
    if msg.get("type") != "system" or system.get("type") not in _NUMBER_CHANGED:
        return []
    new = str(system.get("new_wa_id") or system.get("wa_id") or "")
    if not new or new == wa_id:
        return []
    try:
        return _handles(new)
    except InvalidHandle:  # the notice is still stored: only the number is not taken
        log.warning(
            "a WhatsApp number change named no number Rapport can read",
            extra={"event": "whatsapp.number_unreadable"},
        )
        return []


def _problems(errors: Any, *, inbox: Any, number: Any) -> None:
    """Errors Meta reports on the number or the app, not on one message (``value.errors``:
    a system-, app- or account-level problem kept a request from being processed): said
    as a warning by their codes and titles (their details may quote a customer). They
    were dropped without a word."""
    found = [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []
    log.warning(
        "WhatsApp reported a problem with the number or the app",
        extra={
            "event": "whatsapp.webhook_error",
            "inbox_id": inbox.id,
            "phone_number_id": str(number or ""),
            "codes": [e.get("code") for e in found],
            "titles": [str(e.get("title") or e.get("message") or "")[:200] for e in found],
        },
    )


def parse(payload: dict[str, Any], *, inbox: Any) -> base.WebhookEvents:
    """Inbound messages and status updates of one webhook call. Each message and status is
    read on its own (one that cannot be is set aside, the others go on); changes for another
    WhatsApp number than the inbox's (one Meta app, one callback URL, several numbers) are
    not this inbox's and are left out. Errors of the number or app are logged."""
    events = base.WebhookEvents()
    ours = inbox.settings.get("phone_number_id")
    for entry in payload.get("entry", []):
        for change in entry.get("changes", []):
            value = change.get("value", {})
            number = (value.get("metadata") or {}).get("phone_number_id")
            if ours and number and str(number) != str(ours):
                continue  # another number's (the router says if no inbox took it)
            if value.get("errors"):
                _problems(value["errors"], inbox=inbox, number=number)
            names = {
                c.get("wa_id"): c.get("profile", {}).get("name", "")
                for c in value.get("contacts", [])
            }

            def message(msg: dict[str, Any], names: dict[Any, Any] = names) -> None:
                wa_id = str(msg["from"])
                text, extra = _text_of(msg)
                sent_at = base.timestamp(msg.get("timestamp"))
                events.messages.append(
                    InboundMessage(
                        inbox_id=inbox.id,
                        external_id=str(msg["id"]),
                        handles=_handles(wa_id),
                        text=text,
                        sender_name=names.get(wa_id, ""),
                        sent_at=sent_at,
                        meta=extra,
                        expect_channel="whatsapp",
                        # A reaction, or WhatsApp's own notice (a new number), is recorded,
                        # but there is nothing to answer: it must not reopen a resolved
                        # conversation, start its clocks or wake the bot.
                        auto_reply=msg.get("type") in ("reaction", "system"),
                        moved_to=_moved_to(msg, wa_id),
                    )
                )

            def status(status: dict[str, Any]) -> None:
                errors = status.get("errors") or []
                # When it was delivered or read: Meta may send the callback much later (it
                # retries for days), and the receipt time would then say that.
                at = base.timestamp(status.get("timestamp"))
                events.statuses.append(
                    {
                        "external_id": str(status["id"]),
                        "status": _STATUSES.get(str(status.get("status")), "sent"),
                        "error": "; ".join(_error(e) for e in errors) or None,
                        "at": at.isoformat() if at else None,
                    }
                )

            events.each(value.get("messages", []), message)
            events.each(value.get("statuses", []), status)
    return events


# What every inbox of a Meta app (WhatsApp, Messenger, Instagram) checks its webhook with.
META_APP_SETTINGS = (
    base.Setting(
        "app_secret",
        "App secret",
        "secret",
        "Your Meta app's secret: every webhook call is checked against it.",
        needed=True,
    ),
    base.Setting(
        "verify_token",
        "Verify token",
        "secret",
        "Any text; give Meta the same when you set the webhook URL.",
        needed=True,
    ),
)


class WhatsAppChannel:
    name = "whatsapp"
    fields: tuple[base.Setting, ...] = (
        base.Setting(
            "phone_number_id",
            "Phone number ID",
            help="From WhatsApp Manager, API Setup: the number's id, not the number.",
            needed=True,
        ),
        base.Setting(
            "access_token",
            "Access token",
            "secret",
            "A system user's permanent token.",
            needed=True,
        ),
        *META_APP_SETTINGS,
        base.api_base_setting(DEFAULT_API),
        base.rate_setting(80),
    )
    secret_fields = base.secret_names(fields)
    sends_files = True
    consent_channel = ConsentChannel.whatsapp

    def media_refs(self, meta: dict[str, Any]) -> list[dict[str, Any]]:
        found = meta.get("media")
        return [found] if isinstance(found, dict) and found.get("id") else []

    def fetch_media(
        self, *, inbox: Any, secrets: dict[str, Any], ref: dict[str, Any], allow_private: bool
    ) -> media.Fetched:
        """Cloud API media: ``GET /{media-id}`` gives a short-lived URL, fetched with the
        same bearer token."""
        api = str(inbox.settings.get("api_base_url") or DEFAULT_API).rstrip("/")
        auth = {"Authorization": f"Bearer {secrets.get('access_token', '')}"}
        info = outbound.request(
            "GET", f"{api}/{ref['id']}", allow_private=allow_private, headers=auth, timeout=20
        )
        info.raise_for_status()
        described = info.json()
        data, _ = media.download(str(described["url"]), allow_private=allow_private, headers=auth)
        content_type = str(described.get("mime_type") or ref.get("mime_type") or "")
        name = media.filename_for(f"whatsapp-{ref['id']}", content_type, ref.get("filename"))
        return media.Fetched(name, content_type, data)

    def verify(self, *, secrets: dict[str, Any], request: base.WebhookRequest) -> bool:
        return valid_signature(
            base.secret(secrets, "app_secret"),
            request.body,
            request.headers.get("x-hub-signature-256"),
        )

    def parse(self, request: base.WebhookRequest, *, inbox: Any) -> base.WebhookEvents:
        return parse(json.loads(request.body), inbox=inbox)

    # What tells the numbers of one Meta app apart (``accounts``; the webhook router).
    account_key = "phone_number_id"

    def accounts(self, request: base.WebhookRequest) -> set[str]:
        """The numbers (``phone_number_id``) a call has events for; none if unreadable."""
        try:
            payload = json.loads(request.body)
            return {
                str(change["value"]["metadata"]["phone_number_id"])
                for entry in payload.get("entry", [])
                for change in entry.get("changes", [])
                if ((change.get("value") or {}).get("metadata") or {}).get("phone_number_id")
            }
        except (ValueError, KeyError, TypeError, AttributeError):
            return set()

    def check_reply(
        self,
        *,
        last_inbound_at: datetime | None,
        now: datetime,
        template: bool,
        automatic: bool = False,
    ) -> str | None:
        """Why a reply may not be sent now (None when it may); a person's and an
        ``automatic`` one alike."""
        if template:
            return None
        if last_inbound_at is None or now - last_inbound_at > WINDOW:
            return (
                "the customer has not written in the last 24 hours: WhatsApp only allows an "
                "approved template message outside the customer-service window"
            )
        return None

    def recipient(self, to: base.Addressee) -> str:
        # After a change of number the customer has both: the newest is the one they use.
        found = to.handle(IdentityKind.whatsapp)
        if not found:
            raise base.NoRecipient("the customer has no WhatsApp number")
        return found

    def send(self, out: base.Outbound) -> base.SendResult:
        settings = out.inbox.settings
        phone_number_id = settings.get("phone_number_id")
        token = out.secrets.get("access_token")
        if not phone_number_id or not token:
            raise base.DeliveryError(
                "the inbox is missing phone_number_id or access_token", permanent=True
            )
        to = self.recipient(out)
        api = str(settings.get("api_base_url") or DEFAULT_API).rstrip("/")
        url = f"{api}/{phone_number_id}/messages"
        envelope: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
        }

        def post(body: dict[str, Any]) -> str | None:
            return _post(url, str(token), envelope | body, out.allow_private)

        template = out.message.meta.get("template")
        if template:
            return base.SendResult(external_id=post({"type": "template", "template": template}))

        def text(piece: str) -> str | None:
            return post({"type": "text", "text": {"preview_url": False, "body": piece}})

        ids = base.send_parts(
            out, base.file_parts(out, text, lambda f: post(media_body(f)), limit=TEXT_MAX)
        )
        # The last part's id stands for the message: WhatsApp fetches a file after accepting
        # it, so a file that cannot be fetched fails by status callback, on that id.
        return base.SendResult(external_id=ids[-1] or None, meta=base.parts_meta(ids))


# The longest text body WhatsApp takes: a longer reply goes as several messages.
TEXT_MAX = 4096
# What WhatsApp shows inline (anything else goes as a document, which it takes in any type;
# so does an image over WhatsApp's 5 MB for images).
IMAGE_MAX = 5 * 1024 * 1024
_IMAGE = {"image/jpeg", "image/png"}
_VIDEO = {"video/mp4", "video/3gpp"}
_AUDIO = {"audio/aac", "audio/amr", "audio/mpeg", "audio/mp4", "audio/ogg"}


def media_body(f: base.OutboundFile) -> dict[str, Any]:
    """A media message by ``link``: WhatsApp fetches the file from our signed URL. (Uploading
    to ``/media`` first would cost a call and a media id to keep; a link is the same
    mechanism every other channel uses, and is fetched fresh on each retry.)"""
    if f.content_type in _IMAGE and f.size <= IMAGE_MAX:
        return {"type": "image", "image": {"link": f.url}}
    if f.content_type in _VIDEO:
        return {"type": "video", "video": {"link": f.url}}
    if f.content_type in _AUDIO:
        return {"type": "audio", "audio": {"link": f.url}}
    return {"type": "document", "document": {"link": f.url, "filename": f.filename}}


def _post(url: str, token: str, body: dict[str, Any], allow_private: bool) -> str | None:
    """One call to the messages endpoint; the new message's id."""
    try:
        resp = outbound.request(
            "POST",
            url,
            allow_private=allow_private,
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=20,
        )
    except httpx.HTTPError as exc:
        raise base.DeliveryError(f"WhatsApp unreachable: {type(exc).__name__}") from exc
    if resp.status_code == 429 or resp.status_code >= 500:
        raise base.DeliveryError(f"WhatsApp answered {resp.status_code}")
    if resp.status_code >= 400:
        err = graph_error(resp)
        reason = f"{err.get('code')}: {err.get('message')}" if err else resp.text[:200]
        raise base.DeliveryError(
            f"WhatsApp refused the message ({reason})",
            permanent=not transient(err),
            account=refuses_account(resp.status_code, err),
        )
    ids = [m.get("id") for m in resp.json().get("messages", [])]
    return str(ids[0]) if ids and ids[0] else None


CHANNEL = base.register(WhatsAppChannel())
