"""Parsing real mail: whatever arrives is stored, with its body, and never raises.

The standard library's ``email`` package (``policy.default``) does the work; this module
adds what real mail needs on top: charsets that are wrong or unknown, headers that do not
parse, missing bodies, HTML-only messages, and the signals that a message is an
auto-reply or a bounce rather than a person writing.
"""

import codecs
import html as htmllib
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes, message_from_string, policy
from email.message import EmailMessage, Message
from email.utils import getaddresses, parseaddr, parsedate_to_datetime

from rapport.channels.email import tnef
from rapport.mail import one_line

# Names real mailers put in charset= that Python does not know, and what they mean.
_CHARSET_ALIASES = {
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "x-sjis": "shift_jis",
    "x-unknown": "latin-1",
    "unknown-8bit": "latin-1",
    "x-user-defined": "latin-1",
    "iso-8859-8-i": "iso-8859-8",
    "windows-874": "cp874",
    "utf8": "utf-8",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "cp-850": "cp850",
}
MAX_ATTACHMENT_BYTES = 25 * 1024 * 1024
MAX_TOTAL_ATTACHMENT_BYTES = 50 * 1024 * 1024


log = logging.getLogger(__name__)


@dataclass
class ParsedAttachment:
    filename: str
    content_type: str
    data: bytes
    inline: bool = False
    content_id: str | None = None


@dataclass
class ParsedEmail:
    message_id: str | None
    in_reply_to: list[str]
    references: list[str]
    subject: str
    from_name: str
    from_addr: str | None
    to: list[str]  # every address it was sent to: To and Cc
    date: datetime | None
    text: str
    html: str | None
    attachments: list[ParsedAttachment] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # attachments not stored, and why
    auto_reply: bool = False
    bounce_of: list[str] = field(default_factory=list)  # Message-IDs a bounce reports on
    # The recipients it says failed (RFC 3464: "Action: failed"), each as we sent to it
    # (Original-Recipient, else Final-Recipient); ``report_read``: it had recipients' blocks
    # to read (none failed: a delay or delivery notice, which fails nothing).
    bounced_to: list[str] = field(default_factory=list)
    report_read: bool = False
    problems: list[str] = field(default_factory=list)  # what was malformed
    # Authentication-Results header values, topmost (the last server's) first.
    authentication_results: list[str] = field(default_factory=list)
    cc: list[str] = field(default_factory=list)  # those of ``to`` it copied (Cc)


def _header(msg: Message, name: str, problems: list[str]) -> str:
    try:
        value = msg.get(name)
    except Exception as exc:  # a header policy.default cannot parse: its text as written
        problems.append(f"{name}: {type(exc).__name__}")
        value = next((v for k, v in msg.raw_items() if k.lower() == name.lower()), None)
    if value is None:
        return ""
    try:
        text = str(value).strip()
    except Exception:
        return ""
    if "\ufffd" in text:
        text = _eight_bit(msg, name) or text
    return text


def _eight_bit(msg: Message, name: str) -> str | None:
    """A header written in raw 8-bit bytes, read as UTF-8 when it is, else as Windows-1252
    (an old mailer's Latin-1): the parser reads such bytes as UTF-8 alone, and each
    accented letter of "René" became U+FFFD."""
    raw = next((v for k, v in msg.raw_items() if k.lower() == name.lower()), None)
    if not isinstance(raw, str):
        return None
    try:
        data = raw.encode("ascii", errors="surrogateescape")
    except UnicodeEncodeError:
        return None  # read as text already (message_from_string): nothing to read again
    try:
        return str(msg.policy.header_factory(name, _decode(data, None))).strip()  # type: ignore[attr-defined]
    except Exception:
        return None


_MSGID = re.compile(r"<[^<>\s]+>")


def _ids(value: str) -> list[str]:
    found = _MSGID.findall(value)
    if not found and value.strip() and " " not in value.strip():
        found = [f"<{value.strip().strip('<>')}>"]
    return found


