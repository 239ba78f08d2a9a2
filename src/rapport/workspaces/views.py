"""The workspace's own settings, its members, its teams and its saved views."""

from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, Request, Response

from rapport.auth import account
from rapport.auth import service as auth
from rapport.auth.deps import (
    Box,
    CurrentAdmin,
    CurrentAgent,
    CurrentMember,
    CurrentOwner,
    CurrentSettings,
    Db,
    ReadDb,
    forget_principals,
)
from rapport.auth.models import Invitation, Membership, Role, Team, User
from rapport.auth.views import (
    actor_of,
    client_address,
    confirm_password,
    in_a_browser,
    spend_attempt,
)
from rapport.conversations import routing
from rapport.conversations import service as conversations
from rapport.db import utcnow
from rapport.privacy.service import Actor, audit
from rapport.problems import Problem
from rapport.workspaces import invitations, saved_views, service
from rapport.workspaces.models import SavedView, Workspace
from rapport.workspaces.schemas import (
    InvitationAccept,
    InvitationAccepted,
    InvitationPreview,
    InvitationRead,
    InvitationToken,
    MemberCreate,
    MemberRead,
    MemberUpdate,
    PresenceIn,
    SavedViewCounts,
    SavedViewCreate,
    SavedViewPage,
    SavedViewRead,
    SavedViewUpdate,
    TeamCreate,
    TeamRead,
    TeamUpdate,
    TotpResetIn,
    WorkspaceRead,
    WorkspaceUpdate,
)

router = APIRouter(prefix="/api/v1", tags=["workspace"])


def _ws(db: Db, workspace_id: str) -> Workspace:
    ws = db.get(Workspace, workspace_id)
    assert ws is not None
    return ws


def _member(m: Membership, u: User) -> MemberRead:
    now = utcnow()
    return MemberRead(
        user_id=u.id,
        email=u.email,
        name=u.name,
        role=m.role,
        capacity=m.capacity,
        totp_enabled=u.totp_enabled,
        availability=m.availability,
        online=routing.is_online(m, now),
        presence=routing.presence(m, now),
    )


def _team(t: Team, member_ids: list[str]) -> TeamRead:
    return TeamRead(id=t.id, name=t.name, member_ids=member_ids)


@router.get("/workspace", response_model=WorkspaceRead)
def get_workspace(principal: CurrentMember, db: Db) -> WorkspaceRead:
    ws = _ws(db, principal.workspace_id)
    return WorkspaceRead(id=ws.id, name=ws.name, settings=ws.settings, created_at=ws.created_at)


@router.patch("/workspace", response_model=WorkspaceRead)
def update_workspace(
    body: WorkspaceUpdate, principal: CurrentOwner, request: Request, db: Db
) -> WorkspaceRead:
    """Owner-only policies: ``require_2fa``, ``reopen_window_hours``, ``default_region``."""
    ws = service.update_settings(
        db, workspace=_ws(db, principal.workspace_id), changes=body.settings
    )
    audit(
        db,
        workspace_id=ws.id,
        actor=actor_of(principal, request),
        action="workspace.update",
        data=body.settings,
    )
    forget_principals(request)
    return WorkspaceRead(id=ws.id, name=ws.name, settings=ws.settings, created_at=ws.created_at)


@router.get("/members", response_model=list[MemberRead])
def list_members(principal: CurrentMember, db: Db) -> list[MemberRead]:
    return [_member(m, u) for m, u in service.members(db, workspace_id=principal.workspace_id)]


@router.post("/members", response_model=InvitationRead, status_code=202)
def invite_member(
    body: MemberCreate,
    principal: CurrentAdmin,
    request: Request,
    db: Db,
    box: Box,
    settings: CurrentSettings,
) -> InvitationRead:
    """Invite someone by email: they join once they accept the emailed link. The answer is
    the same whether the address has a Rapport account or not."""
    if not settings.mail_smtp_host:
        raise Problem(
            409,
            "no-mail-relay",
            "invitations are emailed, and no outgoing mail relay is set "
            "(RAPPORT_MAIL_SMTP_HOST): set one, or have the operator run "
            "`rapport workspace invite` and pass the link on",
        )
    invitation, _ = invitations.invite(
        db,
        workspace_id=principal.workspace_id,
        email=body.email,
        role=body.role,
        name=body.name or "",
        actor_id=principal.user_id,
        actor_role=principal.role,
        box=box,
    )
    audit(
        db,
        workspace_id=principal.workspace_id,
        actor=actor_of(principal, request),
        action="member.invite",
        target_type="invitation",
        target_id=invitation.id,
        data={"email": invitation.email, "role": invitation.role.value},
    )
    return _invitation(invitation)


