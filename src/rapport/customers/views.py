"""Customer endpoints: thin wrappers over customers.service."""

import io
from typing import Any

from fastapi import APIRouter, Query, Request, Response, UploadFile
from starlette.concurrency import run_in_threadpool

from rapport.auth.deps import CurrentAdmin, CurrentAgent, CurrentMember, Db
from rapport.auth.service import Principal, names_of
from rapport.auth.views import actor_of
from rapport.conversations import files
from rapport.conversations.schemas import UploadRead
from rapport.customers import duplicates, importer, merge, notes, profile, service
from rapport.customers.models import Customer
from rapport.customers.schemas import (
    AttributeDefinitionChange,
    AttributeDefinitionIn,
    AttributeDefinitionRead,
    BulkTagChanges,
    ConsentIn,
    ConsentRead,
    ConsentState,
    CustomerCreate,
    CustomerDetail,
    CustomerNoteChange,
    CustomerNoteIn,
    CustomerNoteRead,
    CustomerPage,
    CustomerProfile,
    CustomerRead,
    CustomerUpdate,
    EventCreate,
    IdentityIn,
    IdentityRead,
    MergeConflict,
    MergeIn,
    MergePreview,
    MergeRead,
    ProfileFigures,
    ScanQueued,
    SuggestionAccept,
    SuggestionRead,
    TagChanges,
    TagsIn,
    TimelinePage,
)
from rapport.events import service as events
from rapport.privacy import access, erasure
from rapport.privacy.service import audit
from rapport.problems import Invalid
from rapport.storage import LocalStorage
from rapport.workspaces.models import Workspace

router = APIRouter(prefix="/api/v1/customers", tags=["customers"])


def _detail(db: Db, customer: Customer) -> CustomerDetail:
    return CustomerDetail(
        **CustomerRead.model_validate(customer).model_dump(),
        identities=[
            IdentityRead.model_validate(i) for i in service.identities(db, customer=customer)
        ],
    )


def _workspace(db: Db, workspace_id: str) -> Workspace:
    ws = db.get(Workspace, workspace_id)
    assert ws is not None
    return ws


@router.get("", response_model=CustomerPage)
def search_customers(
    principal: CurrentMember,
    db: Db,
    q: str | None = Query(default=None, max_length=320),
    tag: str | None = Query(default=None, max_length=64),
    attribute: list[str] = Query(
        default=[],
        max_length=10,
        description="``key:value``, each one holding (``plan:Pro``, ``seats:10``): the "
        "attribute is the value or a list holding it, read in the key's defined type",
    ),
    cursor: str | None = None,
    limit: int = Query(default=25, ge=1, le=100),
) -> CustomerPage:
    """Customers by name, email, phone or any handle, by tag and by custom attributes;
    newest activity first."""
    pairs = []
    for given in attribute:
        key, colon, value = given.partition(":")
        if not colon:
            raise Invalid(f"attribute is key:value, not {given[:70]!r}")
        pairs.append((key, value))
    found = service.search(
        db,
        workspace_id=principal.workspace_id,
        q=q,
        tag=tag,
        attributes=pairs,
        cursor=cursor,
        limit=limit,
    )
    return CustomerPage(
        items=[CustomerRead.model_validate(r) for r in found.customers],
        next_cursor=found.next_cursor,
        truncated=found.truncated,
    )


@router.post("", response_model=CustomerDetail, status_code=201)
def create_customer(
    body: CustomerCreate, principal: CurrentAgent, request: Request, db: Db
) -> CustomerDetail:
    customer = service.create(db, workspace=_workspace(db, principal.workspace_id), data=body)
    audit(
        db,
        workspace_id=principal.workspace_id,
        actor=actor_of(principal, request),
        action="customer.create",
        target_type="customer",
        target_id=customer.id,
    )
    return _detail(db, customer)


@router.get("/{customer_id}", response_model=CustomerDetail)
def get_customer(customer_id: str, principal: CurrentMember, db: Db) -> CustomerDetail:
    return _detail(
        db, service.get(db, workspace_id=principal.workspace_id, customer_id=customer_id)
    )


