"""Rows that belong to one workspace, read as that workspace.

Every id a client sends is looked up together with the caller's workspace, so an id of
another workspace finds nothing: a 404, exactly as for an id that never existed, never a
403 that would tell it exists.
"""

from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from rapport.db import Base
from rapport.problems import NotFound

Row = TypeVar("Row", bound=Base)


def get_scoped(db: Session, model: type[Row], row_id: str, *, workspace_id: str, name: str) -> Row:
    """The ``model`` row with this id in this workspace (its table has ``id`` and
    ``workspace_id``), or a 404 problem naming ``name``."""
    columns = model.__table__.c
    row = db.scalar(select(model).where(columns.id == row_id, columns.workspace_id == workspace_id))
    if row is None:
        raise NotFound(name)
    return row
