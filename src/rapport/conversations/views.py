"""Conversation endpoints: list, read, reply, note, assign, status, priority, labels."""

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, UploadFile
from pydantic import AfterValidator
from sqlalchemy import select
from sqlalchemy.orm import Session

from rapport.auth.deps import (
    CurrentAdmin,
    CurrentAgent,
    CurrentMember,
    CurrentSettings,
    Db,
    ReadDb,
)
from rapport.auth.models import Role
from rapport.auth.service import Principal
from rapport.auth.views import actor_of
from rapport.automation import service as automation
from rapport.automation.models import Macro
from rapport.automation.schemas import SkippedAction
from rapport.channels import service as inboxes
from rapport.conversations import canned, files, labels, reads, service, sla
from rapport.conversations.models import (
    Attachment,
    Conversation,
    Priority,
    SlaState,
    Status,
)
from rapport.conversations.schemas import (
    AmbiguousMention,
    AssignIn,
    AttachmentRead,
    BulkIn,
    BulkOut,
    BusinessHoursIn,
    CannedIn,
    CannedRead,
    ConversationDetail,
    ConversationListItem,
    ConversationPage,
    ConversationRead,
    ConversationSlaRead,
    ConversationStart,
    LabelDeleted,
    LabelIn,
    LabelRead,
    LabelsIn,
    LabelUpdate,
    LastMessage,
    MacroRunOut,
    MentionedMember,
    MessageRead,
    NoteIn,
    NoteRead,
    PriorityIn,
    RenderedOut,
    ReplyCopies,
    ReplyIn,
    ReplyInbox,
    SlaPolicyIn,
    SlaPolicyPatch,
    SlaPolicyRead,
    StatusIn,
    UploadRead,
)
from rapport.customers import service as customers
from rapport.db import as_utc
from rapport.privacy.service import audit
from rapport.problems import Invalid, NotFound
from rapport.realtime import presence
from rapport.storage import LocalStorage

router = APIRouter(prefix="/api/v1/conversations", tags=["conversations"])

MERGED = (
    "the conversation was merged into another: type .../problems/conversation-merged, "
    "whose ``merged_into_id`` names it; nothing changed"
)
_MERGED: dict[int | str, dict[str, object]] = {409: {"description": MERGED[0].upper() + MERGED[1:]}}