@router.patch("/{customer_id}", response_model=CustomerDetail)
def update_customer(
    customer_id: str, body: CustomerUpdate, principal: CurrentAgent, request: Request, db: Db
) -> CustomerDetail:
    customer = service.get(db, workspace_id=principal.workspace_id, customer_id=customer_id)
    service.update(db, customer=customer, data=body)
    audit(
        db,
        workspace_id=principal.workspace_id,
        actor=actor_of(principal, request),
        action="customer.update",
        target_type="customer",
        target_id=customer.id,
        data={"fields": sorted(body.model_fields_set)},
    )
    return _detail(db, customer)


def _audit_export(request: Request, principal: Principal, *, target_id: str | None) -> None:
    """Who took customers' data out, when (in a write transaction of its own: the export
    itself only reads)."""
    with request.app.state.database.session() as db:
        audit(
            db,
            workspace_id=principal.workspace_id,
            actor=actor_of(principal, request),
            action="customer.export",
            target_type="customer" if target_id else "workspace",
            target_id=target_id or principal.workspace_id,
        )


@router.get("/{customer_id}/export", response_model=access.CustomerExport)
def export_customer(
    customer_id: str, principal: CurrentAdmin, request: Request, db: Db
) -> Response:
    """Everything held about this customer, as one JSON document (a data subject's access
    request): the profile and any record merged into it, handles, tags, consent history,
    events, orders, web chat form entries, and every conversation with all its messages."""
    customer = service.get(db, workspace_id=principal.workspace_id, customer_id=customer_id)
    document = access.export_customer(
        db, customer=customer, base_url=request.app.state.settings.public_url
    )
    _audit_export(request, principal, target_id=customer.id)
    return Response(
        document.model_dump_json(indent=2),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="customer-{customer.id}.json"'},
    )


@router.delete("/{customer_id}", status_code=204)
def erase_customer(customer_id: str, principal: CurrentAdmin, request: Request, db: Db) -> Response:
    """Erase a customer for good (a data subject's right to erasure): their profile,
    handles, timeline, conversations with every message and file, and any customer merged
    into them. Realtime copies and unshared files follow within moments. Cannot be undone."""
    customer = service.get(db, workspace_id=principal.workspace_id, customer_id=customer_id)
    done = erasure.erase_customer(db, customer=customer)
    audit(
        db,
        workspace_id=principal.workspace_id,
        actor=actor_of(principal, request),
        action="customer.erase",
        target_type="customer",
        target_id=customer_id,
        data={
            "customer_ids": done.customer_ids,
            "conversations": done.conversations,
            "messages": done.messages,
            "files": done.files,
        },
    )
    return Response(status_code=204)


@router.post(
    "/{customer_id}/uploads",
    response_model=UploadRead,
    status_code=201,
    responses={
        404: {"description": "No such customer in your workspace"},
        422: {"description": "No file, an empty file, or one over 10 MB"},
    },
)
def upload_for_first_message(
    customer_id: str, file: UploadFile, principal: CurrentAgent, request: Request, db: Db
) -> UploadRead:
    """Upload a file (multipart field ``file``, up to 10 MB) to send in the first message
    of a conversation started with this customer: name the returned ``id`` in `POST
    /api/v1/conversations`'s ``attachment_ids``. As a reply's uploads: its type read from
    its bytes or name, dropped if not sent within a day."""
    data = file.file.read(files.MAX_UPLOAD_BYTES + 1)
    # Written before the write transaction begins (see the conversations' uploads).
    stored = files.store(data, LocalStorage(request.app.state.settings.attachments_dir))
    customer = service.get(db, workspace_id=principal.workspace_id, customer_id=customer_id)
    row = files.upload(
        db, customer=customer, user_id=principal.user_id, filename=file.filename, stored=stored
    )
    return UploadRead.model_validate(row)


