"""Merging two records of one person, and undoing it exactly.

A merge moves the merged customer's identities, conversations, events, orders, chat
visitors, consent history and the tags the survivor lacks to the survivor, adds the
attributes the survivor lacks (and the merged record's values of the fields an agent chose
to take, where the two differ), and keeps the merged customer (hidden) with a record of
everything moved; undoing moves exactly those back and restores the survivor's own fields,
whatever else happened in between.
"""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from rapport.channels.webchat.models import Visitor
from rapport.conversations.models import (
    CAME_BY,
    GAINED,
    Conversation,
    ConversationGuest,
    Direction,
    Message,
)
from rapport.customers.models import (
    Consent,
    ConsentChannel,
    Customer,
    CustomerMerge,
    CustomerNote,
    CustomerTag,
    Event,
    Identity,
    IdentityKind,
)
from rapport.customers.service import (
    attributes_changed,
    guest_conversations,
    person_ids,
    root_of,
    settle_handles,
)
from rapport.db import hold, utcnow
from rapport.events.models import Order
from rapport.privacy.service import Actor, audit
from rapport.problems import Conflict, Invalid
from rapport.realtime.service import emit
from rapport.scoped import get_scoped

# Everything that belongs to a customer and follows it into a merge, by its key in the
# merge's record.
_OWNED: dict[str, Any] = {
    "identities": Identity,
    "conversations": Conversation,
    "events": Event,
    "orders": Order,
    "visitors": Visitor,
    # The whole history moves, each decision as recorded: the newest per channel and
    # purpose, of either record, is then in force (a withdrawal on one is not lost).
    "consents": Consent,
    "notes": CustomerNote,
}
# (The conversations of others they wrote in, ``ConversationGuest``, stay with the record
# that wrote: found through the person's records, as their messages keep that record.)


def _customer(db: Session, workspace_id: str, customer_id: str) -> Customer:
    return get_scoped(db, Customer, customer_id, workspace_id=workspace_id, name="customer")


# The fields of a customer both records may hold differently: the survivor's is kept unless
# the merge takes the other's (``take``); custom attributes too, as "attributes.<key>".
_FIELDS = ("name", "email", "phone")


def _filled(value: Any) -> bool:
    return value not in (None, "", [], {})


def conflicts(survivor: Customer, merged: Customer) -> list[dict[str, Any]]:
    """Where both records hold a value and the values differ: each field with both."""
    out = [
        {"field": f, "survivor": getattr(survivor, f), "merged": getattr(merged, f)}
        for f in _FIELDS
        if _filled(getattr(survivor, f))
        and _filled(getattr(merged, f))
        and getattr(survivor, f) != getattr(merged, f)
    ]
    for key in sorted(set(survivor.attributes) & set(merged.attributes)):
        ours, theirs = survivor.attributes[key], merged.attributes[key]
        if _filled(ours) and _filled(theirs) and ours != theirs:
            out.append({"field": f"attributes.{key}", "survivor": ours, "merged": theirs})
    return out


def preview(
    db: Session, *, workspace_id: str, survivor_id: str, merged_id: str
) -> list[dict[str, Any]]:
    """What a merge of the two would have to choose between (``conflicts``), both checked
    as a merge checks them."""
    survivor, merged = _pair(db, workspace_id, survivor_id, merged_id)
    return conflicts(survivor, merged)


def _pair(
    db: Session, workspace_id: str, survivor_id: str, merged_id: str, *, lock: bool = False
) -> tuple[Customer, Customer]:
    """The two customers of a merge, neither merged already. With ``lock`` (a merge) both
    rows are held until the transaction ends, in one order, and read as they are then: two
    merges of one record at once (into two others, or two records into each other) both
    saw it unmerged and both went through, leaving a record merged twice or a pair merged
    into each other, gone from every list and beyond undoing."""
    if survivor_id == merged_id:
        raise Invalid("a customer cannot be merged into itself")
    if lock:
        hold(db, Customer, survivor_id, merged_id)
    survivor = _customer(db, workspace_id, survivor_id)
    merged = _customer(db, workspace_id, merged_id)
    if survivor.merged_into_id or merged.merged_into_id:
        raise Conflict("one of these customers was already merged into another")
    return survivor, merged


