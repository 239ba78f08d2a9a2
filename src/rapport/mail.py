"""Rapport's own outgoing mail (password resets, team alerts): plain text through the relay
set by ``RAPPORT_MAIL_SMTP_*``. Replies to customers go through their email inbox instead."""

import re
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import make_msgid

from rapport.config import Settings
from rapport.jobs.registry import PermanentError

_BREAKS = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]+")


def one_line(value: str) -> str:
    """A header's text on one line: what a customer typed (a name, a subject) may hold line
    breaks, which the mail library refuses (the whole mail unsent) and which would start
    headers of their own in a hand-built one."""
    return " ".join(_BREAKS.sub(" ", value).split())


def send_mail(settings: Settings, *, to: str, subject: str, text: str) -> None:
    """One plain-text email through the configured relay (RAPPORT_MAIL_SMTP_*)."""
    if not settings.mail_smtp_host:
        raise PermanentError("no outgoing mail relay: set RAPPORT_MAIL_SMTP_HOST")
    mail = EmailMessage()
    mail["From"] = settings.mail_from
    mail["To"] = to
    mail["Subject"] = one_line(subject)
    mail["Message-ID"] = make_msgid()
    # Sent by no one (RFC 3834): an out-of-office does not answer it, to the address it
    # came from (a support inbox, which would make a conversation of the answer).
    mail["Auto-Submitted"] = "auto-generated"
    mail.set_content(text)
    context = ssl.create_default_context()
    host, port = settings.mail_smtp_host, settings.mail_smtp_port
    smtp = (
        smtplib.SMTP_SSL(host, port, timeout=30, context=context)
        if settings.mail_smtp_security == "tls"
        else smtplib.SMTP(host, port, timeout=30)
    )
    with smtp:
        smtp.ehlo()
        if settings.mail_smtp_security == "starttls":
            if not smtp.has_extn("starttls"):
                raise PermanentError("the mail relay does not offer STARTTLS")
            smtp.starttls(context=context)
            smtp.ehlo()
        if settings.mail_smtp_username and settings.mail_smtp_password:
            smtp.login(settings.mail_smtp_username, settings.mail_smtp_password.get_secret_value())
        smtp.send_message(mail)