def _decode(data: bytes, charset: str | None) -> str:
    names = []
    if charset:
        cs = charset.strip().strip('"').lower()
        names += [_CHARSET_ALIASES.get(cs, cs)]
    names += ["utf-8", "cp1252"]
    for name in names:
        try:
            codecs.lookup(name)
            return data.decode(name)
        except (LookupError, UnicodeDecodeError, ValueError):  # ValueError: a NUL in the name
            continue
    return data.decode("utf-8", errors="replace")


def _content(part: Message) -> str:
    """The text of a part, whatever its declared charset says."""
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        payload = None
    if payload is None:
        raw = part.get_payload()
        return raw if isinstance(raw, str) else ""
    if not isinstance(payload, bytes):
        return str(payload)
    return _decode(payload, part.get_content_charset())


def html_to_text(markup: str) -> str:
    """A readable plain-text rendering of HTML, for messages that have no text part."""
    text = re.sub(r"(?is)<(script|style|head)\b.*?</\1>", " ", markup)
    text = re.sub(r"(?i)<br\s*/?>", "\n", text)
    text = re.sub(r"(?i)</(p|div|tr|li|h[1-6]|blockquote)>", "\n", text)
    text = re.sub(r"(?s)<[^>]+>", "", text)
    text = htmllib.unescape(text)
    text = re.sub(r"[ \t\r\f\v]+", " ", text)
    return re.sub(r"\n\s*\n\s*\n+", "\n\n", text).strip()


_RESPONDER_HEADERS = (
    "X-Autoreply",
    "X-Autorespond",
    "X-Autoresponder",
    "X-Autogenerated",
    "X-AutoReply-From",
    "X-Mail-Autoreply",
)


def _is_auto(msg: Message, problems: list[str], from_addr: str | None) -> bool:
    auto = _header(msg, "Auto-Submitted", problems).lower()
    if auto and auto != "no":
        return True
    # Responders older than RFC 3834 each say it their own way (cPanel's and Plesk's
    # autoresponders, Outlook.com's, Yahoo's): any of these headers, whatever its value.
    if any(_header(msg, name, problems) for name in _RESPONDER_HEADERS):
        return True
    for name in ("Precedence", "X-Precedence"):
        if _header(msg, name, problems).lower() in ("bulk", "junk", "list", "auto_reply"):
            return True
    local = (from_addr or "").split("@")[0].lower()
    return local in ("mailer-daemon", "postmaster")


def parse(raw: bytes) -> ParsedEmail:
    """Everything Rapport keeps of one raw message. Never raises: a message it cannot read
    is kept as its text, flagged, rather than refused (a listener's 4xx over and over, then
    the sender's bounce) or left to stop a mailbox's polling."""
    try:
        return _parse(raw)
    except Exception as exc:
        log.warning("an email could not be parsed: kept as text", extra={"event": "email.unparsed"})
        text = raw.decode("utf-8", errors="replace")
        sender = re.search(rb"^From:[^\r\n]*?([\w.+'-]+@[\w-]+(?:\.[\w-]+)+)", raw, re.M | re.I)
        return ParsedEmail(
            message_id=None,
            in_reply_to=[],
            references=[],
            subject="",
            from_name="",
            from_addr=sender.group(1).decode("ascii", errors="replace") if sender else None,
            to=[],
            date=None,
            text=text,
            html=None,
            problems=[f"message: {type(exc).__name__}: not readable as email"],
        )


