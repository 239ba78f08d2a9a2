"""Twilio: SMS (``twilio_sms``) and voice (``twilio_voice``).

Webhooks are form posts signed with ``X-Twilio-Signature``: base64 HMAC-SHA1, keyed with
the auth token, over the full URL Twilio called followed by every POST parameter name and
value, sorted by name.
"""

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit
from xml.sax.saxutils import escape

import httpx

from rapport import outbound
from rapport.channels import base, media
from rapport.crypto import same
from rapport.customers.identity import InvalidHandle, handle
from rapport.customers.models import ConsentChannel, IdentityKind
from rapport.ingest import InboundMessage

DEFAULT_API = "https://api.twilio.com"
MAX_BODY = 1600  # Twilio's limit for one message; it splits longer ones into segments itself
MAX_MEDIA = 10  # MediaUrl values Twilio takes in one message
MMS_MAX_BYTES = 5 * 1024 * 1024  # all of one MMS's media together
_GSM7 = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "ÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà^{}\\[~]|€"
)
_STATUS = {
    "queued": "sent",
    "sending": "sent",
    "sent": "sent",
    "delivered": "delivered",
    "read": "read",
    "undelivered": "failed",
    "failed": "failed",
}


# The delivery errors a status callback most often names, in Twilio's words: the code
# alone told an agent nothing (anything else is named by its code and its page).
_ERRORS = {
    "30001": "Queue overflow",
    "30002": "Account suspended",
    "30003": "Unreachable destination handset",
    "30004": "Message blocked",
    "30005": "Unknown destination handset",
    "30006": "Landline or unreachable carrier",
    "30007": "Message filtered",
    "30008": "Unknown error",
    "21610": "Attempt to send to unsubscribed recipient",
}


# Twilio's refusal of a send to a number that opted out at Twilio.
UNSUBSCRIBED = "21610"


def _json(resp: httpx.Response) -> dict[str, Any]:
    """A Twilio error answer's JSON body, or {} for anything else (an HTML error page)."""
    try:
        body = resp.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _error(code: str) -> str:
    if not code.isdigit():
        return f"Twilio error {code}"
    title = _ERRORS.get(code)
    page = f"https://www.twilio.com/docs/api/errors/{code}"
    return f"Twilio error {code}: {title} ({page})" if title else f"Twilio error {code} ({page})"


def _done_date(value: str | None) -> str | None:
    """The carrier's time of a delivery receipt (``RawDlrDoneDate``: YYMMDDhhmm), as an ISO
    time with no offset: the carrier's wall clock, in a zone Twilio says varies from carrier
    to carrier (``update_delivery`` takes it only where one UTC offset fits the message).
    None when it is none (absent, not ten digits, no such day)."""
    if not value or len(value) != 10 or not value.isascii() or not value.isdigit():
        return None
    at = f"20{value[:2]}-{value[2:4]}-{value[4:6]}T{value[6:8]}:{value[8:]}"
    try:
        datetime.fromisoformat(at)
    except ValueError:
        return None
    return at