@router.post("/{customer_id}/identities", response_model=IdentityRead, status_code=201)
def add_identity(
    customer_id: str, body: IdentityIn, principal: CurrentAgent, request: Request, db: Db
) -> IdentityRead:
    customer = service.get(db, workspace_id=principal.workspace_id, customer_id=customer_id)
    row = service.add_identity(
        db,
        workspace=_workspace(db, principal.workspace_id),
        customer=customer,
        kind=body.kind,
        value=body.value,
        verified=body.verified,
    )
    audit(
        db,
        workspace_id=principal.workspace_id,
        actor=actor_of(principal, request),
        action="customer.identity_add",
        target_type="customer",
        target_id=customer.id,
        data={"kind": body.kind.value, "verified": row.verified},
    )
    return IdentityRead.model_validate(row)


@router.delete("/{customer_id}/identities/{identity_id}", status_code=204)
def remove_identity(
    customer_id: str, identity_id: str, principal: CurrentAgent, request: Request, db: Db
) -> Response:
    customer = service.get(db, workspace_id=principal.workspace_id, customer_id=customer_id)
    service.remove_identity(db, customer=customer, identity_id=identity_id)
    audit(
        db,
        workspace_id=principal.workspace_id,
        actor=actor_of(principal, request),
        action="customer.identity_remove",
        target_type="customer",
        target_id=customer.id,
    )
    return Response(status_code=204)


@router.post("/{customer_id}/events", status_code=201)
def add_event(
    customer_id: str, body: EventCreate, principal: CurrentAgent, db: Db
) -> dict[str, str]:
    customer = service.get(db, workspace_id=principal.workspace_id, customer_id=customer_id)
    row = events.add_event(db, customer=customer, data=body)
    return {"id": row.id, "customer_id": row.customer_id}


@router.get("/{customer_id}/timeline", response_model=TimelinePage)
def timeline(
    customer_id: str,
    principal: CurrentMember,
    db: Db,
    kind: list[str] | None = Query(
        default=None, description="message, event, order and/or merge (all when not given)"
    ),
    channel: str | None = None,
    cursor: str | None = None,
    limit: int = Query(default=50, ge=1, le=100),
) -> TimelinePage:
    """The customer's history across every channel and event source, newest first."""
    kinds = set(kind or [])
    if kinds - {"message", "event", "order", "merge"}:
        raise Invalid("kind must be message, event, order or merge")
    customer = service.get(db, workspace_id=principal.workspace_id, customer_id=customer_id)
    items, nxt = service.timeline(
        db, customer=customer, kinds=kinds or None, channel=channel, cursor=cursor, limit=limit
    )
    return TimelinePage(items=items, next_cursor=nxt)


@router.post("/{customer_id}/merge", response_model=MergeRead, status_code=201)
def merge_customer(
    customer_id: str, body: MergeIn, principal: CurrentAgent, request: Request, db: Db
) -> MergeRead:
    """Merge another customer into this one; it can be undone."""
    row = merge.merge(
        db,
        workspace_id=principal.workspace_id,
        survivor_id=customer_id,
        merged_id=body.merged_id,
        actor=actor_of(principal, request),
        reason=body.reason,
        take=body.take,
    )
    return MergeRead.model_validate(row)


@router.get("/{customer_id}/merge-preview", response_model=MergePreview)
def merge_preview(
    customer_id: str,
    principal: CurrentMember,
    db: Db,
    merged_id: str = Query(min_length=1, max_length=32),
) -> MergePreview:
    """What merging ``merged_id`` into this customer would choose between: the fields both
    hold with different values (the survivor's kept unless the merge takes the other's)."""
    found = merge.preview(
        db, workspace_id=principal.workspace_id, survivor_id=customer_id, merged_id=merged_id
    )
    return MergePreview(conflicts=[MergeConflict(**c) for c in found])


