"""Normalizing handles, so one address written three ways is one identity."""

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import idna
import phonenumbers

from rapport.customers.models import PAGE_SCOPED, Identity, IdentityKind
from rapport.db import without_nul


class InvalidHandle(ValueError):
    """A handle that cannot be normalized (not an email address, not a phone number...)."""


@dataclass(frozen=True)
class Handle:
    """One way to reach a customer, as a channel or an API client reported it."""

    kind: IdentityKind
    value: str
    # Proven by the channel itself (the customer wrote from it), rather than typed in a form.
    verified: bool = True


# One mailbox, nothing a header reads as several or as another: a list's comma, a group's
# colon and semicolon, angle brackets, quotes, a comment's parentheses, a backslash, a
# domain literal's brackets, a second @, a space or control character (a line break starts
# a header).
# Typed into the chat widget or a public event, "a@x.example,b@y.example" was stored as one
# address and became the To of the business's replies.
_NOT_IN_ADDRESS = re.compile(r'[\s,;:<>()\[\]"\\\x00-\x1f\x7f]')


def normalize_email(raw: str) -> str:
    """Trim, compose (NFC: "é" typed as one character or as "e" and an accent is one
    address), lower-case, and write the domain as DNS and mail carry it (``email_domain``).

    The local part is lower-cased too: RFC 5321 lets a server tell ``Ana@`` from ``ana@``,
    but no mail service people use does, and the same person writes both ways from two
    devices; kept as written, they were two customers.
    """
    value = unicodedata.normalize("NFC", raw.strip().strip("<>").strip())
    local, sep, domain = value.rpartition("@")
    domain = domain.strip(".")  # a root's dot ("example.com.") is the same domain
    labels = domain.split(".")
    unsafe = _NOT_IN_ADDRESS.search(value) or "@" in local
    if not sep or not local or unsafe or len(labels) < 2 or not all(labels):
        # "kim@...." was stored as the handle "kim@", "kim@.x" as "kim@x".
        raise InvalidHandle(f"not an email address: {raw!r}")
    return f"{local.lower()}@{email_domain(domain)}"


def email_domain(domain: str) -> str:
    """A domain as identities hold it: lower-cased ASCII, an internationalized label as
    its IDNA 2008 A-label (``faß.de`` is ``xn--fa-hia.de``), mapped as UTS #46 says
    (full-width letters, capitals). An ASCII label is kept as written, lower-cased (an
    ``xn--`` one too: it is what the sender's mail carried).

    Not Python's ``idna`` codec: that is IDNA 2003, which writes ``faß.de`` as ``fass.de``,
    another domain, another person's mailbox; and it took symbols IDNA 2008 refuses
    (``i❤.ws``), for which no mail system today looks up a domain."""
    if not domain.isascii():
        try:
            domain = idna.uts46_remap(domain, std3_rules=False, transitional=False)
        except idna.IDNAError as exc:
            raise InvalidHandle(f"not an email domain: {domain!r} ({exc})") from exc
    labels = domain.strip(".").split(".")
    out = []
    for label in labels:
        if label.isascii():
            if not 0 < len(label) < 64:
                raise InvalidHandle(f"not an email domain: {domain!r}")
            out.append(label.lower())
            continue
        try:
            out.append(idna.alabel(label).decode("ascii"))
        except idna.IDNAError as exc:
            raise InvalidHandle(f"not an email domain: {domain!r} ({exc})") from exc
    if len(out) < 2:
        raise InvalidHandle(f"not an email domain: {domain!r}")
    return ".".join(out)


# Parsing a number costs ~15 µs and the same customers write again and again (every
# WhatsApp or SMS message carries its sender's number): the answers are remembered.
@lru_cache(maxsize=8192)
def normalize_phone(raw: str, default_region: str = "US") -> str:
    """E.164 (``+14155550123``), reading national numbers in the workspace's region."""
    number = _parsed(raw, default_region)
    if not phonenumbers.is_possible_number(number):
        # A Mexican mobile written with the "1" Mexico dropped in 2019, as WhatsApp still
        # writes its users' ids (521…): the number their texts and calls come from lacks it.
        modern = _without_mexican_one(number)
        if modern is None:
            raise InvalidHandle(f"not a possible phone number: {raw!r}")
        number = modern
    return _e164(number)