def _parse(raw: bytes) -> ParsedEmail:
    problems: list[str] = []
    try:
        msg: Message = message_from_bytes(raw, policy=policy.default)
    except Exception as exc:  # pragma: no cover - the parser itself is very forgiving
        problems.append(f"message: {type(exc).__name__}")
        msg = message_from_bytes(raw, policy=policy.compat32)
    from_value = one_line(_header(msg, "From", problems))
    from_name, parsed_addr = parseaddr(from_value)
    from_addr: str | None = parsed_addr
    if not from_addr or "@" not in from_addr:
        match = re.search(r"[\w.+'-]+@[\w-]+(\.[\w-]+)+", from_value)
        from_addr = match.group(0) if match else None
    to = [a for _, a in getaddresses([_header(msg, "To", problems)]) if "@" in a]
    cc = [a for _, a in getaddresses([_header(msg, "Cc", problems)]) if "@" in a]
    to += cc
    date = None
    try:
        date_value = _header(msg, "Date", problems)
        if date_value:
            date = parsedate_to_datetime(date_value)
            date = date.replace(tzinfo=UTC) if date.tzinfo is None else date.astimezone(UTC)
    except Exception:  # unreadable, or beyond what a datetime holds (year 9999 - 1 hour)
        problems.append("Date: unreadable")
    texts: list[str] = []
    htmls: list[str] = []
    attachments: list[ParsedAttachment] = []
    refused: list[str] = []
    bounce_of: list[str] = []
    total = 0
    is_report = msg.get_content_type() == "multipart/report"
    # Of reports, a delivery report alone says whether our mail arrived (a read receipt,
    # report-type disposition-notification, or an abuse report returns our headers too).
    is_dsn = is_report and str(msg.get_param("report-type") or "").lower() == "delivery-status"
    bounced_to: list[str] = []
    report_read = False
    returned: set[int] = set()  # the parts of a message a report returned whole
    # Text parts an HTML alternative says again: the HTML shown holds the others too.
    covered = _said_in_html(msg)
    shown: list[str] = []  # the HTML shown, part by part, in the message's order
    for part in msg.walk():
        if id(part) in returned:
            continue  # what we sent, not what the report says
        if is_dsn and part.get_content_type() == "message/delivery-status":
            read, failed = _failed_recipients(part)
            report_read, bounced_to = report_read or read, bounced_to + failed
        if is_dsn and part.get_content_type() == "message/rfc822":
            # The message it reports on, returned whole (Postfix, Exim): its Message-ID
            # names ours; its body is no part of the report's text.
            inner = part.get_payload(0) if part.is_multipart() else None
            if isinstance(inner, Message):
                bounce_of += _ids(_header(inner, "Message-ID", problems))
                returned |= {id(p) for p in inner.walk()}
            continue
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        try:
            disposition = (part.get_content_disposition() or "").lower()
        except Exception:
            disposition = ""
        try:
            filename = part.get_filename()
        except Exception:
            filename = None
        if is_dsn and ctype in ("text/rfc822-headers", "message/rfc822-headers"):
            inner = _content(part)
            for line in inner.splitlines():
                if line.lower().startswith("message-id:"):
                    bounce_of += _ids(line.split(":", 1)[1])
        if ctype == "text/plain" and disposition != "attachment" and not filename:
            texts.append(_content(part))
            if id(part) not in covered and texts[-1].strip():
                shown.append(_as_html(texts[-1]))
            continue
        if ctype == "text/html" and disposition != "attachment" and not filename:
            htmls.append(_content(part))
            shown.append(htmls[-1])
            continue
        if ctype == "message/delivery-status":
            continue
        try:
            data = part.get_payload(decode=True)
        except Exception:
            data = None
        if not isinstance(data, bytes):
            payload = part.get_payload()
            data = payload.encode() if isinstance(payload, str) else b""
        cid = part.get("Content-ID")
        found = [
            ParsedAttachment(
                filename=filename or f"attachment-{len(attachments) + 1}",
                content_type=ctype,
                data=data,
                inline=disposition == "inline" or bool(cid),
                content_id=str(cid).strip("<>") if cid else None,
            )
        ]
        if _is_tnef(ctype, filename, data):
            found = _unwrapped(found[0], problems)
        for att in found:
            size = len(att.data)
            if size > MAX_ATTACHMENT_BYTES or total + size > MAX_TOTAL_ATTACHMENT_BYTES:
                refused.append(
                    f"{att.filename} ({size:,} bytes) is over the size limit and was not stored"
                )
                continue
            total += size
            attachments.append(att)
    text = "\n\n".join(t for t in texts if t.strip())
    plain_bounce = not is_report and _plain_bounce(msg, problems, from_addr)
    if plain_bounce:
        # A bounce of the older kind (qmail; Exim unless told to report): plain text
        # quoting what came back, no report to read. Only one naming whom it failed for
        # counts: a warning that delivery goes on, a quarantine notice, names no one.
        returned_ids, bounced_to = _plain_bounce_of(msg, text, problems)
        bounce_of = returned_ids if bounced_to else []
        report_read = bool(bounced_to)
    # Only the HTML parts were shown: a plain-text mail forwarding an HTML one showed the
    # forwarded mail alone, and never what the customer wrote above it.
    html = "\n".join(shown) if htmls else None
    if not text.strip() and html:
        text = html_to_text(html)
    if not text.strip() and not html and not attachments:
        # No part we recognise: keep whatever the body holds rather than nothing.
        body = _content(msg) if not msg.is_multipart() else ""
        text = body
    # On one line: an encoded word may hide line breaks, which no header we write holds.
    subject = one_line(_header(msg, "Subject", problems))
    return ParsedEmail(
        message_id=next(iter(_ids(_header(msg, "Message-ID", problems))), None),
        in_reply_to=_ids(_header(msg, "In-Reply-To", problems)),
        references=_ids(_header(msg, "References", problems)),
        subject=subject,
        from_name=from_name,
        from_addr=from_addr,
        to=to,
        cc=cc,
        date=date,
        text=text,
        html=html,
        attachments=attachments,
        refused=refused,
        auto_reply=_is_auto(msg, problems, from_addr) or is_report or plain_bounce,
        bounce_of=bounce_of,
        bounced_to=bounced_to,
        report_read=report_read,
        problems=problems,
        authentication_results=_all(msg, "Authentication-Results"),
    )