@router.get("/{customer_id}/merges", response_model=list[MergeRead])
def list_merges(customer_id: str, principal: CurrentMember, db: Db) -> list[MergeRead]:
    service.get(db, workspace_id=principal.workspace_id, customer_id=customer_id)
    rows = merge.merges_of(db, workspace_id=principal.workspace_id, customer_id=customer_id)
    return [MergeRead.model_validate(r) for r in rows]


merges_router = APIRouter(prefix="/api/v1/customer-merges", tags=["customers"])


@merges_router.post("/{merge_id}/undo", response_model=list[CustomerRead])
def undo_merge(
    merge_id: str, principal: CurrentAgent, request: Request, db: Db
) -> list[CustomerRead]:
    """Undo a merge: both customers come back as they were. While the survivor has since
    been merged into another customer, a 409: undo that later merge first."""
    a, b = merge.unmerge(
        db,
        workspace_id=principal.workspace_id,
        merge_id=merge_id,
        actor=actor_of(principal, request),
    )
    return [CustomerRead.model_validate(a), CustomerRead.model_validate(b)]


files_router = APIRouter(prefix="/api/v1/customer-files", tags=["customers"])


@files_router.post(
    "/import",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/x-ndjson": {"schema": {"type": "string"}},
            },
        }
    },
)
async def import_file(
    request: Request,
    principal: CurrentAdmin,
    format: str = Query(default="csv", pattern="^(csv|jsonl)$"),
    map: list[str] = Query(default_factory=list),
    dry_run: bool = False,
) -> dict[str, Any]:
    """Import customers from a CSV or JSONL request body, as `rapport import customers` does."""
    try:
        mapping = importer.parse_mapping(map)
    except ValueError as exc:
        raise Invalid(str(exc)) from exc
    body = await request.body()
    # The temporary copy is written and removed in the thread too: a file of many
    # megabytes written on the event loop held every other request and socket meanwhile.
    try:
        report = await run_in_threadpool(
            importer.import_upload,
            request.app.state.database,
            workspace_id=principal.workspace_id,
            data=body,
            format_=format,
            mapping=mapping,
            dry_run=dry_run,
        )
    except importer.UnreadableFile as exc:
        raise Invalid(str(exc)) from exc
    return {
        "rows": report.rows,
        "created": report.created,
        "updated": report.updated,
        "to_review": report.to_review,
        "errors": [{"line": e.line, "reason": e.reason} for e in report.errors],
    }


@files_router.get(
    "/export",
    response_class=Response,
    responses={
        200: {
            "description": "every customer, one row or line each",
            "content": {"text/csv": {}, "application/x-ndjson": {}},
        }
    },
)
def export_file(
    request: Request,
    principal: CurrentAdmin,
    format: str = Query(default="csv", pattern="^(csv|jsonl)$"),
) -> Response:
    """Download the workspace's customers as CSV or JSONL."""
    out = io.StringIO()
    rows = importer.export_rows(request.app.state.database, principal.workspace_id)
    importer.write_rows(out, rows, format)
    _audit_export(request, principal, target_id=None)
    media = "text/csv" if format == "csv" else "application/x-ndjson"
    return Response(
        out.getvalue(),
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="customers.{format}"'},
    )


suggestions_router = APIRouter(prefix="/api/v1/merge-suggestions", tags=["customers"])


@suggestions_router.get("", response_model=list[SuggestionRead])
def list_suggestions(
    principal: CurrentMember,
    db: Db,
    customer_id: str | None = Query(default=None, max_length=32),
    limit: int = Query(default=50, ge=1, le=200),
) -> list[SuggestionRead]:
    """Pending duplicate suggestions, likeliest first (those of one customer if given)."""
    rows = duplicates.pending(
        db, workspace_id=principal.workspace_id, customer_id=customer_id, limit=limit
    )
    return [SuggestionRead.model_validate(r) for r in rows]


@suggestions_router.post("/scan", response_model=ScanQueued, status_code=202)
def scan_duplicates(principal: CurrentAdmin, db: Db) -> ScanQueued:
    """Look for duplicate customers now, rather than at the nightly pass."""
    return ScanQueued(queued=duplicates.request_scan(db, workspace_id=principal.workspace_id))