def signature(
    auth_token: str | bytes, url: str, params: Mapping[str, str] | Iterable[tuple[str, str]]
) -> str:
    """Twilio's ``X-Twilio-Signature``: HMAC-SHA1 of the URL it called, then each parameter
    name (sorted) followed by each of its values (sorted: a name may come more than once)."""
    pairs = params.items() if isinstance(params, Mapping) else params
    values: dict[str, set[str]] = {}
    for name, value in pairs:
        values.setdefault(name, set()).add(value)
    data = url + "".join(f"{k}{v}" for k in sorted(values) for v in sorted(values[k]))
    key = auth_token.encode() if isinstance(auth_token, str) else auth_token
    digest = hmac.new(key, data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


# GSM-7's extension table: each of these takes two septets (an escape, then the character).
_GSM7_EXTENDED = frozenset("^{}\\[~]|€\f")


def segments(text: str) -> tuple[str, int]:
    """(encoding, number of SMS segments): GSM-7 fits 160 septets (153 when split), UCS-2
    70 units (67)."""
    if all(ch in _GSM7 or ch in _GSM7_EXTENDED for ch in text):
        septets = len(text) + sum(ch in _GSM7_EXTENDED for ch in text)
        return "GSM-7", 1 if septets <= 160 else -(-septets // 153)
    units = len(text.encode("utf-16-le")) // 2
    return "UCS-2", 1 if units <= 70 else -(-units // 67)


def _verify(secrets: dict[str, Any], request: base.WebhookRequest) -> bool:
    token = base.secret(secrets, "auth_token")
    given = request.headers.get("x-twilio-signature")
    if not token or not given:
        return False
    return any(same(given, signature(token, url, request.pairs)) for url in _urls(request.url))


def _urls(url: str) -> list[str]:
    """The URL Twilio called, as it may have signed it: Twilio signs some requests with the
    port and some without (a TwiML request and a status callback of the same URL differ,
    on a non-standard port too), and its own libraries accept either; so does Rapport."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:  # not a port: the URL as it is
        return [url]
    host = parts.netloc.rsplit(":", 1)[0] if port is not None else parts.netloc
    port = port or {"https": 443, "http": 80}.get(parts.scheme)
    forms = [host] if port is None else [host, f"{host}:{port}"]
    return [url, *(urlunsplit(parts._replace(netloc=f)) for f in forms if f != parts.netloc)]


# Twilio's default opt-out keywords on a long code, the whole message in any case: it
# blocks the number on each, even one that answered an agent's question ("Cancel"), so
# every reply after it would fail (error 21610). Its opt-in keywords are START, UNSTOP and
# YES; YES counts only when Twilio says so (``OptOutType``): as an answer ("yes, that
# works") it would grant every SMS purpose, marketing too, and silence the message.
_STOP = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"})
_START = frozenset({"START", "UNSTOP"})


def _keyword(form: dict[str, str]) -> str | None:
    """``STOP`` or ``START`` when the message is an opt-out or opt-in keyword Twilio acted
    on, else None (``HELP`` stays a message: the customer may want a person)."""
    given = form.get("OptOutType", "").upper()
    if given in ("STOP", "START"):
        return given
    body = form.get("Body", "").strip().upper()
    return "STOP" if body in _STOP else "START" if body in _START else None


def _phone(raw: str) -> list[Any]:
    try:
        return [handle(IdentityKind.phone, raw)]
    except InvalidHandle:
        return [handle(IdentityKind.external, f"twilio:{raw}")]


# What both Twilio channels need: the account and the number it receives on.
_ACCOUNT = (
    base.Setting("account_sid", "Account SID", help="From the Twilio console: AC...", needed=True),
    base.Setting(
        "auth_token",
        "Auth token",
        "secret",
        "The account's auth token: it checks every webhook call's X-Twilio-Signature.",
        needed=True,
    ),
    base.Setting(
        "phone_number",
        "Phone number",
        "phone",
        "Your Twilio number, in international form (+1 415 555 0100).",
        needed=True,
    ),
    base.api_base_setting(DEFAULT_API),
)


class TwilioSms:
    name = "twilio_sms"
    fields: tuple[base.Setting, ...] = (*_ACCOUNT, base.rate_setting(1))
    secret_fields = base.secret_names(fields)
    sends_files = True
    consent_channel = ConsentChannel.sms

    def media_refs(self, meta: dict[str, Any]) -> list[dict[str, Any]]:
        items = (meta.get("sms") or {}).get("media") or []
        return [dict(m, n=n) for n, m in enumerate(items) if isinstance(m, dict) and m.get("url")]

    def fetch_media(
        self, *, inbox: Any, secrets: dict[str, Any], ref: dict[str, Any], allow_private: bool
    ) -> media.Fetched:
        """MMS media URLs, fetched with the account's credentials (HTTP basic auth)."""
        auth = (str(inbox.settings.get("account_sid", "")), str(secrets.get("auth_token", "")))
        data, _ = media.download(str(ref["url"]), allow_private=allow_private, auth=auth)
        content_type = str(ref.get("content_type") or "")
        return media.Fetched(
            media.filename_for(f"mms-{ref['n']}", content_type), content_type, data
        )

    # Twilio expects TwiML back; an empty response sends nothing to the customer.
    webhook_answer = ('<?xml version="1.0" encoding="UTF-8"?><Response></Response>', "text/xml")

    def verify(self, *, secrets: dict[str, Any], request: base.WebhookRequest) -> bool:
        return _verify(secrets, request)

    def parse(self, request: base.WebhookRequest, *, inbox: Any) -> base.WebhookEvents:
        inbox_id = inbox.id
        f = request.form
        if "MessageStatus" in f and "Body" not in f:
            status = _STATUS.get(f["MessageStatus"], "sent")
            error = _error(f["ErrorCode"]) if f.get("ErrorCode") else None
            report = {"external_id": f["MessageSid"], "status": status, "error": error}
            # Delivered or undelivered, the carrier may say when (to the minute).
            return base.WebhookEvents(
                statuses=[report | {"at": _done_date(f.get("RawDlrDoneDate"))}]
            )
        media = [
            {"url": f.get(f"MediaUrl{i}"), "content_type": f.get(f"MediaContentType{i}")}
            for i in range(int(f.get("NumMedia", "0") or 0))
        ]
        text = f.get("Body", "") or ("[media]" if media else "")
        sms: dict[str, Any] = {"to": f.get("To"), "media": media}
        keyword = _keyword(f)
        consent = None
        if keyword:
            sms["opt_out" if keyword == "STOP" else "opt_in"] = True
            # Twilio now refuses (or sends again) every message from this number to the
            # customer: their SMS consent says so, named by the word they sent.
            word = f.get("Body", "").strip() or keyword
            consent = (ConsentChannel.sms, word, keyword == "START")
        return base.WebhookEvents(
            messages=[
                InboundMessage(
                    inbox_id=inbox_id,
                    external_id=f["MessageSid"],
                    handles=_phone(f["From"]),
                    text=text,
                    meta={"sms": sms},
                    expect_channel="twilio_sms",
                    # Twilio itself answers these and blocks (or unblocks) the number: there
                    # is nothing for an agent or the bot to answer, and a STOP must not
                    # reopen a conversation to wait for a reply that can no longer be sent.
                    auto_reply=keyword is not None,
                    consent_keyword=consent,
                )
            ]
        )

    def check_files(self, files: list[tuple[str, str, int]]) -> str | None:
        """Why these files cannot go as one MMS (None when they can)."""
        if len(files) > MAX_MEDIA:
            return f"an MMS carries at most {MAX_MEDIA} files"
        total = sum(size for *_, size in files)
        if total > MMS_MAX_BYTES:
            return (
                f"an MMS carries at most {MMS_MAX_BYTES // (1024 * 1024)} MB of files in all; "
                f"these are {total / (1024 * 1024):.1f} MB"
            )
        return None

    def recipient(self, to: base.Addressee) -> str:
        found = to.customer.phone or to.handle(IdentityKind.phone)
        if not found:
            raise base.NoRecipient("the customer has no phone number")
        return found

    def send(self, out: base.Outbound) -> base.SendResult:
        settings = out.inbox.settings
        sid, token = settings.get("account_sid"), out.secrets.get("auth_token")
        if not sid or not token or not settings.get("phone_number"):
            raise base.DeliveryError(
                "the inbox is missing account_sid, auth_token or phone_number", permanent=True
            )
        to = self.recipient(out)
        api = str(settings.get("api_base_url") or DEFAULT_API).rstrip("/")
        text = out.message.text
        # Longer than Twilio takes in one message (an emoji counts twice): send it as
        # consecutive messages. Files go as MMS media (``MediaUrl``, up to ten, fetched by
        # Twilio from our signed links) with the first of them; a reply of files alone is
        # one MMS without a body.
        parts = base.text_pieces(text, MAX_BODY) or [""]
        media = [f.url for f in out.files][:MAX_MEDIA]

        def post(n: int, part: str) -> str:
            form: dict[str, str | list[str]] = {"From": str(settings["phone_number"]), "To": to}
            if part:
                form["Body"] = part
            if n == 0 and media:
                form["MediaUrl"] = media  # the parameter repeated, once per file
            if out.public_url:
                form["StatusCallback"] = (
                    f"{out.public_url.rstrip('/')}/webhooks/twilio_sms/{out.inbox.id}"
                )
            try:
                resp = outbound.request(
                    "POST",
                    f"{api}/2010-04-01/Accounts/{sid}/Messages.json",
                    allow_private=out.allow_private,
                    data=form,
                    auth=(str(sid), str(token)),
                    timeout=20,
                )
            except httpx.HTTPError as exc:
                raise base.DeliveryError(f"Twilio unreachable: {type(exc).__name__}") from exc
            if resp.status_code == 429 or resp.status_code >= 500:
                raise base.DeliveryError(f"Twilio answered {resp.status_code}")
            if resp.status_code >= 400:
                body = _json(resp)
                detail = body.get("message") or resp.text[:200] or resp.status_code
                code = str(body.get("code") or "")
                raise base.DeliveryError(
                    f"Twilio refused the message: {detail}",
                    permanent=True,
                    # 401 (Twilio's 20003): the account SID or auth token is not taken.
                    account=resp.status_code == 401,
                    # The number replied STOP (or another opt-out word) at some time: Twilio
                    # blocks every message to it until it sends START.
                    opted_out=f"Twilio (error {code}: {_ERRORS[code]})"
                    if code == UNSUBSCRIBED
                    else None,
                )
            return str(resp.json()["sid"])

        sids = base.send_parts(
            out,
            [
                (f"sms:{n}", f"part {n + 1}", lambda n=n, part=part: post(n, part))  # type: ignore[misc]
                for n, part in enumerate(parts)
            ],
        )
        encoding, count = segments(text)
        meta: dict[str, Any] = {"sids": sids, "encoding": encoding, "segments": count}
        if media:
            meta["media"] = len(media)
        return base.SendResult(external_id=sids[0], meta=meta)


_GREETING = "Thank you for calling. Please leave a message after the tone."
_EMPTY = ('<?xml version="1.0" encoding="UTF-8"?><Response></Response>', "text/xml")


def _twiml(verbs: str) -> str:
    return f'<?xml version="1.0" encoding="UTF-8"?><Response>{verbs}</Response>'


class TwilioVoice:
    """Calls become conversation entries: direction, duration, recording and transcript."""

    name = "twilio_voice"
    fields: tuple[base.Setting, ...] = (
        *_ACCOUNT,
        base.Setting(
            "forward_to",
            "Forward calls to",
            "phones",
            "Numbers rung first, comma-separated; the voicemail answers when nobody takes "
            "the call there.",
        ),
        base.Setting("ring_seconds", "Ring for (seconds)", "number", default=20, low=5, high=60),
        base.Setting("greeting", "Voicemail greeting", default=_GREETING),
        base.Setting(
            "language",
            "Greeting language",
            help="The voice's language, as Twilio names it (en-US, fr-FR, de-DE...).",
            default="en-US",
        ),
        base.Setting(
            "voicemail_seconds",
            "Longest voicemail (seconds)",
            "number",
            default=120,
            low=5,
            high=600,
        ),
        base.rate_setting(1),
    )
    secret_fields = base.secret_names(fields)

    def answer_for(self, inbox: Any, request: base.WebhookRequest) -> tuple[str, str]:
        """What the caller hears, from the inbox's settings: ``forward_to`` (a number or
        several, comma-separated: rung first, for ``ring_seconds``), then, when nobody
        took the call, ``greeting`` and a voicemail of up to ``voicemail_seconds``
        (transcribed), in ``language``. Status callbacks (the call already answered or
        over) get an empty response."""
        settings = inbox.settings or {}
        form = request.form
        if form.get("RecordingUrl") or form.get("DialCallStatus") in ("completed", "answered"):
            return _EMPTY  # a message was left, or someone took the call: nothing to add
        # The forwarded numbers were rung (``<Dial action>``) and nobody answered: the
        # caller, still on the line, is in the call ("in-progress").
        unanswered = "DialCallStatus" in form
        live = ("ringing", "queued", "in-progress") if unanswered else ("ringing", "queued")
        if form.get("CallStatus") not in (None, "", *live):
            return _EMPTY
        # Twilio posts a transcript only to a transcribeCallback, and what became of the
        # forwarding only to a Dial action: both are this same webhook.
        callback = escape(request.url, {'"': "&quot;"})
        numbers = [n.strip() for n in str(settings.get("forward_to") or "").split(",") if n.strip()]
        if numbers and not unanswered:
            # With an action, Twilio asks again once the forwarded call is over; without
            # one it went on to the voicemail even after someone had answered and hung up.
            ring = max(5, min(int(base.setting(self.name, settings, "ring_seconds")), 60))
            dialled = "".join(f"<Number>{escape(n)}</Number>" for n in numbers[:10])
            dial = f'<Dial action="{callback}" timeout="{ring}" answerOnBridge="true">'
            return _twiml(f"{dial}{dialled}</Dial>"), "text/xml"
        language = escape(str(base.setting(self.name, settings, "language")), {'"': "&quot;"})
        greeting = escape(str(base.setting(self.name, settings, "greeting")))
        seconds = max(5, min(int(base.setting(self.name, settings, "voicemail_seconds")), 600))
        return _twiml(
            f'<Say language="{language}">{greeting}</Say>'
            f'<Record maxLength="{seconds}" transcribe="true" transcribeCallback="{callback}"/>'
        ), "text/xml"

    def verify(self, *, secrets: dict[str, Any], request: base.WebhookRequest) -> bool:
        return _verify(secrets, request)

    def parse(self, request: base.WebhookRequest, *, inbox: Any) -> base.WebhookEvents:
        inbox_id = inbox.id
        f = request.form
        status = f.get("CallStatus", "")
        # What became of the forwarding (the Dial's action): its own status and length.
        dialled = f.get("DialCallStatus", "")
        caller = (
            f.get("From", "") if f.get("Direction", "inbound") == "inbound" else f.get("To", "")
        )
        call = {
            "sid": f["CallSid"],
            "direction": f.get("Direction", "inbound"),
            "status": status,
            "duration_seconds": int(
                f.get("CallDuration")
                or f.get("DialCallDuration")
                or f.get("RecordingDuration")
                or 0
            ),
            "recording_url": f.get("RecordingUrl"),
            "transcript": f.get("TranscriptionText"),
        }
        missed = ("no-answer", "busy", "failed", "canceled")
        if f.get("TranscriptionText"):
            text, suffix = f"[call transcript] {f['TranscriptionText']}", "transcript"
        elif f.get("RecordingUrl"):
            text, suffix = f"[voicemail] {f['RecordingUrl']}", "recording"
        elif status in missed or (dialled in missed and status == "completed"):
            # The caller hung up while the forwarded numbers rang: nobody spoke to them.
            text, suffix = "[missed call] please call back", "missed"
        elif status == "completed" or dialled in ("completed", "answered"):
            text, suffix = f"[call] {call['duration_seconds']} s", "completed"
        else:
            return base.WebhookEvents()  # ringing, in-progress: nothing to record yet
        return base.WebhookEvents(
            messages=[
                InboundMessage(
                    inbox_id=inbox_id,
                    external_id=f"{f['CallSid']}:{suffix}",
                    handles=_phone(caller),
                    text=text,
                    meta={"call": call},
                    expect_channel="twilio_voice",
                )
            ]
        )

    def recipient(self, to: base.Addressee) -> NoReturn:
        raise base.NoRecipient("a voice inbox cannot send text: call the customer back")

    def send(self, out: base.Outbound) -> base.SendResult:
        self.recipient(out)  # no text goes to anyone through a voice inbox


SMS = base.register(TwilioSms())
VOICE = base.register(TwilioVoice())