def _is_tnef(ctype: str, filename: str | None, data: bytes) -> bool:
    """Outlook's winmail.dat: typed as TNEF, or named so (some servers retype it as
    application/octet-stream), and beginning as TNEF does."""
    named = (filename or "").strip().lower() == "winmail.dat"
    typed = ctype in ("application/ms-tnef", "application/vnd.ms-tnef")
    return (typed or named) and tnef.is_tnef(data)


def _unwrapped(wrapper: ParsedAttachment, problems: list[str]) -> list[ParsedAttachment]:
    """The files inside an Outlook winmail.dat, which agents cannot open; winmail.dat too
    when it holds more than files (an embedded message, an OLE object), and alone when it
    cannot be read whole (every file it holds is in it, and the original .eml)."""
    try:
        decoded = tnef.decode(wrapper.data)
    except tnef.Unreadable as exc:
        problems.append(f"{wrapper.filename}: TNEF not readable ({exc}): kept as it came")
        return [wrapper]
    except Exception:  # a mistake of ours must not lose the mail: kept as it came
        log.exception("winmail.dat could not be read", extra={"event": "email.tnef_failed"})
        problems.append(f"{wrapper.filename}: TNEF not readable: kept as it came")
        return [wrapper]
    files = [ParsedAttachment(f.filename, f.content_type, f.data) for f in decoded.files]
    return files if files and decoded.complete else [*files, wrapper]


def _said_in_html(msg: Message) -> set[int]:
    """The text/plain parts (by ``id``) of each multipart/alternative that has an HTML
    part: the same words, which the HTML shows."""
    covered: set[int] = set()
    for part in msg.walk():
        if part.get_content_type() != "multipart/alternative":
            continue
        inside = list(part.walk())
        if any(p.get_content_type() == "text/html" for p in inside):
            covered |= {id(p) for p in inside if p.get_content_type() == "text/plain"}
    return covered


def _as_html(text: str) -> str:
    """A text part shown among HTML ones: escaped, its lines kept."""
    lines = htmllib.escape(text.strip()).splitlines()
    return "<p>" + "<br>\n".join(lines) + "</p>"