@suggestions_router.post("/{suggestion_id}/accept", response_model=SuggestionRead)
def accept_suggestion(
    suggestion_id: str,
    principal: CurrentAgent,
    request: Request,
    db: Db,
    body: SuggestionAccept | None = None,
) -> SuggestionRead:
    """Merge the two customers; the merge can be undone like any other."""
    row = duplicates.accept(
        db,
        workspace_id=principal.workspace_id,
        suggestion_id=suggestion_id,
        actor=actor_of(principal, request),
        survivor_id=body.survivor_id if body else None,
        take=body.take if body else (),
    )
    return SuggestionRead.model_validate(row)


@suggestions_router.post("/{suggestion_id}/dismiss", response_model=SuggestionRead)
def dismiss_suggestion(
    suggestion_id: str, principal: CurrentAgent, request: Request, db: Db
) -> SuggestionRead:
    """Not the same person: the pair is not suggested again."""
    row = duplicates.dismiss(
        db,
        workspace_id=principal.workspace_id,
        suggestion_id=suggestion_id,
        actor=actor_of(principal, request),
    )
    return SuggestionRead.model_validate(row)


@router.get("/{customer_id}/profile", response_model=CustomerProfile)
def customer_profile(customer_id: str, principal: CurrentMember, db: Db) -> CustomerProfile:
    """Everything the side panel shows: identities, typed attributes, tags, consent in force,
    and the figures derived from the customer's history."""
    customer = service.get(db, workspace_id=principal.workspace_id, customer_id=customer_id)
    current, _ = profile.consents(db, customer_id=customer.id)
    return CustomerProfile(
        **_detail(db, customer).model_dump(),
        tags=profile.tags_of(db, customer_id=customer.id),
        consents=[ConsentRead.model_validate(c) for c in current],
        figures=ProfileFigures(**profile.figures(db, customer=customer)),
        attribute_definitions=[
            AttributeDefinitionRead.model_validate(d)
            for d in profile.definitions(db, workspace_id=principal.workspace_id)
        ],
    )


@router.put("/{customer_id}/tags", response_model=list[str])
def set_tags(
    customer_id: str, body: TagsIn, principal: CurrentAgent, request: Request, db: Db
) -> list[str]:
    """Replace the customer's tags."""
    customer = service.get(db, workspace_id=principal.workspace_id, customer_id=customer_id)
    tags = profile.set_tags(db, customer=customer, tags=body.tags)
    _audit_tags(db, principal, request, customer.id, tags)
    return tags


@router.patch("/{customer_id}/tags", response_model=list[str])
def change_tags(
    customer_id: str, body: TagChanges, principal: CurrentAgent, request: Request, db: Db
) -> list[str]:
    """Add and remove tags, leaving the customer's others as they are (what two agents
    tag at once both stays); answers the tags after."""
    customer = service.get(db, workspace_id=principal.workspace_id, customer_id=customer_id)
    tags = profile.change_tags(db, customer=customer, add=body.add, remove=body.remove)
    _audit_tags(db, principal, request, customer.id, tags)
    return tags


@router.post("/bulk-tags")
def change_many_tags(
    body: BulkTagChanges, principal: CurrentAgent, request: Request, db: Db
) -> dict[str, int]:
    """Add and remove the same tags on each of up to 100 customers, their other tags left
    as they are; all of them or, if any is not a customer of this workspace, none."""
    customers = [
        service.get(db, workspace_id=principal.workspace_id, customer_id=customer_id)
        # Each is locked as it is tagged: in one order, so that two requests naming the
        # same customers in different orders wait for each other instead of deadlocking.
        for customer_id in sorted(set(body.customer_ids))
    ]
    for customer in customers:
        tags = profile.change_tags(db, customer=customer, add=body.add, remove=body.remove)
        _audit_tags(db, principal, request, customer.id, tags)
    return {"changed": len(customers)}