def _invitation(i: Invitation) -> InvitationRead:
    return InvitationRead(
        id=i.id,
        email=i.email,
        name=i.name,
        role=i.role,
        invited_by_id=i.invited_by_id,
        created_at=i.created_at,
        expires_at=i.expires_at,
        expired=i.expires_at <= utcnow(),
    )


@router.get("/invitations", response_model=list[InvitationRead])
def list_invitations(principal: CurrentAdmin, db: Db) -> list[InvitationRead]:
    return [_invitation(i) for i in invitations.pending(db, workspace_id=principal.workspace_id)]


@router.delete("/invitations/{invitation_id}", status_code=204)
def withdraw_invitation(
    invitation_id: str, principal: CurrentAdmin, request: Request, db: Db
) -> Response:
    invitation = invitations.withdraw(
        db, workspace_id=principal.workspace_id, invitation_id=invitation_id
    )
    audit(
        db,
        workspace_id=principal.workspace_id,
        actor=actor_of(principal, request),
        action="member.invitation_withdrawn",
        target_type="invitation",
        target_id=invitation.id,
        data={"email": invitation.email},
    )
    return Response(status_code=204)


@router.post("/invitations/preview", response_model=InvitationPreview)
def preview_invitation(body: InvitationToken, db: Db) -> InvitationPreview:
    """What the emailed link invites to (for the page that accepts it)."""
    invitation = invitations.by_token(db, body.token)
    return InvitationPreview(
        workspace=invitations.workspace_name(db, invitation),
        email=invitation.email,
        role=invitation.role,
        expires_at=invitation.expires_at,
        account_exists=invitations.account_exists(db, invitation),
    )


@router.post("/invitations/accept", response_model=InvitationAccepted, status_code=201)
def accept_invitation(
    body: InvitationAccept, request: Request, db: Db, settings: CurrentSettings
) -> InvitationAccepted:
    """Join the workspace: with a new password for a new account, or with the password of
    the address's existing account (rate-limited and locked out as a login is)."""
    spend_attempt(request)
    database = request.app.state.database
    with database.session(write=False) as read:
        email = invitations.by_token(read, body.token).email
    spend_attempt(request, client=False, email=email)
    # Before this request's write transaction begins (argon2 takes ~90 ms by design).
    checked = auth.password_matches(database, email=email, password=body.password)
    try:
        member, user, created = invitations.accept(
            db,
            token=body.token,
            password=body.password,
            name=body.name or "",
            max_failures=settings.login_max_failures,
            lockout_minutes=settings.login_lockout_minutes,
            checked=checked,
        )
    except auth.LoginFailed:
        db.commit()  # keep the failure count even though the request fails
        raise
    audit(
        db,
        workspace_id=member.workspace_id,
        actor=Actor("user", user.id, client_address(request)),
        action="member.join",
        target_type="user",
        target_id=user.id,
        data={"role": member.role.value, "account_created": created},
    )
    return InvitationAccepted(
        workspace_id=member.workspace_id,
        workspace=_ws(db, member.workspace_id).name,
        email=user.email,
        role=member.role,
        account_created=created,
    )


@router.patch("/members/{user_id}", response_model=MemberRead)
def update_member(
    user_id: str, body: MemberUpdate, principal: CurrentAdmin, request: Request, db: Db
) -> MemberRead:
    m, u = service.get_member(db, workspace_id=principal.workspace_id, user_id=user_id)
    service.update_member(
        db,
        membership=m,
        role=body.role,
        capacity=body.capacity,
        actor_id=principal.user_id,
        actor_role=principal.role,
    )
    audit(
        db,
        workspace_id=principal.workspace_id,
        actor=actor_of(principal, request),
        action="member.update",
        target_type="user",
        target_id=u.id,
        data=body.model_dump(exclude_none=True, mode="json"),
    )
    forget_principals(request)
    return _member(m, u)


@router.delete("/members/{user_id}", status_code=204)
def remove_member(user_id: str, principal: CurrentAdmin, request: Request, db: Db) -> Response:
    m, u = service.get_member(db, workspace_id=principal.workspace_id, user_id=user_id)
    service.remove_member(db, membership=m, actor_role=principal.role, actor_id=principal.user_id)
    audit(
        db,
        workspace_id=principal.workspace_id,
        actor=actor_of(principal, request),
        action="member.remove",
        target_type="user",
        target_id=u.id,
    )
    forget_principals(request)
    return Response(status_code=204)


def _admin_in_a_browser(principal: CurrentAdmin) -> auth.Principal:
    """An owner or admin in a signed-in browser: an API token is refused (403) before the
    body is read, whatever it holds."""
    in_a_browser(principal, "a member's two-factor is reset from a signed-in browser")
    return principal


