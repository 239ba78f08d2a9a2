"""Was an email really sent by the domain in its From? What a trusted mail server says.

Anyone can write any From address. The mail server that received the message for us
(Gmail, Microsoft 365, the company's own MX) checks SPF, DKIM and DMARC and writes what it
found in an ``Authentication-Results`` header (RFC 8601). Only the headers stamped by the
servers an inbox names in its ``trusted_authserv_ids`` setting are believed: anybody can
write such a header into a message, but a receiving server removes the ones that claim to
be its own. The topmost trusted header, written last on the way in, is read.

The verdict is DMARC's when the server reports one; otherwise an aligned pass of DKIM
(the signing domain) or SPF (the envelope sender's domain) is a pass, and anything else
is ``none``: nothing proves the sender, nothing disproves them either. Agents see a
failed check on the message; the customer it is filed under does not change, since
replies go to the real owner of the address whoever wrote.
"""

from functools import cache
from typing import Any

import authres
import authres.dmarc  # noqa: F401 - teaches the parser DMARC's result properties
from publicsuffixlist import PublicSuffixList


def domain_of(value: str) -> str:
    return value.rsplit("@", 1)[-1].strip().strip(">").lower()


@cache
def _suffixes() -> PublicSuffixList:
    return PublicSuffixList()  # the list shipped in the package: nothing is fetched


def organizational_domain(domain: str) -> str:
    """The domain registered under a public suffix (RFC 7489 3.2): ``shop.co.uk`` for
    ``news.shop.co.uk``, by the Public Suffix List. A public suffix itself, or what is no
    domain name, is its own."""
    return _suffixes().privatesuffix(domain) or domain.lower()


def aligned(domain: str, from_domain: str) -> bool:
    """DMARC's relaxed alignment: both domains belong to one organizational domain
    (``mail.shop.example`` and ``news.shop.example`` do; ``a.co.uk`` and ``b.co.uk`` not)."""
    return (
        bool(domain)
        and bool(from_domain)
        and organizational_domain(domain) == organizational_domain(from_domain)
    )


def _prop(result: Any, name: str) -> str:
    for p in result.properties:
        if p.name == name:
            return str(p.value or "")
    return ""


def check(headers: list[str], *, from_addr: str | None, trusted: set[str]) -> dict[str, Any] | None:
    """The trusted server's verdict on ``from_addr``'s domain (``result`` pass / fail /
    none, with what it reported), or ``None`` when no trusted server said anything."""
    if not from_addr or not trusted:
        return None
    wanted = {t.lower() for t in trusted}
    for value in headers:
        try:
            header = authres.AuthenticationResultsHeader.parse(f"Authentication-Results: {value}")
        except authres.AuthResError:
            continue  # unreadable: not evidence either way
        if str(header.authserv_id).lower() not in wanted:
            continue
        return _verdict(header, domain_of(from_addr))
    return None


def _verdict(header: Any, from_domain: str) -> dict[str, Any]:
    found: dict[str, str] = {}
    aligned_pass = False
    for r in header.results:
        method, result = str(r.method).lower(), str(r.result).lower()
        found.setdefault(method, result)
        if method == "dkim" and result == "pass":
            signer = _prop(r, "d") or domain_of(_prop(r, "i"))
            aligned_pass = aligned_pass or aligned(signer.lower(), from_domain)
        if method == "spf" and result == "pass":
            aligned_pass = aligned_pass or aligned(domain_of(_prop(r, "mailfrom")), from_domain)
    dmarc = found.get("dmarc")
    judged = next(
        (_prop(r, "from").lower() for r in header.results if str(r.method).lower() == "dmarc"),
        "",
    )
    if dmarc is not None and judged and judged != from_domain:
        # The server judged another author than the From we show (two parsers disagreeing
        # over a crafted header): its pass vouches for nobody here.
        dmarc = "fail"
    if dmarc == "pass" or (dmarc is None and aligned_pass):
        verdict = "pass"
    elif dmarc == "fail":
        verdict = "fail"
    else:
        verdict = "none"
    return {
        "result": verdict,
        "by": str(header.authserv_id),
        "domain": from_domain,
        "reported": {m: found[m] for m in ("dmarc", "spf", "dkim") if m in found},
    }