def _audit_tags(
    db: Db, principal: Principal, request: Request, customer_id: str, tags: list[str]
) -> None:
    audit(
        db,
        workspace_id=principal.workspace_id,
        actor=actor_of(principal, request),
        action="customer.tags",
        target_type="customer",
        target_id=customer_id,
        data={"tags": tags},
    )


@router.get("/{customer_id}/consents", response_model=ConsentState)
def list_consents(customer_id: str, principal: CurrentMember, db: Db) -> ConsentState:
    """The decision in force per channel and purpose, and the full history behind it."""
    customer = service.get(db, workspace_id=principal.workspace_id, customer_id=customer_id)
    current, history = profile.consents(db, customer_id=customer.id)
    return ConsentState(
        current=[ConsentRead.model_validate(c) for c in current],
        history=[ConsentRead.model_validate(c) for c in history],
    )


@router.post("/{customer_id}/consents", response_model=ConsentRead, status_code=201)
def record_consent(
    customer_id: str, body: ConsentIn, principal: CurrentAgent, request: Request, db: Db
) -> ConsentRead:
    """Record a consent given or withdrawn (the history is kept; the newest is in force)."""
    customer = service.get(db, workspace_id=principal.workspace_id, customer_id=customer_id)
    row = profile.record_consent(
        db,
        customer=customer,
        channel=body.channel,
        purpose=body.purpose,
        granted=body.granted,
        source=body.source or "agent",
        user_id=principal.user_id,
    )
    audit(
        db,
        workspace_id=principal.workspace_id,
        actor=actor_of(principal, request),
        action="customer.consent",
        target_type="customer",
        target_id=customer.id,
        data={"channel": body.channel.value, "purpose": row.purpose, "granted": body.granted},
    )
    return ConsentRead.model_validate(row)


def _notes_read(db: Db, rows: list[Any]) -> list[CustomerNoteRead]:
    names = names_of(db, {r.author_id for r in rows if r.author_id})
    return [
        CustomerNoteRead.model_validate(r).model_copy(
            update={"author_name": names.get(r.author_id or "", "")}
        )
        for r in rows
    ]


@router.get("/{customer_id}/notes", response_model=list[CustomerNoteRead])
def list_notes(customer_id: str, principal: CurrentMember, db: Db) -> list[CustomerNoteRead]:
    """What agents wrote down about the customer, newest first (never sent to them)."""
    customer = service.get(db, workspace_id=principal.workspace_id, customer_id=customer_id)
    return _notes_read(db, notes.notes_of(db, customer=customer))


@router.post("/{customer_id}/notes", response_model=CustomerNoteRead, status_code=201)
def add_note(
    customer_id: str, body: CustomerNoteIn, principal: CurrentAgent, request: Request, db: Db
) -> CustomerNoteRead:
    """Write a note about the customer for colleagues (plain text). One written to a record
    merged into another goes to the one it was merged into."""
    customer = service.get(db, workspace_id=principal.workspace_id, customer_id=customer_id)
    note = notes.add(db, customer=customer, author_id=principal.user_id, text=body.text)
    _audit_note(request, principal, db, note, "customer.note_added")
    return _notes_read(db, [note])[0]


def _audit_note(request: Request, principal: Principal, db: Db, note: Any, action: str) -> None:
    """Who wrote, changed or deleted which note (never its text) in the audit log."""
    audit(
        db,
        workspace_id=principal.workspace_id,
        actor=actor_of(principal, request),
        action=action,
        target_type="customer",
        target_id=note.customer_id,
        data={"note_id": note.id, "author_id": note.author_id},
    )