@router.post("/members/{user_id}/totp/reset", status_code=204)
def reset_member_totp(
    user_id: str,
    body: TotpResetIn,
    principal: Annotated[auth.Principal, Depends(_admin_in_a_browser)],
    request: Request,
    db: Db,
    settings: CurrentSettings,
) -> Response:
    """Turn off a member's two-factor authentication, for one who lost their phone and
    their recovery codes: every session of theirs ends, their lock-out is lifted, and they
    sign in with their password alone (then enrol again). Owners and admins, from a
    signed-in browser and with their own password (checked as a login's); never their
    own, nor an owner's by an admin; only for an account that is a member of this
    workspace alone (409 otherwise: see ``service.reset_member_totp``)."""
    confirm_password(principal, body.password, request, db, settings)
    m, u = service.get_member(db, workspace_id=principal.workspace_id, user_id=user_id)
    service.reset_member_totp(
        db, membership=m, user=u, actor_id=principal.user_id, actor_role=principal.role
    )
    audit(
        db,
        workspace_id=principal.workspace_id,
        actor=actor_of(principal, request),
        action="member.totp_reset",
        target_type="user",
        target_id=u.id,
    )
    by = f"{principal.name or principal.email}, an administrator of {_ws(db, m.workspace_id).name}"
    account.notify_totp_reset(db, user=u, by=by)
    forget_principals(request)
    return Response(status_code=204)


@router.put("/presence", response_model=MemberRead)
def set_presence(body: PresenceIn, principal: CurrentAgent, db: Db) -> MemberRead:
    """A heartbeat from the agent's browser, with their availability when it changes."""
    member = routing.set_presence(
        db,
        workspace_id=principal.workspace_id,
        user_id=principal.user_id,
        availability=body.availability,
    )
    m, u = service.get_member(db, workspace_id=principal.workspace_id, user_id=member.user_id)
    return _member(m, u)


@router.get("/teams", response_model=list[TeamRead])
def list_teams(principal: CurrentMember, db: Db) -> list[TeamRead]:
    return [_team(t, ids) for t, ids in service.teams(db, workspace_id=principal.workspace_id)]


@router.post("/teams", response_model=TeamRead, status_code=201)
def create_team(body: TeamCreate, principal: CurrentAdmin, db: Db) -> TeamRead:
    team = service.create_team(
        db, workspace_id=principal.workspace_id, name=body.name, member_ids=body.member_ids
    )
    return _team(team, sorted(set(body.member_ids)))


@router.patch("/teams/{team_id}", response_model=TeamRead)
def update_team(team_id: str, body: TeamUpdate, principal: CurrentAdmin, db: Db) -> TeamRead:
    team = service.get_team(db, workspace_id=principal.workspace_id, team_id=team_id)
    if body.name is not None:
        service.rename_team(db, team=team, name=body.name)
    if body.member_ids is not None:
        service.set_team_members(db, team=team, member_ids=body.member_ids)
    ids = {t.id: m for t, m in service.teams(db, workspace_id=principal.workspace_id)}
    return _team(team, ids.get(team.id, []))


@router.delete("/teams/{team_id}", status_code=204)
def delete_team(team_id: str, principal: CurrentAdmin, db: Db) -> Response:
    service.delete_team(
        db, team=service.get_team(db, workspace_id=principal.workspace_id, team_id=team_id)
    )
    return Response(status_code=204)


def _saved_view(v: SavedView, principal: auth.Principal) -> SavedViewRead:
    return SavedViewRead(
        id=v.id,
        page=cast(SavedViewPage, v.page),  # one of saved_views.PAGES, as it was saved
        name=v.name,
        query=v.query,
        shared=v.owner_id is None,
        position=v.position,
        mine=saved_views.may_change(v, user_id=principal.user_id, admin=principal.has(Role.admin)),
        created_at=v.created_at,
        updated_at=v.updated_at,
    )


_VIEW_404: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such saved view in your workspace, or another member's own"}
}
_VIEW_409: dict[int | str, dict[str, Any]] = {
    409: {
        "description": "A view of the page (shared, or of yours) has this name, whatever its case"
    }
}
_VIEW_QUERY: dict[int | str, dict[str, Any]] = {
    404: {"description": "The query names an inbox or team that is not of this workspace"},
    422: {
        "description": "The body is not valid, or the query holds a filter the page does "
        "not take: the problem names it (``query: status must be one of ...``)"
    },
}