def merge(
    db: Session,
    *,
    workspace_id: str,
    survivor_id: str,
    merged_id: str,
    actor: Actor,
    reason: str = "",
    take: Sequence[str] = (),
) -> CustomerMerge:
    """Merge ``merged_id`` into ``survivor_id`` (both of the workspace). Where both hold a
    different value the survivor's is kept, unless the field is in ``take`` ("name",
    "attributes.plan"): then the merged record's. Either way the merge records both, and
    undoing it gives the survivor its own back."""
    survivor, merged = _pair(db, workspace_id, survivor_id, merged_id, lock=True)
    differ = conflicts(survivor, merged)
    fields = {c["field"] for c in differ}
    if wrong := [f for f in take if f not in fields]:
        named = ", ".join(repr(f[:80]) for f in wrong[:5]) + (", ..." if len(wrong) > 5 else "")
        raise Invalid(
            f"take: the two do not hold different values for {named}"
            + (f"; they do for {', '.join(sorted(fields))}" if fields else "")
        )
    owned = {
        key: list(db.scalars(select(model.id).where(model.customer_id == merged.id)))
        for key, model in _OWNED.items()
    }
    # The two's handles only typed into a form: one the other's messages prove while
    # merged is the prover's after an undo, as a proof claims a typed handle of another's.
    typed = list(
        db.scalars(
            select(Identity.id).where(
                Identity.customer_id.in_((survivor.id, merged.id)), Identity.verified.is_(False)
            )
        )
    )
    # Tags are keyed by (customer, tag): one both carry stays on the merged record.
    tags = list(
        db.scalars(
            select(CustomerTag.tag).where(
                CustomerTag.customer_id == merged.id,
                CustomerTag.tag.not_in(
                    select(CustomerTag.tag).where(CustomerTag.customer_id == survivor.id)
                ),
            )
        )
    )
    # What the survivor lacks (an empty value is none: "" or [] held no answer).
    added = {
        k: v
        for k, v in merged.attributes.items()
        if _filled(v) and not _filled(survivor.attributes.get(k))
    }
    taken = set(take)
    replaced = {
        c["field"].removeprefix("attributes."): c["survivor"]
        for c in differ
        if c["field"] in taken and c["field"].startswith("attributes.")
    }
    # An empty value of the survivor's that the merge fills is given back on undo too.
    replaced |= {k: survivor.attributes[k] for k in added if k in survivor.attributes}
    moved: dict[str, Any] = {
        # What differed, and whose value the survivor holds now.
        "conflicts": [
            {**c, "kept": "merged" if c["field"] in taken else "survivor"} for c in differ
        ],
        # The survivor's own values of the attributes taken from the merged record.
        "replaced_attributes": replaced,
        **owned,
        "typed_identities": typed,
        "tags": sorted(tags),
        "added_attributes": sorted(added),
        "survivor_before": {
            "name": survivor.name,
            "email": survivor.email,
            "phone": survivor.phone,
            "first_seen_at": survivor.first_seen_at.isoformat(),
            "last_seen_at": survivor.last_seen_at.isoformat(),
        },
    }
    for key, model in _OWNED.items():
        db.execute(update(model).where(model.id.in_(owned[key])).values(customer_id=survivor.id))
    db.execute(
        update(CustomerTag)
        .where(CustomerTag.customer_id == merged.id, CustomerTag.tag.in_(tags))
        .values(customer_id=survivor.id)
    )
    before = dict(survivor.attributes)
    survivor.attributes = {
        **survivor.attributes,
        **added,
        **{key: merged.attributes[key] for key in replaced},
    }
    attributes_changed(db, customer=survivor, before=before)
    for f in _FIELDS:
        if f in taken or not getattr(survivor, f):
            setattr(survivor, f, getattr(merged, f) or getattr(survivor, f))
    # What this merge set, so that undoing it restores a field only while it still holds
    # that: a later merge into the same survivor, or an agent's edit since, is kept.
    moved["set"] = {
        f: getattr(survivor, f)
        for f in _FIELDS
        if getattr(survivor, f) != moved["survivor_before"][f]
    }
    moved["attributes_set"] = {k: survivor.attributes[k] for k in (*added, *replaced)}
    survivor.first_seen_at = min(survivor.first_seen_at, merged.first_seen_at)
    survivor.last_seen_at = max(survivor.last_seen_at, merged.last_seen_at)
    merged.merged_into_id = survivor.id
    moved["survivor_last_seen_after"] = survivor.last_seen_at.isoformat()
    row = CustomerMerge(
        workspace_id=workspace_id,
        survivor_id=survivor.id,
        merged_id=merged.id,
        moved=moved,
        reason=reason[:500],
        actor_user_id=actor.user_id,
    )
    db.add(row)
    db.flush()
    audit(
        db,
        workspace_id=workspace_id,
        actor=actor,
        action="customer.merge",
        target_type="customer",
        target_id=survivor.id,
        data={
            "merged_id": merged.id,
            "merge_id": row.id,
            "reason": reason,
            "take": sorted(taken),
        },
    )
    emit(
        db,
        workspace_id=workspace_id,
        type="customer.merged",
        payload={"survivor_id": survivor.id, "merged_id": merged.id, "merge_id": row.id},
    )
    return row