def _utc(at: datetime) -> datetime:
    """A date-time without an offset is taken as UTC, the API's time zone; one with an
    offset is converted, and refused when it has no UTC equivalent (0001-01-01T00:00+05:00)."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else as_utc(at)


# A bound of a list filter: unlike a moment to store (UtcInstant), the offset may be left out.
FilterInstant = Annotated[datetime, AfterValidator(_utc)]


def _read(conv: Conversation, labels: list[str]) -> ConversationRead:
    return ConversationRead(**_fields(conv), labels=labels)


def _fields(conv: Conversation) -> dict[str, object]:
    return ConversationRead.model_validate(conv).model_dump(exclude={"labels"})


@router.get("", response_model=ConversationPage)
def list_conversations(
    principal: CurrentMember,
    db: Db,
    status: Status | None = None,
    assignee: str | None = Query(default=None, description="a user id, `me` or `none`"),
    team_id: str | None = None,
    inbox_id: str | None = None,
    label: str | None = None,
    customer_id: str | None = None,
    channel: str | None = Query(default=None, max_length=32),
    priority: Priority | None = None,
    sla_state: SlaState | None = Query(
        default=None,
        description="the live SLA state: `ok`, `warning`, `breached`, or `none` for "
        "conversations no policy applies to (none ever did, or its policy was deleted)",
    ),
    active_from: FilterInstant | None = Query(
        default=None, description="last activity at or after"
    ),
    active_until: FilterInstant | None = Query(default=None, description="last activity before"),
    sort: service.Sort = Query(
        default=service.Sort.newest,
        description="`newest` activity, `waiting` (oldest unanswered customer message first, "
        "waiting conversations only) or `sla_due` (earliest due time first, those with one)",
    ),
    cursor: str | None = None,
    limit: int = Query(default=25, ge=1, le=100),
) -> ConversationPage:
    """Conversations by status, assignee, team, inbox, channel, label, priority, SLA state,
    activity dates or customer, in the chosen order."""
    assignee_id = principal.user_id if assignee == "me" else assignee
    rows, nxt = service.search(
        db,
        workspace_id=principal.workspace_id,
        status=status,
        assignee_id=None if assignee == "none" else assignee_id,
        unassigned=assignee == "none",
        team_id=team_id,
        inbox_id=inbox_id,
        label=label,
        customer_id=customer_id,
        channel=channel,
        priority=priority,
        sla_state=sla_state,
        active_from=active_from,
        active_until=active_until,
        sort=sort,
        cursor=cursor,
        limit=limit,
    )
    ids = [r.id for r in rows]
    labels = service.labels_of(db, ids)
    last = service.previews_of(db, workspace_id=principal.workspace_id, ids=ids)
    return ConversationPage(
        items=[
            ConversationListItem(
                **_fields(r),
                labels=labels[r.id],
                last_message=LastMessage.model_validate(last[r.id]) if r.id in last else None,
            )
            for r in rows
        ],
        next_cursor=nxt,
    )


def _held_afresh(db: Session, rows: list[Conversation]) -> None:
    """Hold the conversations, then read them afresh: a colleague's change committed
    meanwhile is what a field left out keeps (and what the answer, its event and its audit
    entry say), not what was read before it. Held in the order of their ids, so two bulk
    changes over the same conversations never wait on each other in a circle."""
    db.execute(
        select(Conversation)
        .where(Conversation.id.in_([c.id for c in rows]))
        .order_by(Conversation.id)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    ).all()


def _given(body: AssignIn | BulkIn, conv: Conversation) -> tuple[str | None, str | None]:
    """The agent and team an assignment leaves: a field left out keeps its value, null
    clears it."""
    given = body.model_fields_set
    return (
        body.assignee_id if "assignee_id" in given else conv.assignee_id,
        body.team_id if "team_id" in given else conv.team_id,
    )


def _skipped(skipped: list[automation.Skipped]) -> list[SkippedAction]:
    return [SkippedAction.model_validate(s) for s in skipped]


def _ran_macro(
    db: Session,
    *,
    principal: Principal,
    request: Request,
    macro: Macro,
    conversation: Conversation,
) -> list[automation.Skipped]:
    """Run the macro on the conversation as the caller, and audit the run."""
    skipped = automation.run_macro(
        db, macro=macro, conversation=conversation, user_id=principal.user_id
    )
    audit(
        db,
        workspace_id=principal.workspace_id,
        actor=actor_of(principal, request),
        action="macro.run",
        target_type="conversation",
        target_id=conversation.id,
        data={
            "macro_id": macro.id,
            "name": macro.name,
            "skipped": [{"index": s.index, "type": s.type, "reason": s.reason} for s in skipped],
        },
    )
    return skipped


@router.post(
    "/bulk",
    response_model=BulkOut,
    responses={
        403: {"description": "A viewer: only agents, admins and owners write"},
        404: {"description": "A conversation (or the macro) is not in your workspace"},
        409: {"description": "One of them was merged into another (" + MERGED + ")"},
        422: {
            "description": "The body is not valid (``labels`` empty, ``macro_id`` missing), "
            "or one of the macro's actions cannot run; nothing changed",
        },
    },
)
def bulk(body: BulkIn, principal: CurrentAgent, request: Request, db: Db) -> BulkOut:
    """Assign, label, resolve or run a macro on many conversations at once (all or none):
    each change is the single-conversation one, with its events, automation triggers and
    audit entry. For a macro, ``skipped`` lists by conversation the actions left out."""
    if body.action == "macro" and not body.macro_id:
        raise Invalid("macro_id: required when action is macro")
    rows = service.get_many(db, workspace_id=principal.workspace_id, ids=body.ids)
    if body.action == "label" and not body.labels:
        raise Invalid("labels must not be empty")
    skipped: dict[str, list[SkippedAction]] = {}
    if body.action in ("macro", "assign"):
        _held_afresh(db, rows)
    for conv in rows:  # all or none: one merged into another refuses them all
        service.writable(conv)
    if body.action == "macro":
        assert body.macro_id is not None  # checked above
        macro = automation.get_macro(
            db,
            workspace_id=principal.workspace_id,
            macro_id=body.macro_id,
            user_id=principal.user_id,
        )
        for conv in rows:
            try:
                left_out = _ran_macro(
                    db, principal=principal, request=request, macro=macro, conversation=conv
                )
            except Invalid as exc:  # all or none: which conversation stopped them all
                raise Invalid(f"conversation {conv.id}: {exc.detail}") from exc
            if left_out:
                skipped[conv.id] = _skipped(left_out)
        labels = service.labels_of(db, [c.id for c in rows])
        return BulkOut(items=[_read(c, labels[c.id]) for c in rows], skipped=skipped)
    for conv in rows:
        data: dict[str, object]
        if body.action == "assign":
            assignee, team = _given(body, conv)
            service.assign(
                db,
                conversation=conv,
                assignee_id=assignee,
                team_id=team,
                actor_id=principal.user_id,
            )
            data = {"assignee_id": assignee, "team_id": team}
        elif body.action == "label":
            service.add_labels(db, conversation=conv, labels=body.labels)
            data = {"labels": body.labels}
        else:
            service.set_status(
                db, conversation=conv, status=Status.resolved, actor_id=principal.user_id
            )
            data = {"status": Status.resolved.value}
        audit(
            db,
            workspace_id=principal.workspace_id,
            actor=actor_of(principal, request),
            action=f"conversation.bulk_{body.action}",
            target_type="conversation",
            target_id=conv.id,
            data=data,
        )
    labels = service.labels_of(db, [c.id for c in rows])
    return BulkOut(items=[_read(c, labels[c.id]) for c in rows])


@router.post(
    "",
    response_model=ConversationDetail,
    status_code=201,
    responses={
        403: {"description": "A viewer: only agents, admins and owners write"},
        404: {"description": "No such customer, inbox, assignee or team in your workspace"},
        409: {
            "description": "The customer opted out of the inbox's channel: type "
            ".../problems/no-consent; nothing stored",
        },
        422: {
            "description": "The inbox cannot reach the customer (no address of theirs its "
            "channel sends to): type .../problems/unreachable; or it is disabled, the "
            "provider's reply window is closed (WhatsApp's, Meta's 24 hours), the customer "
            "was merged into another, or the body is not valid; nothing stored",
        },
    },
)
def start(
    body: ConversationStart, principal: CurrentAgent, request: Request, db: Db
) -> ConversationDetail:
    """Write to a customer first: a conversation through the inbox, with the message queued
    as a reply is (delivered by the ``deliver`` job), after the checks a reply meets. It
    goes to the caller unless ``assignee_id`` says otherwise. Answers the conversation as
    ``GET /api/v1/conversations/{id}`` does."""
    ws = principal.workspace_id
    customer = customers.get(db, workspace_id=ws, customer_id=body.customer_id)
    inbox = inboxes.get(db, workspace_id=ws, inbox_id=body.inbox_id)
    given = "assignee_id" in body.model_fields_set
    conv, msg = service.start(
        db,
        customer=customer,
        inbox=inbox,
        author_id=principal.user_id,
        text=body.text,
        html=body.html,
        subject=body.subject,
        assignee_id=body.assignee_id if given else principal.user_id,
        team_id=body.team_id if "team_id" in body.model_fields_set else inbox.team_id,
        status=Status(body.status),
        cc=body.cc,
        bcc=body.bcc,
        attachment_ids=body.attachment_ids,
    )
    audit(
        db,
        workspace_id=ws,
        actor=actor_of(principal, request),
        action="conversation.start",
        target_type="conversation",
        target_id=conv.id,
        data={
            "customer_id": customer.id,
            "inbox_id": inbox.id,
            "message_id": msg.id,
            "assignee_id": conv.assignee_id,
            "status": conv.status.value,
        },
    )
    return _detail(db, conv, request.app.state.settings.public_url)


@router.get("/{conversation_id}/reply-copies", response_model=ReplyCopies)
def reply_copies(conversation_id: str, principal: CurrentMember, db: Db) -> ReplyCopies:
    """Whether a reply now goes by email, and whom it copies unless told otherwise: what
    ``reply_cc`` says, without the messages, for a page kept open as the customer writes
    (through another channel, or copying others)."""
    conv = service.get(db, workspace_id=principal.workspace_id, conversation_id=conversation_id)
    found = service.reply_copies(db, conversation=conv)
    inbox = inboxes.get(
        db,
        workspace_id=principal.workspace_id,
        inbox_id=service.last_channel(db, conversation=conv),
    )
    return ReplyCopies(
        by_email=found is not None,
        cc=found or [],
        inbox=ReplyInbox(**inboxes.inbox_payload(inbox)),
    )


@router.get("/{conversation_id}", response_model=ConversationDetail)
def get_conversation(
    conversation_id: str, principal: CurrentMember, db: Db, settings: CurrentSettings
) -> ConversationDetail:
    """A conversation with its messages (notes and activity included), oldest first."""
    conv = service.get(db, workspace_id=principal.workspace_id, conversation_id=conversation_id)
    return _detail(db, conv, settings.public_url)


def _detail(db: Db, conv: Conversation, base_url: str) -> ConversationDetail:
    msgs = service.messages(db, conversation=conv)
    return ConversationDetail(
        **_fields(conv),
        labels=service.labels_of(db, [conv.id])[conv.id],
        messages=reads.message_reads(db, msgs, base_url=base_url),
        reply_cc=service.reply_copies(db, conversation=conv) or [],
        guests=service.guest_names(db, conversation=conv, messages=msgs),
    )


@router.post(
    "/{conversation_id}/uploads",
    response_model=UploadRead,
    status_code=201,
    responses={
        404: {"description": "No such conversation in your workspace"},
        409: _MERGED[409],
        422: {"description": "No file, an empty file, or one over 10 MB"},
    },
)
def upload(
    conversation_id: str, file: UploadFile, principal: CurrentAgent, request: Request, db: Db
) -> UploadRead:
    """Upload a file (multipart field ``file``, up to 10 MB) to send in this conversation:
    name the returned ``id`` in a reply's or note's ``attachment_ids``. Its type is read
    from its bytes or name, not from what the client says. An upload not sent within a
    day is dropped."""
    # Starlette has spooled the body to a temporary file: read one byte past the limit only.
    data = file.file.read(files.MAX_UPLOAD_BYTES + 1)
    # Checked, hashed and written before this request's write transaction begins (10 MB
    # must not hold SQLite's one write lock); a copy no upload names is swept.
    stored = files.store(data, LocalStorage(request.app.state.settings.attachments_dir))
    conv = service.get_writable(
        db, workspace_id=principal.workspace_id, conversation_id=conversation_id
    )
    row = files.upload(
        db, conversation=conv, user_id=principal.user_id, filename=file.filename, stored=stored
    )
    return UploadRead.model_validate(row)


@router.post(
    "/{conversation_id}/messages",
    response_model=MessageRead,
    status_code=201,
    responses={
        404: {"description": "No such conversation, inbox or upload here"},
        409: {
            "description": "The customer opted out of the inbox's channel (an SMS STOP): "
            "type .../problems/no-consent; or never wrote to the inbox's Messenger page or "
            "Instagram account, whose ids are its own: type .../problems/not-this-page "
            "(``wrote_to``: the inboxes they did write to); nothing stored; or " + MERGED,
        },
        422: {
            "description": "Neither text nor files, files the channel cannot send, or "
            "outside the channel's reply window",
        },
    },
)
def reply(
    conversation_id: str,
    body: ReplyIn,
    principal: CurrentAgent,
    db: Db,
    settings: CurrentSettings,
) -> MessageRead:
    """Reply to the customer, with files uploaded first (``attachment_ids``): stored now,
    delivered by the ``deliver`` job, text first and then each file on channels that send
    them separately."""
    conv = service.get_writable(
        db, workspace_id=principal.workspace_id, conversation_id=conversation_id
    )
    msg = service.reply(
        db,
        conversation=conv,
        author_id=principal.user_id,
        text=body.text,
        html=body.html,
        via_inbox_id=body.inbox_id,
        attachment_ids=body.attachment_ids,
        cc=body.cc,
        bcc=body.bcc,
    )
    return reads.message_reads(db, [msg], base_url=settings.public_url)[0]


@router.post(
    "/{conversation_id}/notes", response_model=NoteRead, status_code=201, responses=_MERGED
)
def add_note(
    conversation_id: str,
    body: NoteIn,
    principal: CurrentAgent,
    db: Db,
    settings: CurrentSettings,
) -> NoteRead:
    """A private note for colleagues (with files uploaded first); never sent to the
    customer. Says whom its @mentions notified, and which fit several members (and so
    notified none of them)."""
    conv = service.get_writable(
        db, workspace_id=principal.workspace_id, conversation_id=conversation_id
    )
    noted = service.note(
        db,
        conversation=conv,
        author_id=principal.user_id,
        text=body.text,
        attachment_ids=body.attachment_ids,
    )
    return NoteRead(
        **reads.message_reads(db, [noted.message], base_url=settings.public_url)[0].model_dump(),
        mentioned=noted.notified,
        ambiguous_mentions=[
            AmbiguousMention(
                handle=handle,
                members=[MentionedMember(id=m.id, name=m.name, email=m.email) for m in found],
            )
            for handle, found in noted.ambiguous.items()
        ],
        unknown_mentions=noted.unknown,
    )


@router.post(
    "/{conversation_id}/macros/{macro_id}",
    response_model=MacroRunOut,
    responses={
        403: {"description": "A viewer: only agents, admins and owners run macros"},
        404: {
            "description": "No such conversation or macro in your workspace, or another "
            "member's personal macro"
        },
        409: _MERGED[409],
        422: {
            "description": "One of the macro's actions cannot run (its template fails, the "
            "inbox is switched off, outside the channel's reply window); nothing changed",
        },
    },
)
def run_macro(
    conversation_id: str, macro_id: str, principal: CurrentAgent, request: Request, db: Db
) -> MacroRunOut:
    """Run a macro on the conversation, its actions in order, as the caller: each change is
    the single-conversation one (events, automation triggers, SLA), its activity line
    "... by Ann through the macro “Refund”", its replies and notes Ann's. An action whose
    target has gone since the macro was saved is left out and listed in ``skipped``; a
    customer who cannot be sent its message is not, and the conversation says why."""
    conv = service.get(db, workspace_id=principal.workspace_id, conversation_id=conversation_id)
    macro = automation.get_macro(
        db, workspace_id=principal.workspace_id, macro_id=macro_id, user_id=principal.user_id
    )
    _held_afresh(db, [conv])
    service.writable(conv)  # a merge committed meanwhile included
    skipped = _ran_macro(db, principal=principal, request=request, macro=macro, conversation=conv)
    base_url = request.app.state.settings.public_url
    return MacroRunOut(conversation=_detail(db, conv, base_url), skipped=_skipped(skipped))


@router.post("/{conversation_id}/assign", response_model=ConversationRead, responses=_MERGED)
def assign(
    conversation_id: str, body: AssignIn, principal: CurrentAgent, request: Request, db: Db
) -> ConversationRead:
    """Give the conversation to an agent and/or a team: a field left out keeps its value,
    null clears it (two agents changing one each at once both keep theirs)."""
    conv = service.get(db, workspace_id=principal.workspace_id, conversation_id=conversation_id)
    _held_afresh(db, [conv])
    service.writable(conv)  # a merge committed meanwhile included
    assignee_id, team_id = _given(body, conv)
    service.assign(
        db, conversation=conv, assignee_id=assignee_id, team_id=team_id, actor_id=principal.user_id
    )
    audit(
        db,
        workspace_id=principal.workspace_id,
        actor=actor_of(principal, request),
        action="conversation.assign",
        target_type="conversation",
        target_id=conv.id,
        data={"assignee_id": assignee_id, "team_id": team_id},
    )
    return _read(conv, service.labels_of(db, [conv.id])[conv.id])


@router.post("/{conversation_id}/status", response_model=ConversationRead, responses=_MERGED)
def set_status(
    conversation_id: str, body: StatusIn, principal: CurrentAgent, db: Db
) -> ConversationRead:
    conv = service.get_writable(
        db, workspace_id=principal.workspace_id, conversation_id=conversation_id
    )
    service.set_status(
        db,
        conversation=conv,
        status=body.status,
        snoozed_until=body.snoozed_until,
        actor_id=principal.user_id,
    )
    return _read(conv, service.labels_of(db, [conv.id])[conv.id])


@router.post("/{conversation_id}/priority", response_model=ConversationRead, responses=_MERGED)
def set_priority(
    conversation_id: str, body: PriorityIn, principal: CurrentAgent, db: Db
) -> ConversationRead:
    conv = service.get_writable(
        db, workspace_id=principal.workspace_id, conversation_id=conversation_id
    )
    service.set_priority(db, conversation=conv, priority=body.priority, actor_id=principal.user_id)
    return _read(conv, service.labels_of(db, [conv.id])[conv.id])


@router.post("/{conversation_id}/labels", response_model=list[str], responses=_MERGED)
def add_labels(conversation_id: str, body: LabelsIn, principal: CurrentAgent, db: Db) -> list[str]:
    conv = service.get_writable(
        db, workspace_id=principal.workspace_id, conversation_id=conversation_id
    )
    return service.add_labels(db, conversation=conv, labels=body.labels)


@router.delete(
    "/{conversation_id}/labels/{label:path}", response_model=list[str], responses=_MERGED
)
def remove_label(conversation_id: str, label: str, principal: CurrentAgent, db: Db) -> list[str]:
    conv = service.get_writable(
        db, workspace_id=principal.workspace_id, conversation_id=conversation_id
    )
    return service.remove_label(db, conversation=conv, label=label)


@router.post(
    "/{conversation_id}/messages/{message_id}/retry",
    response_model=MessageRead,
    responses={
        409: {"description": "The customer opted out, or never wrote to the page; or " + MERGED},
        422: {
            "description": "Not a reply that failed, or outside the channel's reply window",
        },
    },
)
def send_again(
    conversation_id: str,
    message_id: str,
    principal: CurrentAgent,
    db: Db,
    settings: CurrentSettings,
) -> MessageRead:
    """Send a reply that failed again (queued for the ``deliver`` job), after the checks a
    new reply meets; what the provider had already accepted of it is not sent twice."""
    conv = service.get_writable(
        db, workspace_id=principal.workspace_id, conversation_id=conversation_id
    )
    msg = service.send_again(db, conversation=conv, message_id=message_id)
    return reads.message_reads(db, [msg], base_url=settings.public_url)[0]


@router.get("/{conversation_id}/messages/{message_id}", response_model=MessageRead)
def get_message(
    conversation_id: str,
    message_id: str,
    principal: CurrentMember,
    db: Db,
    settings: CurrentSettings,
) -> MessageRead:
    conv = service.get(db, workspace_id=principal.workspace_id, conversation_id=conversation_id)
    msg = service.get_message(db, conversation=conv, message_id=message_id)
    return reads.message_reads(db, [msg], base_url=settings.public_url)[0]


sla_router = APIRouter(prefix="/api/v1", tags=["sla"])


@sla_router.get("/sla-policies", response_model=list[SlaPolicyRead])
def list_sla_policies(principal: CurrentMember, db: Db) -> list[SlaPolicyRead]:
    return [SlaPolicyRead.model_validate(p) for p in sla.policies(db, principal.workspace_id)]


@sla_router.post("/sla-policies", response_model=SlaPolicyRead, status_code=201)
def create_sla_policy(body: SlaPolicyIn, principal: CurrentAdmin, db: Db) -> SlaPolicyRead:
    """A policy: targets in business minutes for conversations matching its conditions."""
    row = sla.create_policy(
        db, workspace_id=principal.workspace_id, data=body.model_dump(mode="json")
    )
    return SlaPolicyRead.model_validate(row)


@sla_router.patch("/sla-policies/{policy_id}", response_model=SlaPolicyRead)
def update_sla_policy(
    policy_id: str, body: SlaPolicyPatch, principal: CurrentAdmin, db: Db
) -> SlaPolicyRead:
    """Change a policy: its open conversations are timed anew under it at once; which
    conversations it covers follows its conditions as each next changes."""
    row = sla.update_policy(
        db,
        workspace_id=principal.workspace_id,
        policy_id=policy_id,
        data=body.model_dump(mode="json", exclude_unset=True),
    )
    return SlaPolicyRead.model_validate(row)


@sla_router.delete("/sla-policies/{policy_id}", status_code=204)
def delete_sla_policy(policy_id: str, principal: CurrentAdmin, db: Db) -> Response:
    sla.delete_policy(db, workspace_id=principal.workspace_id, policy_id=policy_id)
    return Response(status_code=204)


@sla_router.get("/business-hours", response_model=BusinessHoursIn)
def get_business_hours(principal: CurrentMember, db: Db) -> BusinessHoursIn:
    row = sla.get_calendar_row(db, workspace_id=principal.workspace_id)
    return BusinessHoursIn(timezone=row.timezone, hours=row.hours, holidays=row.holidays)


@sla_router.put("/business-hours", response_model=BusinessHoursIn)
def set_business_hours(body: BusinessHoursIn, principal: CurrentAdmin, db: Db) -> BusinessHoursIn:
    """Opening hours in the workspace's time zone, and holidays: SLA clocks run inside them.
    The clocks running are timed anew under them (a large workspace's by a job, at once)."""
    row = sla.set_calendar(
        db,
        workspace_id=principal.workspace_id,
        timezone=body.timezone,
        hours=body.hours,
        holidays=body.holidays,
    )
    return BusinessHoursIn(timezone=row.timezone, hours=row.hours, holidays=row.holidays)


@router.get("/{conversation_id}/sla", response_model=ConversationSlaRead | None)
def get_sla(conversation_id: str, principal: CurrentMember, db: Db) -> ConversationSlaRead | None:
    """The conversation's due times and SLA state (null when no policy applies), and
    whether its resolution clock is paused."""
    conv = service.get(db, workspace_id=principal.workspace_id, conversation_id=conversation_id)
    row = sla.state_of(db, conversation=conv)
    if row is None:
        return None
    out = ConversationSlaRead.model_validate(row)
    left = sla.paused(db, [conv], {conv.id: row}).get(conv.id)
    if left is not None:
        out.resolution_paused = True
        out.resolution_left_seconds = int(left.total_seconds())
    return out


canned_router = APIRouter(prefix="/api/v1/canned-responses", tags=["canned responses"])


@canned_router.get("", response_model=list[CannedRead])
def list_canned(principal: CurrentMember, db: Db, prefix: str = "") -> list[CannedRead]:
    """Canned responses, optionally those whose shortcut starts with ``prefix``."""
    rows = canned.list_all(db, workspace_id=principal.workspace_id, prefix=prefix)
    return [CannedRead.model_validate(r) for r in rows]


@canned_router.get("/{canned_id}/for-customer/{customer_id}", response_model=RenderedOut)
def render_canned_for_customer(
    canned_id: str, customer_id: str, principal: CurrentAgent, db: Db
) -> RenderedOut:
    """A canned response filled in for a customer and the calling agent, for the first
    message of a conversation not started yet (its ``conversation`` is empty)."""
    customer = customers.get(db, workspace_id=principal.workspace_id, customer_id=customer_id)
    row = canned.get(db, workspace_id=principal.workspace_id, canned_id=canned_id)
    return RenderedOut(
        text=canned.render(
            db, canned=row, conversation=None, agent_id=principal.user_id, customer=customer
        )
    )


@canned_router.post("", response_model=CannedRead, status_code=201)
def create_canned(body: CannedIn, principal: CurrentAgent, db: Db) -> CannedRead:
    row = canned.create(
        db, workspace_id=principal.workspace_id, shortcut=body.shortcut, text=body.text
    )
    return CannedRead.model_validate(row)


@canned_router.put("/{canned_id}", response_model=CannedRead)
def update_canned(canned_id: str, body: CannedIn, principal: CurrentAgent, db: Db) -> CannedRead:
    """Change a canned response's shortcut and text."""
    row = canned.get(db, workspace_id=principal.workspace_id, canned_id=canned_id)
    return CannedRead.model_validate(
        canned.update(db, row=row, shortcut=body.shortcut, text=body.text)
    )


@canned_router.delete("/{canned_id}", status_code=204)
def delete_canned(canned_id: str, principal: CurrentAgent, db: Db) -> Response:
    row = canned.get(db, workspace_id=principal.workspace_id, canned_id=canned_id)
    canned.delete(db, row=row, admin=principal.has(Role.admin), user_id=principal.user_id)
    return Response(status_code=204)


@router.get("/{conversation_id}/canned/{canned_id}", response_model=RenderedOut)
def render_canned(
    conversation_id: str, canned_id: str, principal: CurrentAgent, db: Db
) -> RenderedOut:
    """A canned response filled in for this conversation's customer and the calling agent."""
    conv = service.get(db, workspace_id=principal.workspace_id, conversation_id=conversation_id)
    row = canned.get(db, workspace_id=principal.workspace_id, canned_id=canned_id)
    return RenderedOut(
        text=canned.render(db, canned=row, conversation=conv, agent_id=principal.user_id)
    )


@router.post("/{conversation_id}/read", status_code=204)
def mark_read(conversation_id: str, principal: CurrentMember, db: Db) -> Response:
    """The calling agent has seen this conversation up to now."""
    conv = service.get(db, workspace_id=principal.workspace_id, conversation_id=conversation_id)
    service.mark_read(db, conversation=conv, user_id=principal.user_id)
    return Response(status_code=204)


@sla_router.get("/unread-counts")
def unread_counts(principal: CurrentMember, db: Db) -> dict[str, int]:
    """Open conversations with customer messages the caller has not read."""
    return service.unread_counts(db, workspace_id=principal.workspace_id, user_id=principal.user_id)


@router.post("/{conversation_id}/typing", status_code=204)
def typing(conversation_id: str, principal: CurrentAgent, request: Request, db: ReadDb) -> Response:
    """The agent is typing: shown to the customer's widget and to colleagues, stored nowhere.
    429 past a member's budget of viewing and typing notices."""
    presence.spend_request(request.app.state.presence_limiter, principal)
    conv = service.get(db, workspace_id=principal.workspace_id, conversation_id=conversation_id)
    service.typing(conversation=conv, user_id=principal.user_id)
    return Response(status_code=204)


@router.get(
    "/{conversation_id}/messages/{message_id}/attachments", response_model=list[AttachmentRead]
)
def list_attachments(
    conversation_id: str, message_id: str, principal: CurrentMember, db: Db
) -> list[AttachmentRead]:
    """A message's attachments (for email, the original message too, as ``original.eml``)."""
    conv = service.get(db, workspace_id=principal.workspace_id, conversation_id=conversation_id)
    msg = service.get_message(db, conversation=conv, message_id=message_id)
    return [AttachmentRead.model_validate(a) for a in service.attachments(db, message=msg)]


@router.get(
    "/{conversation_id}/messages/{message_id}/attachments/{attachment_id}",
    response_class=Response,
    responses=files.DOWNLOAD_RESPONSES,
)
def download_attachment(
    conversation_id: str,
    message_id: str,
    attachment_id: str,
    principal: CurrentMember,
    request: Request,
    db: Db,
) -> Response:
    """The attachment's bytes, always as a download: never rendered in our origin."""
    conv = service.get(db, workspace_id=principal.workspace_id, conversation_id=conversation_id)
    msg = service.get_message(db, conversation=conv, message_id=message_id)
    att = service.get_attachment(db, message=msg, attachment_id=attachment_id)
    data = LocalStorage(request.app.state.settings.attachments_dir).open(att.storage_key)
    # Its whole name, RFC 6266 style, as the widget's downloads and the links we sign
    # (a name kept "plain ASCII" by isalnum() kept 报告 too, and the header failed: a 500).
    return files.download(data, att.filename)


files_router = APIRouter(tags=["files"])


# HEAD too: some fetchers ask for the type and size before downloading.
@files_router.api_route(
    "/files/{attachment_id}/{filename}", methods=["GET", "HEAD"], include_in_schema=False
)
def signed_file(
    attachment_id: str, filename: str, request: Request, db: Db, expires: str = "", sig: str = ""
) -> Response:
    """One attachment, to whoever holds a link we signed (providers fetching a file an
    agent sent): an unknown, altered or expired link is a 404, whatever the file."""
    secret_key = request.app.state.settings.secret_key.get_secret_value()
    if not files.link_valid(
        secret_key=secret_key, attachment_id=attachment_id, expires=expires, sig=sig
    ):
        raise NotFound("file")
    att = db.get(Attachment, attachment_id)
    if att is None:
        raise NotFound("file")
    data = LocalStorage(request.app.state.settings.attachments_dir).open(att.storage_key)
    # Providers want the real type (WhatsApp and Twilio check it); still a download.
    response = files.download(data, att.filename, files.servable_type(att.content_type))
    response.headers["Cache-Control"] = "private, max-age=3600"
    return response


labels_router = APIRouter(prefix="/api/v1/labels", tags=["labels"])


@labels_router.get("", response_model=list[LabelRead])
def list_labels(principal: CurrentMember, db: Db) -> list[LabelRead]:
    """The workspace's labels, by name."""
    rows = labels.list_all(db, workspace_id=principal.workspace_id)
    return [LabelRead.model_validate(r) for r in rows]


@labels_router.post("", response_model=LabelRead, status_code=201)
def create_label(body: LabelIn, principal: CurrentAdmin, db: Db) -> LabelRead:
    row = labels.create(db, workspace_id=principal.workspace_id, name=body.name, colour=body.colour)
    return LabelRead.model_validate(row)


@labels_router.patch("/{label_id:path}", response_model=LabelRead)
def update_label(
    label_id: str, body: LabelUpdate, principal: CurrentAdmin, request: Request, db: Db
) -> LabelRead:
    """Rename (every conversation, SLA policy and automation rule naming it follows) or
    recolour a label, given by id or by name."""
    row = labels.get(db, workspace_id=principal.workspace_id, label_id=label_id)
    before = row.name
    labels.update_label(db, label=row, name=body.name, colour=body.colour)
    audit(
        db,
        workspace_id=principal.workspace_id,
        actor=actor_of(principal, request),
        action="label.update",
        target_type="label",
        target_id=row.id,
        data={"from": before, "name": row.name, "colour": row.colour},
    )
    return LabelRead.model_validate(row)


@labels_router.delete(
    "/{label_id:path}",
    response_model=LabelDeleted,
    responses={409: {"description": "an automation rule or SLA policy still uses it"}},
)
def delete_label(label_id: str, principal: CurrentAdmin, request: Request, db: Db) -> LabelDeleted:
    """Delete a label (by id or by name): it comes off every conversation of the workspace,
    and off the filters of the saved views that filtered on it, which the answer names.
    Refused (409) while an automation rule or an SLA policy names it."""
    row = labels.get(db, workspace_id=principal.workspace_id, label_id=label_id)
    changed = labels.delete_label(db, label=row, actor_id=principal.user_id)
    audit(
        db,
        workspace_id=principal.workspace_id,
        actor=actor_of(principal, request),
        action="label.delete",
        target_type="label",
        target_id=row.id,
        # The views it changed, by id, name and owner: the answer's words ("your own view")
        # are for the admin who asked, not for whoever reads the log later.
        data={
            "name": row.name,
            "saved_views": [
                {"id": view.id, "name": view.name, "owner_id": view.owner_id} for view, _ in changed
            ],
        },
    )
    return LabelDeleted(saved_views=[said for _, said in changed])