@router.patch(
    "/{customer_id}/notes/{note_id}",
    response_model=CustomerNoteRead,
    responses={409: {"description": "Changed by a colleague since the given updated_at"}},
)
def change_note(
    customer_id: str,
    note_id: str,
    body: CustomerNoteChange,
    principal: CurrentAgent,
    request: Request,
    db: Db,
) -> CustomerNoteRead:
    """Change a note's text (its author, or an admin). With ``updated_at`` as read, a
    colleague's change made since is not overwritten: 409."""
    customer = service.get(db, workspace_id=principal.workspace_id, customer_id=customer_id)
    note = notes.update(
        db,
        note=notes.get(db, customer=customer, note_id=note_id),
        user_id=principal.user_id,
        role=principal.role,
        text=body.text,
        read_at=body.updated_at,
    )
    _audit_note(request, principal, db, note, "customer.note_changed")
    return _notes_read(db, [note])[0]


@router.delete("/{customer_id}/notes/{note_id}", status_code=204)
def delete_note(
    customer_id: str, note_id: str, principal: CurrentAgent, request: Request, db: Db
) -> Response:
    """Delete a note (its author, or an admin)."""
    customer = service.get(db, workspace_id=principal.workspace_id, customer_id=customer_id)
    note = notes.get(db, customer=customer, note_id=note_id)
    notes.delete(db, note=note, user_id=principal.user_id, role=principal.role)
    _audit_note(request, principal, db, note, "customer.note_deleted")
    return Response(status_code=204)


attributes_router = APIRouter(prefix="/api/v1/attribute-definitions", tags=["customers"])


@attributes_router.get("", response_model=list[AttributeDefinitionRead])
def list_definitions(principal: CurrentMember, db: Db) -> list[AttributeDefinitionRead]:
    rows = profile.definitions(db, workspace_id=principal.workspace_id)
    return [AttributeDefinitionRead.model_validate(r) for r in rows]


@attributes_router.post("", response_model=AttributeDefinitionRead, status_code=201)
def create_definition(
    body: AttributeDefinitionIn, principal: CurrentAdmin, request: Request, db: Db
) -> AttributeDefinitionRead:
    """Define a typed custom attribute (text, number, date, boolean, list)."""
    row = profile.define(
        db,
        workspace_id=principal.workspace_id,
        key=body.key,
        type=body.type,
        label=body.label,
        options=body.options,
    )
    audit(
        db,
        workspace_id=principal.workspace_id,
        actor=actor_of(principal, request),
        action="attribute.define",
        target_type="attribute_definition",
        target_id=row.id,
        data={"key": row.key, "type": row.type.value},
    )
    return AttributeDefinitionRead.model_validate(row)


@attributes_router.patch("/{definition_id}", response_model=AttributeDefinitionRead)
def update_definition(
    definition_id: str,
    principal: CurrentAdmin,
    request: Request,
    db: Db,
    body: AttributeDefinitionChange | None = None,
) -> AttributeDefinitionRead:
    """Change a definition's label and, for a list, its allowed values (add, remove,
    reorder); the fields given. The key and type never change (a body naming them is a
    422): values already stored were checked against them. A value taken out of a list
    stays on the customers who hold it, as it was; only values set from now on are
    checked against the new list."""
    change = body or AttributeDefinitionChange()
    row, changes = profile.redefine(
        db,
        workspace_id=principal.workspace_id,
        definition_id=definition_id,
        label=change.label,
        options=change.options,
    )
    if changes:
        audit(
            db,
            workspace_id=principal.workspace_id,
            actor=actor_of(principal, request),
            action="attribute.change",
            target_type="attribute_definition",
            target_id=row.id,
            data={"key": row.key, **changes},
        )
    return AttributeDefinitionRead.model_validate(row)


@attributes_router.delete("/{definition_id}", status_code=204)
def delete_definition(
    definition_id: str, principal: CurrentAdmin, request: Request, db: Db
) -> Response:
    """Forget a definition; values already stored stay, untyped."""
    profile.undefine(db, workspace_id=principal.workspace_id, definition_id=definition_id)
    audit(
        db,
        workspace_id=principal.workspace_id,
        actor=actor_of(principal, request),
        action="attribute.undefine",
        target_type="attribute_definition",
        target_id=definition_id,
    )
    return Response(status_code=204)
