"""Sanitizing user-supplied HTML: what survives is safe to show in an agent's browser.

A message's remote images are held: an image on the sender's server is a tracking pixel as
often as a picture (it tells them when an agent opened the conversation, and from where),
so its address is kept in ``data-remote-src``, which no browser loads, until the agent
asks for the message's images (app.js). An image with a relative address would be asked of
Rapport itself, with the agent's cookies: dropped, as is any other scheme than ``cid:`` (a
mail's own parts, which the email channel points at their stored attachments)."""

import re
import secrets
from dataclasses import dataclass
from typing import Literal

import nh3

# Formatting that mail and chat clients send; no scripts, styles, forms or event handlers.
# Nothing else that loads an address (srcset, style's url(), <picture>, background,
# <video poster>, <input type=image>, SVG) is allowed at all: an image's src is the one.
_TAGS = {
    "a",
    "abbr",
    "b",
    "blockquote",
    "br",
    "code",
    "dd",
    "del",
    "div",
    "dl",
    "dt",
    "em",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "i",
    "img",
    "li",
    "ol",
    "p",
    "pre",
    "s",
    "small",
    "span",
    "strong",
    "sub",
    "sup",
    "table",
    "tbody",
    "td",
    "tfoot",
    "th",
    "thead",
    "tr",
    "u",
    "ul",
}
_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title", "width", "height"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan"},
}
_HELD_ATTRIBUTES = {**_ATTRIBUTES, "img": _ATTRIBUTES["img"] | {"data-remote-src"}}
_SCHEMES = {"http", "https", "mailto", "cid"}
# A browser drops tabs and line breaks anywhere in an address, and spaces and control
# characters at its ends: "ht\ttps://", " //host" are read as it reads them.
_IGNORED = re.compile(r"[\t\n\r]")
_ENDS = "".join(chr(c) for c in range(0x21))
_REMOTE = re.compile(r"^https?://[^/?#\\]", re.IGNORECASE)

Images = Literal["held", "shown"]


@dataclass(frozen=True)
class Cleaned:
    html: str
    held: int  # remote images not loaded until the agent asks


def clean_html(html: str, *, images: Images = "held") -> str:
    """Strip everything that could run or phone home; keep the formatting.

    ``images="shown"``: the business's own writing (a help-center article, a reply we
    send), whose images are shown as written."""
    if images == "shown":
        return nh3.clean(
            html,
            tags=_TAGS,
            attributes=_ATTRIBUTES,
            url_schemes=_SCHEMES,
            link_rel="noopener noreferrer nofollow",
            strip_comments=True,
        )
    return message_html(html).html


def message_html(html: str, *, own_images: str | None = None) -> Cleaned:
    """``html`` with its remote images held (``data-remote-src``, counted in ``held``),
    other images' addresses dropped but ``cid:`` and those under ``own_images`` (this
    message's attachments, as the page points a mail's ``cid:`` images at them). Sanitized
    HTML comes out the same: the page cleans every message again as it draws it, so one
    stored under older rules is held too."""
    # The filter cannot rename an attribute: a remote src comes out marked with a prefix
    # no sender can guess, and the mark is then turned into the attribute that holds it.
    mark = f"#{secrets.token_hex(16)}#"
    held = 0

    def keep(tag: str, attribute: str, value: str) -> str | None:
        nonlocal held
        if tag != "img" or attribute not in ("src", "data-remote-src"):
            return value
        url = _IGNORED.sub("", value).strip(_ENDS)
        if _REMOTE.match(url):
            held += 1
            # Shown over https alone (the pages' CSP), as a browser upgrades an image on
            # an https page anyway.
            return mark + ("https" + url[4:] if url[:5].lower() == "http:" else url)
        if attribute == "src" and url[:4].lower() == "cid:":
            return url
        if attribute == "src" and own_images and _own(url, own_images):
            return url
        return None

    cleaned = nh3.clean(
        html,
        tags=_TAGS,
        attributes=_HELD_ATTRIBUTES,
        url_schemes=_SCHEMES,
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
        attribute_filter=keep,
    )
    cleaned = cleaned.replace(f' src="{mark}', ' data-remote-src="')
    return Cleaned(
        html=cleaned.replace(f' data-remote-src="{mark}', ' data-remote-src="'), held=held
    )


def _own(url: str, prefix: str) -> bool:
    """``url`` is one of the files under ``prefix`` (an id, nothing else: no ``..``)."""
    return (
        url.startswith(prefix) and re.fullmatch(r"[A-Za-z0-9_-]+", url[len(prefix) :]) is not None
    )