@router.get("/saved-views", response_model=list[SavedViewRead])
def list_saved_views(
    principal: CurrentMember, db: Db, page: SavedViewPage | None = None
) -> list[SavedViewRead]:
    """The saved views you see, of ``page`` or of every page: the workspace's shared ones
    and your own, by page, position, then name."""
    rows = saved_views.listed(
        db, workspace_id=principal.workspace_id, user_id=principal.user_id, page=page
    )
    return [_saved_view(v, principal) for v in rows]


@router.get("/saved-views/counts", response_model=SavedViewCounts)
def saved_view_counts(principal: CurrentMember, db: ReadDb) -> SavedViewCounts:
    """How many conversations each inbox view you see lists now, as the inbox shows it to
    you, counted up to ``limit`` (100): the counts beside the views in the sidebar, which
    asks for them apart from the page. Null for a view too costly to count."""
    ws, user = principal.workspace_id, principal.user_id
    rows = saved_views.listed(db, workspace_id=ws, user_id=user, page="inbox")
    return SavedViewCounts(
        counts=saved_views.counts(db, workspace_id=ws, user_id=user, views=rows),
        limit=conversations.COUNT_LIMIT,
    )


@router.post(
    "/saved-views",
    response_model=SavedViewRead,
    status_code=201,
    responses={
        403: {"description": "A shared view by an agent or viewer (admins and owners)"},
        **_VIEW_409,
        **_VIEW_QUERY,
    },
)
def create_saved_view(
    body: SavedViewCreate, principal: CurrentMember, request: Request, db: Db
) -> SavedViewRead:
    """Save a page's filters under a name: your own view (any member, viewers too), or one
    shared with the whole workspace (``shared``: admins and owners)."""
    row = saved_views.create(
        db,
        workspace_id=principal.workspace_id,
        user_id=principal.user_id,
        admin=principal.has(Role.admin),
        page=body.page,
        name=body.name,
        query=body.query,
        shared=body.shared,
        position=body.position,
    )
    audit(
        db,
        workspace_id=principal.workspace_id,
        actor=actor_of(principal, request),
        action="saved_view.create",
        target_type="saved_view",
        target_id=row.id,
        data={"page": row.page, "name": row.name, "query": row.query, "shared": body.shared},
    )
    return _saved_view(row, principal)


@router.get("/saved-views/{saved_view_id}", response_model=SavedViewRead, responses=_VIEW_404)
def get_saved_view(saved_view_id: str, principal: CurrentMember, db: Db) -> SavedViewRead:
    row = saved_views.get(
        db, workspace_id=principal.workspace_id, view_id=saved_view_id, user_id=principal.user_id
    )
    return _saved_view(row, principal)


@router.patch(
    "/saved-views/{saved_view_id}",
    response_model=SavedViewRead,
    responses={
        403: {"description": "A shared view changed by an agent or viewer"},
        **_VIEW_409,
        **_VIEW_QUERY,
        404: {
            "description": "No such saved view in your workspace, or another member's own; "
            "or the new query names an inbox or team that is not of this workspace"
        },
    },
)
def update_saved_view(
    saved_view_id: str,
    body: SavedViewUpdate,
    principal: CurrentMember,
    request: Request,
    db: Db,
) -> SavedViewRead:
    """Rename a view, change its query or position (fields left out are kept): shared ones
    by admins and owners, your own by you."""
    row = saved_views.get(
        db, workspace_id=principal.workspace_id, view_id=saved_view_id, user_id=principal.user_id
    )
    changed = saved_views.update(
        db,
        view=row,
        user_id=principal.user_id,
        admin=principal.has(Role.admin),
        name=body.name,
        query=body.query,
        position=body.position,
    )
    if changed:
        audit(
            db,
            workspace_id=principal.workspace_id,
            actor=actor_of(principal, request),
            action="saved_view.change",
            target_type="saved_view",
            target_id=row.id,
            data=changed,
        )
    return _saved_view(row, principal)


@router.delete(
    "/saved-views/{saved_view_id}",
    status_code=204,
    responses={403: {"description": "A shared view deleted by an agent or viewer"}, **_VIEW_404},
)
def delete_saved_view(
    saved_view_id: str, principal: CurrentMember, request: Request, db: Db
) -> Response:
    """Delete a view: shared ones by admins and owners, your own by you."""
    row = saved_views.get(
        db, workspace_id=principal.workspace_id, view_id=saved_view_id, user_id=principal.user_id
    )
    saved_views.delete(db, view=row, user_id=principal.user_id, admin=principal.has(Role.admin))
    audit(
        db,
        workspace_id=principal.workspace_id,
        actor=actor_of(principal, request),
        action="saved_view.delete",
        target_type="saved_view",
        target_id=saved_view_id,
        data={"page": row.page, "name": row.name, "shared": row.owner_id is None},
    )
    return Response(status_code=204)