def _later(db: Session, row: CustomerMerge) -> list[CustomerMerge]:
    """The merges into ``row``'s survivor made after it and still in force."""
    return list(
        db.scalars(
            select(CustomerMerge).where(
                CustomerMerge.workspace_id == row.workspace_id,
                CustomerMerge.survivor_id == row.survivor_id,
                CustomerMerge.undone_at.is_(None),
                CustomerMerge.created_at >= row.created_at,
                CustomerMerge.id != row.id,
            )
        )
    )


def _rebase_later(row: CustomerMerge, later: list[CustomerMerge], merged: Customer) -> None:
    """Merges into the same survivor made after ``row`` recorded, as the survivor's values
    before them, what ``row`` set: with ``row`` undone, undoing them must give back what
    the survivor held before ``row`` instead (else a record no longer merged speaks)."""
    moved = row.moved
    if "set" not in moved:
        return  # recorded before merges said what they set: undone as then
    own = moved.get("replaced_attributes", {})
    own_first = moved["survivor_before"]["first_seen_at"]
    merged_first = merged.first_seen_at.isoformat()
    for other in later:
        theirs = dict(other.moved)
        before = dict(theirs["survivor_before"])
        for f, value in moved["set"].items():
            if before.get(f) == value:
                before[f] = moved["survivor_before"][f]
        if before["first_seen_at"] == merged_first != own_first and merged_first < own_first:
            before["first_seen_at"] = own_first  # the earlier "first seen" was ``row``'s
        replaced = dict(theirs.get("replaced_attributes", {}))
        added = list(theirs.get("added_attributes", []))
        for k, value in moved["attributes_set"].items():
            if k in replaced and replaced[k] == value:
                if k in own:
                    replaced[k] = own[k]  # the survivor's own, from before ``row``
                else:
                    del replaced[k]  # ``row`` added it: undoing the later one removes it
                    added.append(k)
        # What it shows of the two records where they differed, the survivor's side set
        # by ``row``: the survivor's own from before (else the restored record's values,
        # an erased person's address say, stayed in another merge's history).
        conflicts = []
        for entry in theirs.get("conflicts", []):
            field = str(entry.get("field", ""))
            key = field.removeprefix("attributes.")
            if field in moved["set"] and entry.get("survivor") == moved["set"][field]:
                entry = {**entry, "survivor": moved["survivor_before"].get(field)}
            elif field != key and entry.get("survivor") == moved["attributes_set"].get(key):
                entry = {**entry, "survivor": own.get(key)}
            conflicts.append(entry)
        theirs |= {
            "survivor_before": before,
            "replaced_attributes": replaced,
            "added_attributes": sorted(set(added)),
            "conflicts": conflicts,
        }
        other.moved = theirs  # a new dict: the JSON column sees assignments only


