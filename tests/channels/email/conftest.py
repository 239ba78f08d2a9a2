"""The email tests' stand-in servers, for every module here."""

from tests.channels.email.test_email import mail_inbox, outbox, smtp_port

__all__ = ["mail_inbox", "outbox", "smtp_port"]
