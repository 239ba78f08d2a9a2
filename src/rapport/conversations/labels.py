"""The workspace's label list: names with colours; renaming or deleting one reaches every
conversation that carries it, and a rename also every SLA policy and automation rule that
names it (in the same transaction, so nothing ever matches a name that no longer exists)."""

import re

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, aliased

from rapport.automation import service as automation
from rapport.conversations.models import ConversationLabel, Label, SlaPolicy
from rapport.problems import Conflict, Invalid, NotFound, Problem
from rapport.workspaces.models import SavedView

_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")


def clean(name: str) -> str:
    """Labels are compared trimmed and lower-cased, as conversations store them."""
    out = name.strip().lower()[:100]
    if not out:
        raise Invalid("a label needs a name")
    return out


def _colour(value: str) -> str:
    if not _COLOUR.match(value):
        raise Invalid("colour must look like #1a2b3c")
    return value.lower()


def list_all(db: Session, *, workspace_id: str) -> list[Label]:
    return list(
        db.scalars(select(Label).where(Label.workspace_id == workspace_id).order_by(Label.name))
    )


def get(db: Session, *, workspace_id: str, label_id: str) -> Label:
    """The label with this id, or else with this name (names may hold a "/", ids never)."""
    row = db.scalar(select(Label).where(Label.id == label_id, Label.workspace_id == workspace_id))
    if row is None and label_id.strip():
        row = db.scalar(
            select(Label).where(Label.workspace_id == workspace_id, Label.name == clean(label_id))
        )
    if row is None:
        raise NotFound("label")
    return row


def _taken(db: Session, workspace_id: str, name: str) -> bool:
    found = db.scalar(
        select(Label.id).where(Label.workspace_id == workspace_id, Label.name == name)
    )
    return found is not None


def create(db: Session, *, workspace_id: str, name: str, colour: str) -> Label:
    name = clean(name)
    if _taken(db, workspace_id, name):
        raise Problem(409, "conflict", f"the label {name!r} exists")
    row = Label(workspace_id=workspace_id, name=name, colour=_colour(colour))
    db.add(row)
    db.flush()
    return row


def update_label(
    db: Session, *, label: Label, name: str | None = None, colour: str | None = None
) -> Label:
    """Recolour and/or rename; a rename moves the label on every conversation, SLA policy,
    automation rule, macro and saved view at once."""
    if colour is not None:
        label.colour = _colour(colour)
    if name is not None and clean(name) != label.name:
        new, old, ws = clean(name), label.name, label.workspace_id
        if _taken(db, ws, new):
            raise Problem(409, "conflict", f"the label {new!r} exists")
        # A conversation that already has the new name keeps one copy of it.
        both = aliased(ConversationLabel)
        db.execute(
            delete(ConversationLabel).where(
                ConversationLabel.workspace_id == ws,
                ConversationLabel.label == old,
                ConversationLabel.conversation_id.in_(
                    select(both.conversation_id).where(both.workspace_id == ws, both.label == new)
                ),
            )
        )
        db.execute(
            update(ConversationLabel)
            .where(ConversationLabel.workspace_id == ws, ConversationLabel.label == old)
            .values(label=new)
        )
        for policy in db.scalars(select(SlaPolicy).where(SlaPolicy.workspace_id == ws)):
            if old in policy.labels:
                policy.labels = sorted({new if x == old else x for x in policy.labels})
        automation.rename_label(db, workspace_id=ws, old=old, new=new)
        # Else a view of the label ("VIP queue") showed nothing from then on, to everyone.
        from rapport.workspaces import saved_views  # saved views build on conversations

        saved_views.rename_label(db, workspace_id=ws, old=old, new=new)
        label.name = new
    db.flush()
    return label


def delete_label(db: Session, *, label: Label, actor_id: str) -> list[tuple[SavedView, str]]:
    """Remove the label from the list, from every conversation of the workspace and from
    the filters of its saved views; the views changed, each with what it is said for the
    admin ``actor_id`` (``saved_views.drop_label``).

    Refused while an automation rule, a macro or an SLA policy names it: the rule would
    silently stop matching (or it or the macro keep adding a label nobody can see in the
    list), and a policy left with no label would apply to every conversation. A view is
    not a reason to refuse: a member's own one only they can change, and it lists what it
    did but for the label; left on the label, it would list nothing."""
    ws = label.workspace_id
    users = automation.naming_label(db, workspace_id=ws, name=label.name) + [
        f"SLA policy {policy.name!r}"
        for policy in db.scalars(select(SlaPolicy).where(SlaPolicy.workspace_id == ws))
        if label.name in policy.labels
    ]
    if users:
        raise Conflict(
            f"{', '.join(users)} still use{'s' if len(users) == 1 else ''} this label: "
            "change or delete them first (or rename the label: they follow)"
        )
    db.execute(
        delete(ConversationLabel).where(
            ConversationLabel.workspace_id == label.workspace_id,
            ConversationLabel.label == label.name,
        )
    )
    from rapport.workspaces import saved_views  # saved views build on conversations

    said = saved_views.drop_label(db, workspace_id=ws, name=label.name, reader=actor_id)
    db.delete(label)
    return said


def colours(db: Session, *, workspace_id: str) -> dict[str, str]:
    return {r.name: r.colour for r in list_all(db, workspace_id=workspace_id)}