def unmerge(
    db: Session, *, workspace_id: str, merge_id: str, actor: Actor
) -> tuple[Customer, Customer]:
    """Undo a merge: both customers come back as they were; returns (survivor, restored).
    Both customers' rows are held until the transaction ends, as a merge holds them, then
    the merge's: of two undos of it at once, one undoes; two undos of merges into one
    survivor, or an undo and a merge into her, each read her as the other left her (the
    second's write of her fields and attributes, read before, undid the first's). Always
    customers first, then merges: an undo rewrites the later merges into its survivor
    (``_rebase_later``) while holding her, and the undo of one of those, waiting for her,
    holds no merge yet (holding its own first, the two waited on each other)."""
    row = get_scoped(db, CustomerMerge, merge_id, workspace_id=workspace_id, name="merge")
    hold(db, Customer, row.survivor_id, row.merged_id)  # never changed once made
    hold(db, CustomerMerge, row.id)
    if row.undone_at is not None:
        raise Conflict("this merge was already undone")
    survivor = _customer(db, workspace_id, row.survivor_id)
    merged = _customer(db, workspace_id, row.merged_id)
    if survivor.merged_into_id is not None:
        # What this merge moved went on with the survivor into another record: undone
        # now, it would find none of it and bring the merged record back empty.
        raise Conflict(
            "the survivor of this merge was since merged into another customer: "
            "undo the later merge first"
        )
    later = _later(db, row)
    _rebase_later(row, later, merged)
    # What a later merge still in force set, and still stands, is that merge's to give back.
    owned = {
        f
        for m in later
        for f, value in m.moved.get("set", {}).items()
        if getattr(survivor, f) == value
    }
    owned_attributes = {
        k
        for m in later
        for k, value in m.moved.get("attributes_set", {}).items()
        if k in survivor.attributes and survivor.attributes[k] == value
    }
    moved = row.moved
    for key, model in _OWNED.items():
        # Only what the merge moved and is still the survivor's goes back (merges recorded
        # before a table was added here have no list for it).
        db.execute(
            update(model)
            .where(model.id.in_(moved.get(key, [])), model.customer_id == survivor.id)
            .values(customer_id=merged.id)
        )
    tags = moved.get("tags", [])
    # A moved tag given to the merged record again since (it can still be tagged) is
    # already back; the survivor's copy goes.
    again = select(CustomerTag.tag).where(CustomerTag.customer_id == merged.id)
    db.execute(
        delete(CustomerTag).where(
            CustomerTag.customer_id == survivor.id,
            CustomerTag.tag.in_(tags),
            CustomerTag.tag.in_(again),
        )
    )
    db.execute(
        update(CustomerTag)
        .where(CustomerTag.customer_id == survivor.id, CustomerTag.tag.in_(tags))
        .values(customer_id=merged.id)
    )
    # Only what this merge set and still stands goes back (a merge recorded before
    # ``attributes_set`` was kept: all of it, as then).
    set_to = moved.get("attributes_set")
    still = {
        k
        for k in (*moved["added_attributes"], *moved.get("replaced_attributes", {}))
        if k not in owned_attributes
        and (
            set_to is None or (k in survivor.attributes and survivor.attributes[k] == set_to.get(k))
        )
    }
    attributes = {k: v for k, v in survivor.attributes.items() if k not in still}
    for k, own in moved.get("replaced_attributes", {}).items():
        if k in still:
            attributes[k] = own
    attributes_before = dict(survivor.attributes)
    survivor.attributes = attributes
    attributes_changed(db, customer=survivor, before=attributes_before)
    before = moved["survivor_before"]
    for f in _FIELDS:
        if f in owned:
            continue
        if "set" not in moved or (f in moved["set"] and getattr(survivor, f) == moved["set"][f]):
            setattr(survivor, f, before[f])
    # The earliest of its own and of the records still merged into it.
    survivor.first_seen_at = min(
        [datetime.fromisoformat(before["first_seen_at"])]
        + list(
            db.scalars(
                select(Customer.first_seen_at).where(
                    Customer.merged_into_id == survivor.id, Customer.id != merged.id
                )
            )
        )
    )
    _withdrawals_kept(db, row, survivor, merged)
    # A conversation of theirs an agent merged into the survivor's since takes back its
    # messages: they stayed in the other person's thread.
    from rapport.conversations import merging as conversations  # which builds on customers

    parted: dict[tuple[str, str], Conversation] = {}  # (where from, inbox) -> theirs
    for conv in db.scalars(
        select(Conversation).where(
            Conversation.id.in_(moved.get("conversations", [])),
            Conversation.customer_id == merged.id,
            Conversation.merged_into_id.is_not(None),
        )
    ):
        source = conv.merged_into_id or ""
        if conversations.part(db, conversation=conv, actor=actor):
            parted[(source, conv.inbox_id)] = conv
    theirs_last = _written_while_merged(db, row, survivor, merged, actor=actor, parted=parted)
    _last_seen_again(db, row, survivor, merged, theirs_last=theirs_last)
    # Handles either one gained or lost since the merge (another merge, a claim): each
    # shows one of its own.
    db.flush()
    settle_handles(db, [survivor.id, merged.id])
    merged.merged_into_id = None
    row.undone_at = utcnow()
    audit(
        db,
        workspace_id=workspace_id,
        actor=actor,
        action="customer.unmerge",
        target_type="customer",
        target_id=survivor.id,
        data={"merged_id": merged.id, "merge_id": row.id},
    )
    emit(
        db,
        workspace_id=workspace_id,
        type="customer.unmerged",
        payload={"survivor_id": survivor.id, "merged_id": merged.id, "merge_id": row.id},
    )
    return survivor, merged


