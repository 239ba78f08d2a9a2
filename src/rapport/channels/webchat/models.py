"""Web chat visitors: a browser's token, and the customer it speaks for."""

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from rapport.db import Base, new_id, utcnow


class Visitor(Base):
    __tablename__ = "webchat_visitors"
    # An erasure deletes the visitors who spoke for the person (and the database sets the
    # customer of any left to NULL): found by them. Most visitors never wrote.
    __table_args__ = (
        Index(
            "ix_webchat_visitors_customer",
            "customer_id",
            sqlite_where=text("customer_id IS NOT NULL"),
            postgresql_where=text("customer_id IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    inbox_id: Mapped[str] = mapped_column(ForeignKey("inboxes.id", ondelete="CASCADE"), index=True)
    # SHA-256 of the token kept in the visitor's browser.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    customer_id: Mapped[str | None] = mapped_column(
        ForeignKey("customers.id", ondelete="SET NULL"), default=None
    )
    name: Mapped[str] = mapped_column(String(300), default="")
    # What the visitor typed: never used to find an existing customer.
    email: Mapped[str | None] = mapped_column(String(320), default=None)
    # The host site's user id, when it proved it with the inbox's HMAC secret.
    verified_user_id: Mapped[str | None] = mapped_column(String(200), default=None)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