def _parsed(raw: str, default_region: str) -> phonenumbers.PhoneNumber:
    value = raw.strip()
    if value.startswith("00"):
        value = "+" + value[2:]
    try:
        return phonenumbers.parse(value, None if value.startswith("+") else default_region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidHandle(f"not a phone number: {raw!r}") from exc


def _e164(number: phonenumbers.PhoneNumber) -> str:
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def _without_mexican_one(number: phonenumbers.PhoneNumber) -> phonenumbers.PhoneNumber | None:
    """The number without Mexico's old mobile "1" (+52 1 55… is +52 55…), None for any
    other number."""
    national = str(number.national_number)
    if number.country_code != 52 or len(national) != 11 or not national.startswith("1"):
        return None
    modern = phonenumbers.PhoneNumber(country_code=52, national_number=int(national[1:]))
    return modern if phonenumbers.is_valid_number(modern) else None


def _whatsapp_id(raw: str, default_region: str) -> str:
    """A WhatsApp id: its number's digits without the plus, as WhatsApp gives them (a
    Mexican mobile's with its old "1": the id replies are sent to)."""
    value = "+" + raw.strip().lstrip("+")
    phone = normalize_phone(value, default_region)  # refuses what is no number
    number = _parsed(value, default_region)
    as_given = _e164(number) if _without_mexican_one(number) is not None else phone
    return as_given.lstrip("+")


MAX_LENGTH = 320  # an identity's value, as stored; the longest email address there is


def normalize(kind: IdentityKind, raw: str, *, default_region: str = "US") -> str:
    """The normalized value of a handle of the given kind.

    Too long once normalized (an IDNA-encoded domain, a lower-cased ``İ``, grow) is an
    error, never cut: two long handles cut to one would make two people one customer."""
    # A NUL as the database keeps it (PostgreSQL cannot): a key looked up is a key stored.
    value = _normalized(kind, without_nul(raw), default_region)
    if len(value) > MAX_LENGTH:
        raise InvalidHandle(f"{kind.value} handles are at most {MAX_LENGTH} characters")
    return value


def _normalized(kind: IdentityKind, raw: str, default_region: str) -> str:
    if kind == IdentityKind.email:
        return normalize_email(raw)
    if kind == IdentityKind.phone:
        return normalize_phone(raw, default_region)
    if kind == IdentityKind.whatsapp:
        return _whatsapp_id(raw, default_region)
    value = raw.strip()
    if kind == IdentityKind.telegram:
        value = value if value.isdigit() else value.lstrip("@").strip().lower()
    if not value:
        raise InvalidHandle(f"empty {kind.value} handle")
    return value


def handle(kind: IdentityKind, raw: str, *, verified: bool = True, region: str = "US") -> Handle:
    return Handle(kind=kind, value=normalize(kind, raw, default_region=region), verified=verified)


_PAGE_KINDS = {k.value: k for k in PAGE_SCOPED}


def page_kind(channel: str) -> IdentityKind | None:
    """The kind of id an inbox of this channel issues for itself alone (Messenger's and
    Instagram's, whose channels bear the kind's name); None for every other channel."""
    return _PAGE_KINDS.get(channel)


def page_noun(kind: IdentityKind) -> str:
    """What issues ids of a page-scoped kind, as people call it."""
    return "Instagram account" if kind == IdentityKind.instagram else "page"


def issuer(h: Handle, *, channel: str, inbox_id: str) -> str | None:
    """The inbox that issued this handle, as it came through ``inbox_id``: that inbox, for
    a page-scoped id its own channel proved; None for any other (an id of another kind is
    the customer's everywhere, and one an API client names has no known page)."""
    return inbox_id if h.verified and page_kind(channel) == h.kind else None


def recipient(
    identities: Iterable[Identity], kind: IdentityKind, *, inbox_id: str
) -> Identity | None:
    """The customer's identity of this kind a send through ``inbox_id`` goes to: their
    newest (after a change of number, or a merge, they have several, and the newest is the
    one they took up last). A page-scoped id is only good at the page that issued it: those
    the inbox issued, else those of no known page (typed in, imported, stored before pages
    were recorded); one another page issued never, and then there is none."""
    found = [i for i in identities if i.kind == kind]
    if kind in PAGE_SCOPED:
        found = [i for i in found if i.inbox_id == inbox_id] or [
            i for i in found if i.inbox_id is None
        ]
    return max(found, key=lambda i: (i.created_at, i.id)) if found else None