def _written_while_merged(
    db: Session,
    row: CustomerMerge,
    survivor: Customer,
    merged: Customer,
    *,
    actor: Actor,
    parted: dict[tuple[str, str], Conversation],
) -> datetime | None:
    """What either of the two wrote while merged (stored as the survivor's) goes with the
    record whose handle it came by (``CAME_BY``): the restored person's messages leave the
    survivor's conversations (a conversation started by theirs alone goes whole; from one
    the survivor wrote in too, they go to one of their own), and the survivor's leave the
    conversations given back to the restored record. A message stored before messages said
    their handle stays where it is, as then."""
    from rapport.conversations import merging as conversations  # which builds on customers

    ws = row.workspace_id
    # Theirs, and others' the survivor's record wrote in as a guest (copied on a mail).
    pair = (
        select(Conversation.id)
        .where(
            Conversation.workspace_id == ws,
            Conversation.customer_id.in_((survivor.id, merged.id)),
        )
        .union(guest_conversations(ws, [survivor.id]))
    )
    written = list(
        db.scalars(
            select(Message)
            .where(
                Message.conversation_id.in_(pair),
                Message.created_at >= row.created_at,
                Message.direction == Direction.inbound,
                Message.sender_type == "customer",
                Message.sender_id == survivor.id,
            )
            .order_by(Message.created_at, Message.id)
        )
    )
    came = {m.id: str(m.meta[CAME_BY]) for m in written if m.meta.get(CAME_BY)}
    if not came:
        return None
    owners = _handles_brought(db, row, survivor, merged, written=written, came=came)
    # The restored record's: what came by a handle that is its own again; the survivor's:
    # by one of hers (a handle someone else holds since, or none does, tells neither).
    theirs = {m for m, identity in came.items() if owners.get(identity) == merged.id}
    hers = {m for m, identity in came.items() if owners.get(identity) == survivor.id}
    by_conversation: dict[str, list[Message]] = {}
    for m in written:
        if m.id in came:
            by_conversation.setdefault(m.conversation_id, []).append(m)
    for conv_id, messages in by_conversation.items():
        conv = db.get(Conversation, conv_id)
        if conv is None:
            continue
        if conv.customer_id == survivor.id:
            going, to = [m for m in messages if m.id in theirs], merged.id
        elif conv.customer_id == merged.id:
            going, to = [m for m in messages if m.id in hers], survivor.id
        else:
            # Another's conversation: what they wrote there stays, as theirs (their guest's).
            if any(m.id in theirs for m in messages):
                db.add(
                    ConversationGuest(
                        workspace_id=ws, conversation_id=conv.id, customer_id=merged.id
                    )
                )
            continue
        if not going:
            continue
        if to == merged.id and conv.created_at >= row.created_at and conv.merged_into_id is None:
            # Started while merged: whole, if the survivor's record wrote nothing else there.
            others = db.scalar(
                select(func.count())
                .select_from(Message)
                .where(
                    Message.conversation_id == conv.id,
                    Message.sender_type == "customer",
                    Message.sender_id == survivor.id,
                    Message.id.not_in([m.id for m in going]),
                )
            )
            if not others:
                conversations.give_whole(db, conversation=conv, customer_id=to, actor=actor)
                continue
        inboxes: dict[str, list[str]] = {}
        for m in going:
            inboxes.setdefault(m.inbox_id, []).append(m.id)
        for inbox_id, ids in inboxes.items():
            conversations.hand_over(
                db,
                source=conv,
                message_ids=ids,
                customer_id=to,
                actor=actor,
                into=parted.get((conv.id, inbox_id)) if to == merged.id else None,
            )
    # The restored record wrote them (and was seen then), wherever they are now.
    db.execute(update(Message).where(Message.id.in_(theirs)).values(sender_id=merged.id))
    if last := max((m.created_at for m in written if m.id in theirs), default=None):
        merged.last_seen_at = max(merged.last_seen_at, last)
    return last


