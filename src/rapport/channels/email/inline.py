"""Images a mail shows in its own HTML (``<img src="cid:...">``: a pasted screenshot, a
signature's logo), shown from the attachments they were stored as.

A browser cannot load a ``cid:`` address: each names a part of the mail by its
Content-ID, which ``prepare_email`` keeps in ``meta.email.inline`` with the SHA-256 of the
part's bytes, the key its attachment row holds too (a merge that moves the message moves
its attachments, so the page builds each address when it draws the message)."""

import html as htmllib
import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import unquote

# As sanitize.clean_html writes an image's address: double-quoted, & as &amp;.
_CID_SRC = re.compile(r'(<img\b[^>]*?\bsrc=")cid:([^"]*)"', re.IGNORECASE)
# Content-IDs kept of one mail: a mail inlining thousands is not read for more.
MAX_INLINE = 100


class _Attachment(Protocol):
    id: str
    sha256: str


def content_ids(parts: Sequence[tuple[str | None, bytes]], digest: Any) -> dict[str, str]:
    """Each part's Content-ID and the SHA-256 of its bytes (``digest``: hashlib.sha256)."""
    out: dict[str, str] = {}
    for content_id, data in parts:
        if content_id and len(out) < MAX_INLINE:
            out[content_id.strip().strip("<>")] = digest(data).hexdigest()
    return out


def shown(
    markup: str,
    *,
    meta: Mapping[str, Any] | None,
    files: Sequence[_Attachment] | None,
    conversation_id: str,
    message_id: str,
    base_url: str = "",
) -> str:
    """The message's HTML with each ``cid:`` image it stored pointing at its attachment's
    download path, under ``base_url`` if given (the API's absolute links; the agent's page
    keeps the path, on its own origin); an image of no stored part keeps its address (shown
    as missing, as before)."""
    inline = ((meta or {}).get("email") or {}).get("inline") or {}
    if not inline or not files or "cid:" not in markup.lower():
        return markup
    by_digest = {f.sha256: f.id for f in files}
    base = f"{base_url}/api/v1/conversations/{conversation_id}/messages/{message_id}/attachments/"

    def address(m: re.Match[str]) -> str:
        named = unquote(htmllib.unescape(m.group(2))).strip().strip("<>")
        found = by_digest.get(str(inline.get(named) or ""))
        return f'{m.group(1)}{base}{found}"' if found else m.group(0)

    return _CID_SRC.sub(address, markup)
