"""Markdown to safe HTML, slugs, locales and plain-text excerpts for articles."""

import html
import re
import unicodedata

import nh3
from markdown_it import MarkdownIt

from rapport.problems import Invalid
from rapport.sanitize import clean_html

# CommonMark with tables and strikethrough; raw HTML in the source is shown as text, and
# nh3 still cleans what comes out, so a bug in either layer alone lets nothing through.
_md = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable(["table", "strikethrough"])
_LOCALE = re.compile(r"^[a-z]{2,3}(-[a-z0-9]{2,8})*$")


def markdown_to_html(source: str) -> str:
    """Render an article's Markdown and sanitize the result for any browser."""
    return clean_html(_md.render(source))


def plain_text(body_html: str) -> str:
    """The words of rendered HTML, one space between blocks: for search and excerpts."""
    spaced = re.sub(r"</(p|li|h\d|tr|td|th|pre|blockquote)>|<br\s*/?>", " ", body_html)
    text = html.unescape(nh3.clean(spaced, tags=set()))
    return re.sub(r"\s+", " ", text).strip()


def slugify(value: str, *, fallback: str) -> str:
    """A URL slug of ASCII letters, digits and dashes; ``fallback`` when nothing is left."""
    ascii_ = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_.lower()).strip("-")[:100].rstrip("-")
    return slug or fallback


def check_slug(value: str) -> str:
    slug = value.strip().lower()
    if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", slug) or len(slug) > 120:
        raise Invalid("a slug is lower-case letters, digits and single dashes")
    return slug


def normalize_locale(value: str) -> str:
    """``pt_BR``, ``pt-BR`` and ``pt-br`` are one locale, stored as ``pt-br``."""
    locale = value.strip().replace("_", "-").lower()
    if not _LOCALE.match(locale):
        raise Invalid(f"{value!r} is not a locale (use a language tag such as en or pt-br)")
    return locale


def accepted_locales(header: str | None) -> list[str]:
    """Locales of an Accept-Language header, most wanted first (``q=0`` ones dropped)."""
    found: list[tuple[float, int, str]] = []
    for n, part in enumerate((header or "").split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        m = re.search(r"q=([0-9.]+)", params)
        if m:
            try:
                q = float(m.group(1))
            except ValueError:
                continue
        tag = tag.strip().replace("_", "-").lower()
        if q > 0 and _LOCALE.match(tag):
            found.append((-q, n, tag))
    return [tag for _, _, tag in sorted(found)]