def _handles_brought(
    db: Session,
    row: CustomerMerge,
    survivor: Customer,
    merged: Customer,
    *,
    written: list[Message],
    came: dict[str, str],
) -> dict[str, str]:
    """The handles the restored person's messages brought while merged (``GAINED``: made
    on the survivor then) are theirs again, with their number change on the timeline: the
    next message from them finds them, not her. One the survivor's own messages proved
    too stays hers, and the two go to duplicate review (which of them holds it is not
    known). One that either had only typed before the merge is the one's whose messages
    proved it while merged (unmerged, that proof would have claimed it; left as it was,
    it stayed with the typist proven, and the prover's next message from it went there),
    and the two go to review. Returns the holder of each handle the messages came by or
    brought, as now."""
    from rapport.customers import duplicates  # which builds on merges

    gained = {m.id: [str(i) for i in m.meta.get(GAINED, [])] for m in written}
    wanted = set(came.values()) | {i for ids in gained.values() for i in ids}
    rows = {
        r.id: r
        for r in db.scalars(
            select(Identity).where(
                Identity.workspace_id == row.workspace_id, Identity.id.in_(wanted)
            )
        )
    }
    owners = {i: r.customer_id for i, r in rows.items()}
    # In the order written: a handle brought is its bringer's from then on, and so is
    # what came by it later (his second message, from the new address).
    brought: dict[str, set[str | None]] = {}
    typed = set(row.moved.get("typed_identities", []))  # none recorded before 2026-12-07
    pair = {survivor.id, merged.id}
    proved: dict[str, str] = {}  # typed by one of the two before, proved by the other
    for m in written:
        by = owners.get(came.get(m.id, ""))
        for i in gained[m.id]:
            r = rows.get(i)
            if r is not None and i in typed and by in pair and r.customer_id in pair - {by}:
                proved[i] = owners[i] = str(by)
                continue
            if r is None or r.customer_id != survivor.id or r.created_at < row.created_at:
                continue  # hers from before, or another's since
            brought.setdefault(i, set()).add(by)
            owners[i] = merged.id if brought[i] == {merged.id} else survivor.id
    theirs = [i for i, by in brought.items() if by == {merged.id}]
    if theirs:
        db.execute(update(Identity).where(Identity.id.in_(theirs)).values(customer_id=merged.id))
    _number_changes_back(db, row, survivor, merged, [rows[i] for i in theirs])
    for to in set(proved.values()):
        given = [i for i, by in proved.items() if by == to]
        db.execute(update(Identity).where(Identity.id.in_(given)).values(customer_id=to))
    if proved or any(merged.id in by and len(by) > 1 for by in brought.values()):
        duplicates.suggest(
            db,
            workspace_id=row.workspace_id,
            a=survivor.id,
            b=merged.id,
            probability=duplicates.ONE_SENDER_PROBABILITY,
            reason=(
                "both proved one handle while their records were merged"
                if not proved
                else "one proved a handle the other had typed, while their records were merged"
            ),
        )
    return owners


def _number_changes_back(
    db: Session,
    row: CustomerMerge,
    survivor: Customer,
    merged: Customer,
    given: list[Identity],
) -> None:
    """A number change recorded on the survivor while merged, from a number of the
    restored record's or to one given back to it (``given``), is theirs: on their
    timeline, their phone follows if it was the old number (as the change made hers), and
    whoever kept the new number is put to duplicate review with them."""
    from rapport.customers import duplicates  # which builds on merges

    # WhatsApp names numbers by their digits, a phone handle with its "+".
    theirs = {
        v.lstrip("+")
        for v in db.scalars(select(Identity.value).where(Identity.customer_id == merged.id))
    }
    phones = {h.value.lstrip("+"): h.value for h in given if h.kind == IdentityKind.phone}
    for event in db.scalars(
        select(Event).where(
            Event.customer_id == survivor.id,
            Event.type == "number_changed",
            Event.created_at >= row.created_at,
        )
    ):
        old = str(event.properties.get("from") or "").lstrip("+")
        new = str(event.properties.get("to") or "").lstrip("+")
        if old not in theirs and new not in {h.value.lstrip("+") for h in given}:
            continue
        event.customer_id = merged.id
        if new in phones and (merged.phone is None or merged.phone.lstrip("+") == old):
            merged.phone = phones[new]
        for other in event.properties.get("held_by", []):
            duplicates.suggest(
                db,
                workspace_id=row.workspace_id,
                a=merged.id,
                b=str(other),
                probability=duplicates.NUMBER_CHANGE_PROBABILITY,
                reason="one changed number to a number the other has",
            )


