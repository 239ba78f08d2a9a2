"""SPF, DKIM and DMARC, checked by Rapport's own SMTP listener when it is the domain's mail
server (``RAPPORT_SMTP_CHECK_SENDERS``): the mail comes straight from the sender's server,
so the connecting address is the one SPF speaks of.

The listener writes what it found as an ``Authentication-Results`` header (RFC 8601) at
the top of the message, under its own name, and ``sender_auth`` reads it like the header of
any trusted server. SPF is ``pyspf``'s, DKIM ``dkimpy``'s; DMARC (RFC 7489) is ours: the
policy record of the From domain, else of its organizational domain (the one registered
under a public suffix: ``shop.co.uk`` for ``news.shop.co.uk``), and a pass when SPF or
DKIM passed for an aligned domain.

Every DNS question goes through ``lookup``; a name server that does not answer makes a
check ``temperror``, which proves nothing either way.
"""

import logging
import re
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from typing import Any

import dkim
import dns.exception
import dns.name
import dns.resolver
import spf

from rapport.channels.email.sender_auth import aligned, domain_of, organizational_domain

log = logging.getLogger(__name__)

TIMEOUT = 5.0
# One DNS answer as pyspf wants it: ((name, type), value).
Answer = tuple[tuple[str, str], Any]


def lookup(name: str, qtype: str, timeout: float = TIMEOUT) -> list[Answer]:
    """The records of one type at ``name`` (none if it has none); ``spf.TempError`` if the
    name servers could not be asked."""
    try:
        answers = dns.resolver.resolve(name, qtype, lifetime=timeout, raise_on_no_answer=False)
    except (
        dns.resolver.NXDOMAIN,
        dns.resolver.NoAnswer,
        # not a name that can have records
        dns.name.NameTooLong,
        dns.name.EmptyLabel,
        dns.name.LabelTooLong,
        UnicodeError,
    ):
        return []
    except (
        dns.exception.Timeout,
        dns.resolver.NoNameservers,
        dns.resolver.NoResolverConfiguration,
    ) as exc:
        raise spf.TempError(f"DNS {exc}") from exc
    out: list[Answer] = []
    for rdata in answers:
        value: Any
        if qtype in ("A", "AAAA"):
            value = rdata.address
        elif qtype == "MX":
            value = (rdata.preference, rdata.exchange)
        elif qtype == "PTR":
            value = rdata.target.to_text(True)
        else:  # TXT
            value = rdata.strings
        out.append(((name, qtype), value))
    return out


# pyspf asks its module-level lookup; it asks ours, so that one function answers every
# question (and tests can stand in for the DNS in one place).
spf.DNSLookup = lambda name, qtype, strict=True, timeout=TIMEOUT: lookup(name, qtype, timeout)


def txt(name: str) -> list[bytes]:
    """Each TXT record at ``name``, its strings joined."""
    return [b"".join(value) for _, value in lookup(name, "TXT")]


# What may stand for a domain in the header we write: a host name, nothing else. The values
# come from the sender (HELO, MAIL FROM, From, a signature's d=): anything else could write
# results of its own into our header.
_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*"
)


def _host(value: str) -> str:
    value = value.strip().lower().rstrip(".")
    return value if _HOSTNAME.fullmatch(value) else "unknown"


def authenticate(raw: bytes, *, ip: str, helo: str, mail_from: str, authserv_id: str) -> str:
    """What SPF, DKIM and DMARC say of a message received from ``ip``: the value of the
    ``Authentication-Results`` header to put on it. Never raises: what cannot be checked
    is a ``temperror`` or ``permerror``."""
    try:
        return f"{authserv_id}; " + "; ".join(_results(raw, ip=ip, helo=helo, mail_from=mail_from))
    except Exception:
        log.warning("sender checks failed", exc_info=True, extra={"event": "email.auth_error"})
        return f"{authserv_id}; spf=temperror; dkim=temperror; dmarc=temperror"


def _results(raw: bytes, *, ip: str, helo: str, mail_from: str) -> list[str]:
    spf_domain = _host(domain_of(mail_from) if "@" in mail_from else helo)
    spf_result = _spf(ip, mail_from or f"postmaster@{helo}", helo)
    signatures = [(_host(domain), result) for domain, result in _dkim(raw)]
    parts = [f"spf={spf_result} smtp.mailfrom={spf_domain}"]
    parts += [f"dkim={result} header.d={domain}" for domain, result in signatures] or ["dkim=none"]
    # DMARC judges the one author a message names (RFC 7489 6.6.1): several From headers,
    # or several addresses in one, cannot be judged, and fail.
    froms = BytesHeaderParser().parsebytes(raw).get_all("from", [])
    authors = [addr for _, addr in getaddresses(froms) if addr]
    if len(froms) != 1 or len(authors) != 1 or _host(domain_of(authors[0])) == "unknown":
        parts.append("dmarc=fail header.from=unknown")
        return parts
    from_domain = _host(domain_of(authors[0]))
    passed = (spf_result == "pass" and aligned(spf_domain, from_domain)) or any(
        result == "pass" and aligned(domain, from_domain) for domain, result in signatures
    )
    parts.append(f"dmarc={_dmarc(from_domain, passed)} header.from={from_domain}")
    return parts


def _spf(ip: str, mail_from: str, helo: str) -> str:
    try:
        result, _ = spf.check2(i=ip, s=mail_from, h=helo, querytime=TIMEOUT * 2)
    except Exception:  # a malformed address or record: nothing proven
        log.warning("spf check failed", exc_info=True, extra={"event": "email.spf_error"})
        return "temperror"
    return str(result)


def _dkim(raw: bytes) -> list[tuple[str, str]]:
    """(signing domain, pass / fail / temperror) for each DKIM signature, topmost first."""
    try:
        checker = dkim.DKIM(raw, timeout=int(TIMEOUT))
    except Exception:  # headers dkimpy cannot read: no signature it could check
        return []
    unanswered = False

    def key_record(name: bytes, timeout: float = TIMEOUT) -> bytes | None:
        nonlocal unanswered
        try:
            records = txt(name.decode().rstrip("."))
        except spf.TempError as exc:
            unanswered = True  # dkimpy reports this as a failed signature
            raise dkim.DnsTimeoutError(str(exc)) from exc
        return records[0] if records else None

    found: list[tuple[str, str]] = []
    signatures = sum(1 for name, _ in checker.headers if name.lower() == b"dkim-signature")
    for idx in range(min(signatures, 5)):
        checker.domain, unanswered = None, False
        try:
            result = "pass" if checker.verify(idx=idx, dnsfunc=key_record) else "fail"
        except Exception:  # a malformed signature or key: it proves nothing
            result = "fail"
        if unanswered:
            result = "temperror"
        signer = checker.domain
        domain = signer.decode("ascii", "replace") if isinstance(signer, bytes) else "unknown"
        found.append((domain.lower(), result))
    return found


def _dmarc(from_domain: str, passed: bool) -> str:
    """pass / fail when the domain publishes a DMARC policy, none when it does not."""
    for domain in dict.fromkeys([from_domain, organizational_domain(from_domain)]):
        try:
            records = [r for r in txt(f"_dmarc.{domain}") if r.lower().startswith(b"v=dmarc1")]
        except spf.TempError:
            return "temperror"
        if records:
            return "pass" if passed else "fail"
    return "none"