def _failed_recipients(part: Message) -> tuple[bool, list[str]]:
    """Whether a delivery report's recipient blocks could be read, and those it says
    failed: each block with "Action: failed", by its Original-Recipient (the address we
    sent to; a forward makes the Final-Recipient another), else its Final-Recipient,
    "rfc822; addr" read as the address. One it cannot read names none and is not read (the
    bounce then counts for the whole message)."""
    found: list[str] = []
    read = False
    try:
        payload = part.get_payload()
        blocks: list[Message] = (
            # Not split into blocks by the parser: read as text.
            [message_from_string(b) for b in re.split(r"\r?\n\s*\r?\n", payload)]
            if isinstance(payload, str)
            else [b for b in payload if isinstance(b, Message)]
        )
        for block in blocks:
            action = str(block.get("Action", "")).strip().lower()
            if not action:
                continue  # the report's own block (Reporting-MTA), or none
            read = True
            if action != "failed":
                continue  # delayed, delivered, relayed, expanded
            named = str(block.get("Original-Recipient") or block.get("Final-Recipient") or "")
            address = named.partition(";")[2] if ";" in named else named
            if "@" in address:
                found.append(address.strip().strip("<>").lower())
    except Exception:  # a malformed report: as if it named no one
        return False, []
    return read, found


# qmail names each failed recipient on a line of its own: "<someone@example.org>:".
_QMAIL_RECIPIENT = re.compile(r"^<([^<>\s]+@[^<>\s]+)>:\s*$", re.MULTILINE)
_QUOTED_MESSAGE_ID = re.compile(r"^\s*Message-ID:\s*(<[^<>\s]+>)", re.IGNORECASE | re.MULTILINE)


def _plain_bounce(msg: Message, problems: list[str], from_addr: str | None) -> bool:
    """A mail server's bounce that is not a delivery report: from its mailer-daemon or
    postmaster, or with Exim's ``X-Failed-Recipients``; never one answering a mail (a
    person at postmaster@ replying, quoting our headers)."""
    if _header(msg, "In-Reply-To", problems) or _header(msg, "References", problems):
        return False
    local = (from_addr or "").split("@")[0].lower()
    return local in ("mailer-daemon", "postmaster") or bool(
        _header(msg, "X-Failed-Recipients", problems)
    )


def _plain_bounce_of(msg: Message, text: str, problems: list[str]) -> tuple[list[str], list[str]]:
    """The Message-IDs a plain bounce returns (in a returned message's headers, attached
    or quoted in its text; only ours will count) and the recipients it names as failed
    (Exim's ``X-Failed-Recipients``, qmail's "<address>:" lines); none named: it counts
    for the whole message."""
    ids: list[str] = []
    for part in msg.walk():
        if part.get_content_type() == "message/rfc822" and part.is_multipart():
            inner = part.get_payload(0)
            if isinstance(inner, Message):
                ids += _ids(_header(inner, "Message-ID", problems))
        elif part.get_content_type() in ("text/rfc822-headers", "message/rfc822-headers"):
            ids += [m.group(1) for m in _QUOTED_MESSAGE_ID.finditer(_content(part))]
    ids += [m.group(1) for m in _QUOTED_MESSAGE_ID.finditer(text)]
    failed = [
        a.lower()
        for _, a in getaddresses([_header(msg, "X-Failed-Recipients", problems)])
        if "@" in a
    ]
    failed += [m.group(1).lower() for m in _QMAIL_RECIPIENT.finditer(text)]
    return list(dict.fromkeys(ids)), list(dict.fromkeys(failed))


def _all(msg: Message, name: str) -> list[str]:
    """Every value of a header, in order, unfolded (as written: never parsed, so never
    failing)."""
    return [" ".join(str(v).split()) for k, v in msg.raw_items() if k.lower() == name.lower()]


__all__ = ["EmailMessage", "ParsedEmail", "html_to_text", "parse"]