def _last_seen_again(
    db: Session,
    row: CustomerMerge,
    survivor: Customer,
    merged: Customer,
    *,
    theirs_last: datetime | None,
) -> None:
    """The survivor was last seen when she last was, if nothing of hers since the merge
    moved it, or the restored person's message was the last seen of her: her own from
    before, the latest she wrote since, or of the records still merged into her."""
    seen = survivor.last_seen_at
    if seen.isoformat() != row.moved.get("survivor_last_seen_after") and (
        theirs_last is None or seen > theirs_last
    ):
        return  # something of hers since (she wrote, she was seen): kept
    # In her conversations and those of others she wrote in (by the index on conversations).
    where = (
        select(Conversation.id)
        .where(
            Conversation.workspace_id == row.workspace_id,
            Conversation.customer_id == survivor.id,
        )
        .union(guest_conversations(row.workspace_id, [survivor.id]))
    )
    hers = db.scalar(
        select(func.max(Message.created_at)).where(
            Message.conversation_id.in_(where),
            Message.sender_type == "customer",
            Message.sender_id == survivor.id,
            Message.direction == Direction.inbound,
            Message.created_at >= row.created_at,
        )
    )
    others = db.scalars(
        select(Customer.last_seen_at).where(
            Customer.merged_into_id == survivor.id, Customer.id != merged.id
        )
    )
    own = datetime.fromisoformat(row.moved["survivor_before"]["last_seen_at"])
    survivor.last_seen_at = max([own, *others, *([hers] if hers is not None else [])])


# The handles each consent channel reaches a customer by.
_REACHED_BY = {
    ConsentChannel.email: {IdentityKind.email},
    ConsentChannel.sms: {IdentityKind.phone},
    ConsentChannel.phone: {IdentityKind.phone},
    ConsentChannel.whatsapp: {IdentityKind.whatsapp, IdentityKind.phone},
}


def _withdrawals_kept(
    db: Session, row: CustomerMerge, survivor: Customer, merged: Customer
) -> None:
    """A withdrawal recorded on the survivor while merged, on a channel the restored record
    has a handle for again (a STOP from its own number, say), is the restored record's too:
    which of the two sent it is not recorded, and one left behind made the restored record
    reachable there again. The survivor keeps its copy (a withdrawal is never lost)."""
    kinds = set(db.scalars(select(Identity.kind).where(Identity.customer_id == merged.id)))
    for consent in db.scalars(
        select(Consent).where(
            Consent.customer_id == survivor.id,
            Consent.granted.is_(False),
            Consent.recorded_at >= row.created_at,
        )
    ):
        if _REACHED_BY.get(consent.channel, set()) & kinds:
            db.add(
                Consent(
                    workspace_id=consent.workspace_id,
                    customer_id=merged.id,
                    channel=consent.channel,
                    purpose=consent.purpose,
                    granted=False,
                    source=consent.source,
                    recorded_by_user_id=consent.recorded_by_user_id,
                    recorded_at=consent.recorded_at,
                )
            )


def merges_of(db: Session, *, workspace_id: str, customer_id: str) -> list[CustomerMerge]:
    return list(
        db.scalars(
            select(CustomerMerge)
            .where(
                CustomerMerge.workspace_id == workspace_id,
                (CustomerMerge.survivor_id == customer_id)
                | (CustomerMerge.merged_id == customer_id),
            )
            .order_by(CustomerMerge.created_at.desc())
        )
    )


def person(db: Session, *, customer: Customer) -> tuple[Customer, list[str]]:
    """One person: the record this customer's merges ended in, and the ids of it and of
    every record merged into it (kept so that a merge can be undone), that one first."""
    root = root_of(db, customer)
    return root, person_ids(db, root)
