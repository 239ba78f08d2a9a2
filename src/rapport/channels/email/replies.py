"""What the customer actually wrote: quoted history and signatures stripped for display.

The full original is always kept; this only decides what the thread shows first. Quoted
history is recognised by the shapes mail clients give it (``>`` lines, "On ... wrote:" in
many languages, "-----Original Message-----", Outlook's From/Sent/To header block, quote
containers in HTML), signatures by the ``-- `` delimiter and the footers phones add.
"""

import re

from rapport.channels.email.parse import html_to_text

_WROTE = (
    r"wrote|sent|schrieb|a écrit|escribió|escribio|schreef|geschreven|ha scritto|escreveu|"
    r"napisał|skrev|kirjoitti|написал|написала|пишет|писал|yazdı|napsal|írta|έγραψε|כתב|"
    r"kirjutas|đã viết|viết"
)
_ON = r"On|Am|Le|El|Op|Il|Em|W dniu|Den|På|Dne|Dana|Quoting|В|Vào|Dňa|Dnia"
# "On <date>, <someone> wrote:" over up to three lines, perhaps dashed ("---- X wrote ----").
_ON_WROTE = re.compile(
    rf"(?:^|(?<=\s)|(?<=-))[ \t>-]*(?:(?:{_ON})\b[^\n]*?(?:\n[^\n]*?){{0,4}}?|[^\n]{{0,120}}?)"
    rf"\b(?:{_WROTE})\b[^\n]{{0,40}}?(?::|-{{2,}})[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)
# "2014-10-17 11:28 GMT+03:00 Someone <a@b.c>:", "26.06.2014, 14:41, "X" <a@b.c>:",
# "Thu, 26 Jun 2014 14:00:51 +0400 от X <a@b.c>:" (possibly over two lines).
_DATE_LINE = re.compile(
    r"^[ \t]*(?:\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}|(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]*,?\s+\d)"
    r"[^\n]*(?:\n[^\n]*)?@[^\n]*:[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)
_ORIGINAL = re.compile(
    r"^[ \t>]*(?:-{3,}[ \t]*(?:Original Message|Reply Message|Original|Antwort Nachricht|"
    r"Ursprüngliche Nachricht|Oprindelig meddelelse|Message d'origine|Mensaje original|"
    r"Messaggio originale|Исходное сообщение|Oorspronkelijk bericht|Alkuperäinen viesti|"
    r"Originalmeddelande|Opprinnelig melding|Původní zpráva|Wiadomość oryginalna)[ \t]*-{3,}"
    r"|_{20,})[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)
_FORWARD = re.compile(
    r"^[ \t]*(?:-{3,}[ \t]*(?:Forwarded message|Weitergeleitete Nachricht|Message transféré|"
    r"Mensaje reenviado)[ \t]*-{3,}|Begin forwarded message:)",
    re.IGNORECASE | re.MULTILINE,
)
_HEADER_FROM = re.compile(
    r"^[ \t]*\**(?:From|Von|De|Van|Da|От|Från|Fra|Od|Lähettäjä|Sender|Date|Sent|Datum)\**[ \t]*:",
    re.IGNORECASE,
)
_HEADER_FOLLOW = re.compile(
    r"^[ \t]*\**(?:Sent|Date|Datum|Gesendet|Envoyé|Enviado|Verzonden|Inviato|Отправлено|Sendt|"
    r"Skickat|Lähetetty|To|An|À|Para|Aan|A|Кому|Til|Till|Vastaanottaja|Subject|Betreff|Objet|"
    r"Asunto|Onderwerp|Oggetto|Тема|Emne|Ämne|Aihe|Cc|From|Von|De|Van|Fra|Från)\**[ \t]*:",
    re.IGNORECASE,
)
_FOOTER = re.compile(
    r"^[ \t]*(?:Sent from (?:my |Samsung|Mail for|Yahoo|Outlook|Windows)|Sent via |"
    r"Get Outlook for |Enviado desde mi |Envoyé de mon |Von meinem .* gesendet|"
    r"Verstuurd vanaf mijn |Отправлено с |Inviato da )",
    re.IGNORECASE,
)
_SIGNATURE = re.compile(r"^[ \t]*--[ \t]*$")
_QUOTED = re.compile(r"^[ \t]*>(?!.*<<<)")  # ">>> link <<<" is a marketing link, not a quote


def _link_fragment(line: str) -> bool:
    """A piece of a long quoted link that the sender's mailer wrapped without a ``>``."""
    stripped = line.strip()
    return " " not in stripped or "://" in stripped or stripped.endswith((") >", ")>"))


def _skip_quote(lines: list[str], k: int) -> int:
    """The index just past the ``>``-quoted block starting at ``k``."""
    while k < len(lines):
        if _QUOTED.match(lines[k]) or not lines[k].strip():
            k += 1
            continue
        nxt = next((j for j in range(k + 1, len(lines)) if lines[j].strip()), None)
        if _link_fragment(lines[k]) and nxt is not None and _QUOTED.match(lines[nxt]):
            k += 1
            continue
        break
    return k


def _header_block_at(lines: list[str], i: int) -> int:
    """The number of lines of an Outlook-style header block starting at ``i`` (0: none)."""
    if not _HEADER_FROM.match(lines[i]):
        return 0
    seen, j, headers = 0, i + 1, 1
    while j < len(lines) and seen < 4:
        line = lines[j]
        if line.strip():
            seen += 1
            if _HEADER_FOLLOW.match(line):
                headers += 1
        j += 1
    has_address = any("@" in line for line in lines[i:j]) or headers >= 3
    return j - i if headers >= 2 and (has_address or headers >= 3) else 0


def _splitters(text: str) -> dict[int, int]:
    """Line index -> number of lines of each quote header ("On ... wrote:", date lines...)."""
    found: dict[int, int] = {}
    for pattern in (_ON_WROTE, _DATE_LINE, _ORIGINAL):
        for m in pattern.finditer(text):
            first = text.count("\n", 0, m.start())
            last = text.count("\n", 0, max(m.end() - 1, m.start()))
            found.setdefault(first, last - first + 1)
    return found


def strip_text(text: str) -> str:
    """The visible reply of a plain-text message.

    Text before quoted history is kept; so is text between and after ``>``-quoted blocks
    (answers written inline or below a quote). History that is not ``>``-quoted (Outlook,
    "-----Original Message-----") ends the reply; a forwarded message is kept whole.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    forward = _FORWARD.search(text)
    tail = ""
    first_quote = min(
        (m.start() for p in (_ON_WROTE, _ORIGINAL) if (m := p.search(text))), default=None
    )
    if forward and (first_quote is None or forward.start() < first_quote):
        # Forwarded on purpose: what follows is content the customer wants us to see.
        text, tail = text[: forward.start()], text[forward.start() :]
    # A quote header glued to the end of the reply's last line: split it off.
    text = re.sub(
        rf"(?<=\S)[ \t-]*(?=-*[ \t]*(?:{_ON})\b[^\n]*\b(?:{_WROTE})\b[^\n]*:[ \t]*$)",
        "\n",
        text,
        flags=re.IGNORECASE | re.MULTILINE,
    )
    lines = text.split("\n")
    splitters = _splitters(text)
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        span = splitters.get(i) or _header_block_at(lines, i)
        if span:
            k = i + span
            while k < len(lines) and not lines[k].strip():
                k += 1
            if k < len(lines) and _QUOTED.match(lines[k]):
                i = _skip_quote(lines, k)
                continue
            break  # history that is not quoted runs to the end
        if _QUOTED.match(line):
            # The lines just above a quote ("Someone <a@b.c>", "... :") belong to it.
            while out and (not out[-1].strip() or "@" in out[-1] or out[-1].rstrip().endswith(":")):
                if out[-1].strip() and not ("@" in out[-1] or out[-1].rstrip().endswith(":")):
                    break
                out.pop()
            i = _skip_quote(lines, i)
            continue
        if _SIGNATURE.match(line) or _FOOTER.match(line):
            break
        out.append(line)
        i += 1
    visible = "\n".join(out).strip()
    if tail:
        visible = (visible + "\n\n" + tail.strip()).strip()
    return visible


# HTML containers that hold the quoted message, by the clients that make them.
_HTML_QUOTES = re.compile(
    r"(?is)<(blockquote)\b[^>]*>.*?</\1>"
    r"|<div[^>]*(?:gmail_quote|yahoo_quoted|moz-cite-prefix|divRplyFwdMsg|OLK_SRC_BODY_SECTION|"
    r"x_divRplyFwdMsg|ymail_android_signature|mail-quote|quote)[^>]*>.*$"
    r"|<hr[^>]*>.*$"
    r"|<div[^>]*border-top:\s*solid[^>]*>.*$"
    r"|<div[^>]*style=['\"][^'\"]*border:none;border-top:solid[^>]*>.*$"
)


def strip_html(markup: str) -> str:
    """The visible reply of an HTML message, as plain text."""
    without_quotes = _HTML_QUOTES.sub("", markup)
    return strip_text(html_to_text(without_quotes))


def visible_reply(text: str, html: str | None = None) -> str:
    """The reply to show first: from the text part when there is one, else from the HTML."""
    if text.strip():
        return strip_text(text)
    if html:
        return strip_html(html)
    return ""
