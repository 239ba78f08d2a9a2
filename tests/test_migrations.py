"""The migrations build exactly the schema the models describe."""

from collections.abc import Iterator
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import column, delete, event, func, insert, inspect, select, table, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

import rapport.search
from rapport import migrate
from rapport.assistant.models import TriageModel
from rapport.auth.models import Membership
from rapport.bot.models import IntentModelBlob
from rapport.channels.models import Inbox
from rapport.conversations import addresses
from rapport.conversations.models import (
    Conversation,
    ConversationSla,
    Direction,
    Message,
    MessageAddress,
    SlaPolicy,
)
from rapport.customers import profile
from rapport.customers.models import Consent, ConsentChannel, Customer, Identity
from rapport.db import Base, Database, JSONType, UTCDateTime, new_id, utcnow
from rapport.jobs.models import Job, JobState
from rapport.workspaces.models import Workspace
from tests.conftest import postgresql_only


@pytest.fixture
def empty_url(database_url: str) -> Iterator[str]:
    """The test database emptied of every table, so only the migrations build it; brought
    to the newest revision after the test, whatever revision it left (the next test of
    this process on PostgreSQL finds its tables there)."""
    db = Database(database_url, pool_size=1)
    with db.engine.begin() as conn:
        if db.is_sqlite:
            conn.execute(text("PRAGMA foreign_keys=OFF"))
        if db.is_sqlite:
            conn.execute(text("DROP TABLE IF EXISTS messages_fts"))
        Base.metadata.drop_all(conn)
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    db.dispose()
    yield database_url
    migrate.upgrade(database_url)


def test_migrations_build_the_schema_of_the_models(empty_url: str) -> None:
    migrate.upgrade(empty_url)
    db = Database(empty_url, pool_size=1)
    with db.engine.connect() as conn:
        dialect = conn.dialect.name
        ctx = MigrationContext.configure(
            conn, opts={"include_object": lambda o, name, *_: migrate.compared(o, name, dialect)}
        )
        diff = compare_metadata(ctx, Base.metadata)
    db.dispose()
    assert diff == []


def test_models_stored_before_signing_are_dropped_and_retrained(empty_url: str) -> None:
    migrate.upgrade(empty_url, "0011")
    db = Database(empty_url, pool_size=1)
    with db.session() as s:
        ws = Workspace(name="Acme")
        s.add(ws)
        s.flush()
        s.add(TriageModel(workspace_id=ws.id, kind="category", model=b"an old pickle"))
        s.add(IntentModelBlob(workspace_id=ws.id, model=b"an old pickle"))
    migrate.upgrade(empty_url)
    with db.session() as s:
        assert s.scalars(select(TriageModel)).all() == []
        assert s.scalars(select(IntentModelBlob)).all() == []
        jobs = s.scalars(select(Job).order_by(Job.name)).all()
        assert [(j.name, j.workspace_id, j.args, j.state) for j in jobs] == [
            ("bot_train", ws.id, {"workspace_id": ws.id}, JobState.queued),
            ("train_triage", ws.id, {"workspace_id": ws.id}, JobState.queued),
        ]
    db.dispose()


def test_members_learn_when_they_were_last_given_a_conversation(empty_url: str) -> None:
    migrate.upgrade(empty_url, "0013")
    db = Database(empty_url, pool_size=1)
    now = utcnow()
    with db.session() as s:
        ws = Workspace(name="Acme")
        s.add(ws)
        s.flush()
        given, idle = (SimpleNamespace(id=new_id(), name=n) for n in "ab")
        for user in (given, idle):  # later columns (0016) do not exist yet: no ORM insert
            s.execute(
                text(
                    "INSERT INTO users (id, email, name, password_hash, totp_enabled,"
                    " recovery_codes, failed_logins, created_at) VALUES (:id, :email, :name,"
                    " 'x', false, '[]', 0, :now)"
                ),
                {
                    "id": user.id,
                    "email": f"{user.name}@acme.test",
                    "name": user.name,
                    "now": now.isoformat(),
                },
            )
        inbox = Inbox(workspace_id=ws.id, name="API", channel="api", settings={})
        customer = Customer(workspace_id=ws.id, name="C", attributes={})
        s.add_all([inbox, customer])
        s.flush()
        for user in (given, idle):  # the column does not exist yet: no ORM insert
            s.execute(
                text(
                    "INSERT INTO memberships (id, workspace_id, user_id, role, capacity,"
                    " availability, created_at) VALUES (:id, :ws, :user, 'agent', 20,"
                    " 'offline', :now)"
                ),
                {"id": new_id(), "ws": ws.id, "user": user.id, "now": now.isoformat()},
            )
        for hours in (5, 2):
            s.add(
                Conversation(
                    workspace_id=ws.id,
                    customer_id=customer.id,
                    inbox_id=inbox.id,
                    assignee_id=given.id,
                    assigned_at=now - timedelta(hours=hours),
                )
            )
    migrate.upgrade(empty_url)
    with db.session(write=False) as s:
        last = dict(s.execute(select(Membership.user_id, Membership.last_assigned_at)).all())
    db.dispose()
    assert last == {given.id: now - timedelta(hours=2), idle.id: None}


def test_sla_policies_stored_with_labels_as_typed_are_cleaned(empty_url: str) -> None:
    # Conversations keep "vip"; a policy stored "VIP" as typed and never applied.
    migrate.upgrade(empty_url, "0016")
    db = Database(empty_url, pool_size=1)
    with db.session() as s:
        ws = Workspace(name="Acme")
        s.add(ws)
        s.flush()
        named = {
            "typed": ["VIP", " Gold ", "vip"],
            "clean": ["gold", "vip"],
            "blank": [" "],  # matched nothing: must not become a policy for everyone
            "any": [],
        }
        for name, labels in named.items():
            s.add(SlaPolicy(workspace_id=ws.id, name=name, labels=labels))
    migrate.upgrade(empty_url)
    with db.session(write=False) as s:
        stored = dict(s.execute(select(SlaPolicy.name, SlaPolicy.labels)).all())
    db.dispose()
    assert stored == {
        "typed": ["gold", "vip"],
        "clean": ["gold", "vip"],
        "blank": [""],
        "any": [],
    }


def test_the_search_indexes_are_rebuilt_over_the_words_a_search_is_split_into(
    empty_url: str,
) -> None:
    migrate.upgrade(empty_url, "0017")
    db = Database(empty_url, pool_size=1)
    if db.is_sqlite:
        db.dispose()
        migrate.upgrade(empty_url)  # nothing to rebuild on SQLite
        return
    old = {
        "ix_messages_fts": "messages USING gin (to_tsvector('simple', text))",
        "ix_customers_fts": "customers USING gin (to_tsvector('simple', coalesce(name, '') || "
        "' ' || replace(replace(coalesce(email, ''), '@', ' '), '.', ' ') || ' ' || "
        "coalesce(phone, '')))",
    }
    with db.engine.begin() as conn:  # as revision 0002 built them before 0018
        for name, index in old.items():
            conn.execute(text(f"DROP INDEX {name}"))
            conn.execute(text(f"CREATE INDEX {name} ON {index}"))
    migrate.upgrade(empty_url)
    migrated = _search_indexes(db)
    with db.engine.begin() as conn:  # as a fresh install builds them
        for name in old:
            conn.execute(text(f"DROP INDEX {name}"))
        rapport.search.install(conn)
    assert migrated == _search_indexes(db)
    assert all("regexp_replace" in index for index in migrated.values()), migrated
    db.dispose()


_SLAS_0019 = table(
    "conversation_slas",
    *(column(name) for name in ("conversation_id", "workspace_id", "policy_id", "breaches")),
    column("state"),
    column("announced", JSONType),
    column("breached_at", UTCDateTime()),
)


def test_a_conversations_sla_record_outlives_its_policy_and_downgrades(empty_url: str) -> None:
    # Deleting a policy deleted the SLA record of its conversations (ON DELETE CASCADE).
    migrate.upgrade(empty_url, "0018")
    db = Database(empty_url, pool_size=1)
    missed_at = utcnow()
    with db.session() as s:
        ws = Workspace(name="Acme")
        s.add(ws)
        s.flush()
        inbox = Inbox(workspace_id=ws.id, name="API", channel="api", settings={})
        customer = Customer(workspace_id=ws.id, name="C", attributes={})
        deleted, kept = (SlaPolicy(workspace_id=ws.id, name=n) for n in ("deleted", "kept"))
        s.add_all([inbox, customer, deleted, kept])
        s.flush()
        convs = [
            Conversation(workspace_id=ws.id, customer_id=customer.id, inbox_id=inbox.id)
            for _ in range(2)
        ]
        s.add_all(convs)
        s.flush()
        # The columns of 0018 alone: the model has more since (0020).
        for conv, policy in zip(convs, (deleted, kept), strict=True):
            s.execute(
                insert(_SLAS_0019).values(
                    conversation_id=conv.id,
                    workspace_id=ws.id,
                    policy_id=policy.id,
                    state="ok",
                    announced=[],
                    breached_at=missed_at,
                    breaches=1,
                )
            )
    migrate.upgrade(empty_url, "0019")
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(_SLAS_0019)) == 2
        s.execute(delete(SlaPolicy).where(SlaPolicy.id == deleted.id))
    with db.session(write=False) as s:
        rows = {r.conversation_id: r for r in s.execute(select(_SLAS_0019))}
    assert {c: (r.policy_id, r.breaches, r.breached_at) for c, r in rows.items()} == {
        convs[0].id: (None, 1, missed_at),
        convs[1].id: (kept.id, 1, missed_at),
    }

    # Down again: the old column holds no record without a policy, and cascades again.
    command.downgrade(migrate.config(empty_url), "0018")
    with db.session() as s:
        assert list(s.scalars(select(ConversationSla.conversation_id))) == [convs[1].id]
        s.execute(delete(SlaPolicy).where(SlaPolicy.id == kept.id))
    with db.session(write=False) as s:
        assert s.scalar(select(func.count()).select_from(ConversationSla)) == 0
    db.dispose()
    migrate.upgrade(empty_url)


def _search_indexes(db: Database) -> dict[str, str]:
    with db.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT indexname, indexdef FROM pg_indexes"
                " WHERE indexname IN ('ix_messages_fts', 'ix_customers_fts')"
            )
        )
        return dict(rows.all())


def _indexes(db: Database, table: str) -> set[str]:
    with db.engine.connect() as conn:
        return {ix["name"] for ix in inspect(conn).get_indexes(table) if ix["name"]}


def _columns(db: Database, table: str, index: str) -> list[str | None]:
    with db.engine.connect() as conn:
        found = [ix for ix in inspect(conn).get_indexes(table) if ix["name"] == index]
    return found[0]["column_names"] if found else []


def test_sla_records_are_indexed_by_policy_and_the_queue_by_age_and_downgrade(
    empty_url: str,
) -> None:
    # Deleting a policy walked every conversation's SLA record to find its own, a routing
    # pass sorted the whole queue before handing out its first page, and the resolution
    # clock kept no record of its runs (it could not pause).
    queue = "ix_conversations_ws_assignee_status"
    counted = ["workspace_id", "assignee_id", "status"]
    migrate.upgrade(empty_url, "0020")
    db = Database(empty_url, pool_size=1)
    assert "ix_conversation_slas_policy" in _indexes(db, "conversation_slas")
    assert _columns(db, "conversations", queue) == [*counted, "created_at", "id"]
    clock = {"resolution_started_at", "resolution_used_seconds"}
    with db.engine.connect() as conn:
        assert clock <= {c["name"] for c in inspect(conn).get_columns("conversation_slas")}
    command.downgrade(migrate.config(empty_url), "0019")
    assert "ix_conversation_slas_policy" not in _indexes(db, "conversation_slas")
    assert _columns(db, "conversations", queue) == counted
    with db.engine.connect() as conn:
        assert not clock & {c["name"] for c in inspect(conn).get_columns("conversation_slas")}
    # The table rebuilt on SQLite keeps its indexes and its foreign key to the policy.
    assert {"ix_conversation_slas_due", "ix_conversation_slas_state"} <= _indexes(
        db, "conversation_slas"
    )
    with db.engine.connect() as conn:
        keys = inspect(conn).get_foreign_keys("conversation_slas")
    assert [
        k["options"].get("ondelete") for k in keys if k["referred_table"] == "sla_policies"
    ] == ["SET NULL"]
    db.dispose()
    migrate.upgrade(empty_url)


def test_the_search_indexes_ignore_accents_after_the_upgrade_and_downgrade_as_before(
    empty_url: str,
) -> None:
    # PostgreSQL's indexes kept accents where SQLite's fold them: "jose" missed "José".
    migrate.upgrade(empty_url, "0019")
    db = Database(empty_url, pool_size=1)
    with db.session() as s:
        ws = Workspace(name="Acme")
        s.add(ws)
        s.flush()
        jose = Customer(workspace_id=ws.id, name="José Núñez", attributes={})
        s.add(jose)
    migrate.upgrade(empty_url)
    with db.session(write=False) as s:
        assert rapport.search.customer_ids(s, workspace_id=ws.id, q="jose nunez") == [jose.id]
    if db.is_sqlite:
        command.downgrade(migrate.config(empty_url), "0019")
        migrate.upgrade(empty_url)
        db.dispose()
        return
    migrated = _search_indexes(db)
    with db.engine.begin() as conn:  # as a fresh install builds them
        for name in migrated:
            conn.execute(text(f"DROP INDEX {name}"))
        rapport.search.install(conn)
    assert migrated == _search_indexes(db)
    assert all("rapport_search" in index for index in migrated.values()), migrated

    command.downgrade(migrate.config(empty_url), "0019")
    downgraded = _search_indexes(db)
    assert all("to_tsvector('simple'::regconfig" in i for i in downgraded.values()), downgraded
    with db.engine.connect() as conn:
        assert (
            conn.scalar(text("SELECT count(*) FROM pg_ts_config WHERE cfgname = 'rapport_search'"))
            == 0
        )
    migrate.upgrade(empty_url)
    db.dispose()


def test_sms_opt_outs_stored_before_consent_rows_are_recorded_as_consent_withdrawn(
    empty_url: str,
) -> None:
    # A STOP stored before ingest recorded consent was only a message: replies, the bot and
    # rules still wrote to the number Twilio blocks.
    migrate.upgrade(empty_url, "0023")
    db = Database(empty_url, pool_size=1)
    long_ago = utcnow() - timedelta(days=30)
    with db.session() as s:
        ws = Workspace(name="Acme")
        s.add(ws)
        s.flush()
        sms = Inbox(workspace_id=ws.id, name="SMS", channel="twilio_sms", settings={})
        api = Inbox(workspace_id=ws.id, name="API", channel="api", settings={})
        people = {n: Customer(workspace_id=ws.id, name=n, attributes={}) for n in _PEOPLE}
        s.add_all([sms, api, *people.values()])
        s.flush()
        convs = {
            (n, inbox.id): Conversation(workspace_id=ws.id, customer_id=c.id, inbox_id=inbox.id)
            for n, c in people.items()
            for inbox in (sms, api)
        }
        s.add_all(convs.values())
        s.flush()

        def texted(name: str, text: str, minutes: int, flag: str = "", inbox: Inbox = sms) -> None:
            meta = {"sms": {flag: True}} if flag else {}
            s.add(
                Message(
                    workspace_id=ws.id,
                    conversation_id=convs[name, inbox.id].id,
                    inbox_id=inbox.id,
                    direction=Direction.inbound,
                    sender_type="customer",
                    sender_id=people[name].id,
                    text=text,
                    meta=meta,
                    created_at=long_ago + timedelta(minutes=minutes),
                )
            )

        def decided(name: str, purpose: str, granted: bool, minutes: int) -> None:
            s.add(
                Consent(
                    workspace_id=ws.id,
                    customer_id=people[name].id,
                    channel=ConsentChannel.sms,
                    purpose=purpose,
                    granted=granted,
                    source="form",
                    recorded_at=long_ago + timedelta(minutes=minutes),
                )
            )

        texted("stopped", "Where is my order?", 0)
        decided("stopped", "marketing", True, 1)
        decided("stopped", "surveys", False, 2)
        texted("stopped", "Stop ", 3, "opt_out")
        texted("stopped", "Thanks", 4)  # after a STOP Twilio still passes messages on
        texted("restarted", "STOP", 0, "opt_out")
        texted("restarted", "start", 1, "opt_in")
        texted("agreed_since", "quit", 0, "opt_out")  # Twilio's OptOutType: flagged
        decided("agreed_since", "all", True, 1)
        texted("before_the_flag", " unsubscribe\n", 0)  # stored before meta.sms.opt_out
        texted("not_by_sms", "stop", 0, inbox=api)
        texted("said_cancel", "Cancel", 0)  # not a keyword unless Twilio says so
    migrate.upgrade(empty_url)

    def state(s: Session) -> dict[str, list[tuple[str, bool, str]]]:
        rows = s.scalars(select(Consent).order_by(Consent.purpose))
        out: dict[str, list[tuple[str, bool, str]]] = {}
        for c in rows:
            if c.recorded_by_user_id is None and c.source != "form":
                name = next(n for n, p in people.items() if p.id == c.customer_id)
                out.setdefault(name, []).append((c.purpose, c.granted, c.source))
        return out

    with db.session(write=False) as s:
        added = state(s)
        assert added == {
            "stopped": [
                ("all", False, "SMS keyword STOP"),
                ("marketing", False, "SMS keyword STOP"),
            ],
            "before_the_flag": [("all", False, "SMS keyword UNSUBSCRIBE")],
        }
        stopped = people["stopped"].id
        assert not profile.may_contact(
            s, customer_id=stopped, channel=ConsentChannel.sms, purpose="marketing"
        )
        withdrawal = profile.withdrawn(s, customer_id=stopped, channel=ConsentChannel.sms)
        assert withdrawal is not None
        assert withdrawal.recorded_at == long_ago + timedelta(minutes=3)  # when they sent it
        assert (
            profile.withdrawn(s, customer_id=people["agreed_since"].id, channel=ConsentChannel.sms)
            is None
        )
    # Run again (down is a no-op): nothing is added twice.
    command.downgrade(migrate.config(empty_url), "0023")
    migrate.upgrade(empty_url)
    with db.session(write=False) as s:
        assert state(s) == added
    db.dispose()


_PEOPLE = ("stopped", "restarted", "agreed_since", "before_the_flag", "not_by_sms", "said_cancel")


def test_messenger_and_instagram_ids_learn_the_inbox_that_issued_them(empty_url: str) -> None:
    # Identities did not say which page issued a Messenger or Instagram id: a customer of
    # two pages was answered through one at the other's id, which Meta refuses. Each id
    # takes the inbox its customer first wrote through, on its channel, once it was made.
    migrate.upgrade(empty_url, "0025")
    db = Database(empty_url, pool_size=1)
    at = utcnow() - timedelta(days=30)
    ids = table(  # the model has the new column: no ORM insert
        "identities",
        *(column(c) for c in ("id", "workspace_id", "customer_id", "kind", "value", "verified")),
        column("created_at", UTCDateTime()),
    )
    with db.session() as s:
        ws = Workspace(name="Acme")
        s.add(ws)
        s.flush()
        inboxes = {
            name: Inbox(workspace_id=ws.id, name=name, channel=channel, settings={})
            for name, channel in (
                ("shop", "messenger"),
                ("desk", "messenger"),
                ("insta", "instagram"),
                ("api", "api"),
            )
        }
        people = {n: Customer(workspace_id=ws.id, name=n, attributes={}) for n in _OF_PAGES}
        s.add_all([*inboxes.values(), *people.values()])
        s.flush()

        def known(name: str, kind: str, value: str, minutes: int, verified: bool = True) -> None:
            s.execute(
                insert(ids).values(
                    id=new_id(),
                    workspace_id=ws.id,
                    customer_id=people[name].id,
                    kind=kind,
                    value=value,
                    verified=verified,
                    created_at=at + timedelta(minutes=minutes),
                )
            )

        def wrote(name: str, inbox: str, minutes: int) -> None:
            conv = Conversation(
                workspace_id=ws.id, customer_id=people[name].id, inbox_id=inboxes[inbox].id
            )
            s.add(conv)
            s.flush()
            s.add(
                Message(
                    workspace_id=ws.id,
                    conversation_id=conv.id,
                    inbox_id=inboxes[inbox].id,
                    direction=Direction.inbound,
                    sender_type="customer",
                    sender_id=people[name].id,
                    text="hi",
                    created_at=at + timedelta(minutes=minutes),
                )
            )

        known("one_page", "messenger", "111", 0)
        wrote("one_page", "shop", 0)
        wrote("one_page", "desk", 5)  # a later message of another page: not the first
        known("merged", "messenger", "211", 0)  # two customers' once, merged since
        wrote("merged", "shop", 0)
        known("merged", "messenger", "222", 10)
        wrote("merged", "desk", 10)
        known("merged", "whatsapp", "14155550123", 0)  # an id of every page: none recorded
        known("on_both", "instagram", "311", 3)
        wrote("on_both", "desk", 4)  # Messenger's, not Instagram's
        wrote("on_both", "insta", 6)
        known("typed", "messenger", "411", 0, verified=False)  # never proved
        wrote("typed", "shop", 1)
        known("silent", "messenger", "511", 0)  # never wrote
        known("by_api", "messenger", "611", 0)
        wrote("by_api", "api", 0)
    migrate.upgrade(empty_url)

    def issued() -> dict[str, str | None]:
        with db.session(write=False) as s:
            names = {i.id: n for n, i in inboxes.items()}
            rows = s.execute(select(Identity.value, Identity.inbox_id))
            return {value: names.get(inbox_id or "") for value, inbox_id in rows}

    assert issued() == {
        "111": "shop",
        "211": "shop",
        "222": "desk",
        "14155550123": None,
        "311": "insta",
        "411": None,
        "511": None,
        "611": None,
    }
    # Down and up again: the same.
    command.downgrade(migrate.config(empty_url), "0025")
    migrate.upgrade(empty_url)
    assert issued()["222"] == "desk"
    db.dispose()


_OF_PAGES = ("one_page", "merged", "on_both", "typed", "silent", "by_api")


def test_email_handles_are_lower_cased_unless_two_customers_would_share_one(
    empty_url: str,
) -> None:
    # The local part was kept as written: Ana@ and ana@, one mailbox, were two customers.
    migrate.upgrade(empty_url, "0027")
    db = Database(empty_url, pool_size=1)
    with db.session() as s:
        ws, other_ws = Workspace(name="Acme"), Workspace(name="Globex")
        s.add_all([ws, other_ws])
        s.flush()
        held = {
            # customer: (workspace, email shown, handles)
            "ana": (ws, "Ana.Souza@example.com", ["Ana.Souza@example.com"]),
            "bob": (ws, "bob@example.com", ["bob@example.com"]),
            "bob2": (ws, "BOB@example.com", ["BOB@example.com"]),  # another customer
            "dee": (ws, "Dee@example.com", ["Dee@example.com", "dee@example.com"]),
            "elsewhere": (other_ws, "Bob@example.com", ["Bob@example.com"]),
            # Beyond ASCII, where the databases' own lower() does nothing.
            "elodie": (ws, "Élodie@example.com", ["Élodie@example.com"]),
        }
        people = {}
        for name, (w, email, _) in held.items():
            people[name] = Customer(workspace_id=w.id, name=name, email=email, attributes={})
        s.add_all(people.values())
        s.flush()
        for name, (w, _, handles) in held.items():
            for value in handles:
                s.add(
                    Identity(
                        workspace_id=w.id,
                        customer_id=people[name].id,
                        kind="email",
                        value=value,
                        verified=True,
                    )
                )
    migrate.upgrade(empty_url)
    with db.session(write=False) as s:
        handles: dict[str, list[str]] = {}
        for name, value in s.execute(
            select(Customer.name, Identity.value)
            .join(Identity, Identity.customer_id == Customer.id)
            .order_by(Identity.value)
        ):
            handles.setdefault(name, []).append(value)
        shown = dict(s.execute(select(Customer.name, Customer.email)).all())
    assert handles == {
        "ana": ["ana.souza@example.com"],
        "bob": ["bob@example.com"],
        "bob2": ["BOB@example.com"],  # bob@ is another customer's: the scan suggests them
        "dee": ["Dee@example.com", "dee@example.com"],  # both hers already
        "elsewhere": ["bob@example.com"],  # another workspace's bob@ is no collision
        "elodie": ["élodie@example.com"],
    }
    assert shown == {
        "ana": "ana.souza@example.com",
        "bob": "bob@example.com",
        "bob2": "BOB@example.com",
        "dee": "Dee@example.com",  # one of her handles still, as it must be
        "elsewhere": "bob@example.com",
        "elodie": "élodie@example.com",
    }
    db.dispose()


def test_the_queue_has_a_partial_index_by_waiting_and_downgrades_to_its_age(
    empty_url: str,
) -> None:
    # A routing pass read the queue by when each conversation started, in the tail of the
    # per-agent counts' index; 0036 reads it by how long its customer has waited, in an
    # index of the queue's conversations alone.
    counts, queue = "ix_conversations_ws_assignee_status", "ix_conversations_queue"
    counted = ["workspace_id", "assignee_id", "status"]
    migrate.upgrade(empty_url, "0036")
    db = Database(empty_url, pool_size=1)
    assert _columns(db, "conversations", counts) == counted
    assert _columns(db, "conversations", queue) == ["workspace_id", "status", "waiting_since", "id"]
    with db.engine.connect() as conn:
        (found,) = [ix for ix in inspect(conn).get_indexes("conversations") if ix["name"] == queue]
    where = found["dialect_options"][f"{conn.dialect.name}_where"]
    assert "assignee_id IS NULL" in str(where) and "'open'" in str(where), where
    # And, on PostgreSQL alone, the customers' attributes (the list's attribute filter).
    postgresql = conn.dialect.name == "postgresql"
    assert ("ix_customers_attributes" in _indexes(db, "customers")) == postgresql
    command.downgrade(migrate.config(empty_url), "0035")
    assert queue not in _indexes(db, "conversations")
    assert "ix_customers_attributes" not in _indexes(db, "customers")
    assert _columns(db, "conversations", counts) == [*counted, "created_at", "id"]
    db.dispose()
    migrate.upgrade(empty_url)


@postgresql_only
def test_new_indexes_leave_their_tables_writable_while_built_on_postgresql(
    empty_url: str,
) -> None:
    # A plain CREATE INDEX holds its table's SHARE lock until the whole migration run
    # commits: every insert and update (ingest) waits that long. Built concurrently, the
    # table takes writes again as soon as each statement returns: another connection asks
    # for the lock an INSERT takes, without waiting, right after each build.
    migrate.upgrade(empty_url, "0035")
    built = {
        "ix_conversations_queue": "conversations",
        "ix_conversations_ws_assignee_status": "conversations",
        "ix_customers_attributes": "customers",
    }
    writable: dict[str, bool] = {}
    db = Database(empty_url, pool_size=1)

    def after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if conn.engine is db.engine or not statement.lstrip().startswith("CREATE INDEX"):
            return
        name = next((n for n in built if n in statement), None)
        if name is None:
            return
        with db.engine.connect() as other:
            try:
                other.execute(text(f"LOCK TABLE {built[name]} IN ROW EXCLUSIVE MODE NOWAIT"))
                writable[name] = True
            except OperationalError:
                writable[name] = False
            other.rollback()

    event.listen(Engine, "after_cursor_execute", after)
    try:
        migrate.upgrade(empty_url, "0036")
    finally:
        event.remove(Engine, "after_cursor_execute", after)
        db.dispose()
    assert writable == dict.fromkeys(built, True)


def test_failure_counts_learn_their_last_time_and_downgrade_keeping_the_counts(
    empty_url: str,
) -> None:
    # 0039: each count keeps the time of its last failure (one older than the lock-out's
    # length starts again); counts made before have none, and lapse at their next failure.
    migrate.upgrade(empty_url, "0038")
    db = Database(empty_url, pool_size=1)
    user = new_id()
    with db.session() as s:  # later columns do not exist yet: no ORM insert
        s.execute(
            text(
                "INSERT INTO users (id, email, name, password_hash, totp_enabled,"
                " recovery_codes, failed_logins, created_at) VALUES (:id, 'bob@acme.test',"
                " 'bob', 'x', false, '[]', 9, :now)"
            ),
            {"id": user, "now": utcnow().isoformat()},
        )
        s.execute(text("INSERT INTO login_failures VALUES ('a', 9, NULL)"))
    migrate.upgrade(empty_url, "0039")
    counts = "SELECT failed_logins, last_failed_at FROM {}"
    with db.engine.connect() as conn:
        assert conn.execute(text(counts.format("users"))).all() == [(9, None)]
        assert conn.execute(text(counts.format("login_failures"))).all() == [(9, None)]
    assert _columns(db, "login_failures", "ix_login_failures_last_failed_at") == ["last_failed_at"]
    command.downgrade(migrate.config(empty_url), "0038")
    with db.engine.connect() as conn:
        for table in ("users", "login_failures"):
            assert "last_failed_at" not in {c["name"] for c in inspect(conn).get_columns(table)}
            assert conn.execute(text(f"SELECT failed_logins FROM {table}")).all() == [(9,)]  # noqa: S608
    assert not _indexes(db, "login_failures")
    db.dispose()
    migrate.upgrade(empty_url)


def test_calendars_and_sla_records_learn_their_version_and_downgrade_keeping_them(
    empty_url: str,
) -> None:
    # 0041: a calendar counts its changes and an SLA record says which its clocks were timed
    # under; everything stored before is version 0 on both sides, timed under what it has.
    migrate.upgrade(empty_url, "0039")
    db = Database(empty_url, pool_size=1)
    with db.session() as s:  # later columns do not exist yet: no ORM insert
        ws = new_id()
        s.execute(
            text(
                "INSERT INTO workspaces (id, name, settings, created_at)"
                " VALUES (:id, 'Acme', '{}', :now)"
            ),
            {"id": ws, "now": utcnow().isoformat()},
        )
        s.execute(
            text(
                "INSERT INTO business_calendars (workspace_id, timezone, hours, holidays)"
                " VALUES (:ws, 'UTC', '{\"mon\": [[\"09:00\", \"17:00\"]]}', '[]')"
            ),
            {"ws": ws},
        )
    migrate.upgrade(empty_url, "0041")
    with db.engine.connect() as conn:
        rows = conn.execute(text("SELECT timezone, version, changed_at FROM business_calendars"))
        assert rows.all() == [("UTC", 0, None)]
        columns = {c["name"]: c for c in inspect(conn).get_columns("conversation_slas")}
        assert not columns["calendar_version"]["nullable"]
    command.downgrade(migrate.config(empty_url), "0039")
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT timezone FROM business_calendars")).all() == [("UTC",)]
        for table, column in (
            ("business_calendars", "version"),
            ("business_calendars", "changed_at"),
            ("conversation_slas", "calendar_version"),
        ):
            assert column not in {c["name"] for c in inspect(conn).get_columns(table)}
    db.dispose()


def test_the_mails_already_stored_are_indexed_by_the_addresses_their_lists_hold(
    empty_url: str,
) -> None:
    # 0040: an erasure finds the mails that list the person's address by an index of them,
    # filled here for the email inboxes' mails stored before, as the code keeps it since.
    migrate.upgrade(empty_url, "0039")
    db = Database(empty_url, pool_size=1)
    with db.session() as s:
        ws = Workspace(name="Acme")
        s.add(ws)
        s.flush()
        mail, api = (Inbox(workspace_id=ws.id, name=c, channel=c) for c in ("email", "api"))
        dana = Customer(workspace_id=ws.id, name="Dana", attributes={})
        s.add_all([mail, api, dana])
        s.flush()
        conv = Conversation(workspace_id=ws.id, customer_id=dana.id, inbox_id=mail.id)
        s.add(conv)
        s.flush()
        metas = {
            "hers": {
                "email": {
                    "from": "Dana@Example.org",
                    "to": ["support@acme.test"],
                    "cc": ["Walter@Example.ORG", "kim@faß.de", "not an address"],
                    "message_id": "<1@example.org>",
                }
            },
            "ours": {
                "email": {"cc": ["walter@example.org"], "bcc": [], "bounced": ["ana@example.org"]},
                "delivery": {"refused_copies": ["zed@example.org"]},
            },
            "a line": {},
            "by api": {"triage": {"category": "billing"}},
        }
        ids = {name: new_id() for name in metas}
        s.execute(  # messages with no ORM flush: the index's rows are the migration's alone
            insert(Message.__table__),
            [
                {
                    "id": ids[name],
                    "workspace_id": ws.id,
                    "conversation_id": conv.id,
                    "inbox_id": api.id if name == "by api" else mail.id,
                    "direction": "in",
                    "kind": "message",
                    "sender_type": "customer",
                    "text": name,
                    "status": "received",
                    "meta": meta,
                    "created_at": utcnow(),
                }
                for name, meta in metas.items()
            ],
        )
    migrate.upgrade(empty_url)
    with db.session(write=False) as s:
        held = {
            (i, k)
            for i, k in s.execute(
                select(MessageAddress.message_id, MessageAddress.address_key).where(
                    MessageAddress.workspace_id == ws.id
                )
            )
        }
    # As the code writes a mail's rows: the same addresses, the same keys.
    assert held == {
        (ids[name], addresses.key(a))
        for name, meta in metas.items()
        for a in addresses.listed(meta)
    }
    assert {k for i, k in held if i == ids["hers"]} == {
        addresses.key(a)
        for a in (
            "dana@example.org",
            "support@acme.test",
            "walter@example.org",
            "kim@xn--fa-hia.de",
            "not an address",
        )
    }
    assert {i for i, _ in held} == {ids["hers"], ids["ours"]}
    command.downgrade(migrate.config(empty_url), "0039")
    with db.engine.connect() as conn:
        assert "message_addresses" not in inspect(conn).get_table_names()
    db.dispose()
    migrate.upgrade(empty_url)


def test_what_an_erasure_looks_up_is_indexed_and_downgrades_without_it(empty_url: str) -> None:
    # 0043: the columns an erasure (and the database's cascades from what it deletes) looked
    # rows up by without an index; the mostly empty ones indexed where they are set.
    added = {
        "ix_bot_examples_message": ("bot_intent_examples", "message_id", True),
        "ix_customers_merged_into": ("customers", "merged_into_id", True),
        "ix_webchat_visitors_customer": ("webchat_visitors", "customer_id", True),
        "ix_customer_merges_merged": ("customer_merges", "merged_id", False),
        "ix_merge_suggestions_left": ("merge_suggestions", "left_id", False),
        "ix_notifications_conversation": ("notifications", "conversation_id", False),
        "ix_bot_unanswered_conversation": ("bot_unanswered", "conversation_id", False),
        "ix_conversation_reads_conversation": ("conversation_reads", "conversation_id", False),
        "ix_audit_log_target": ("audit_log", "target_id", False),
    }
    migrate.upgrade(empty_url, "0043")
    db = Database(empty_url, pool_size=1)
    with db.engine.connect() as conn:
        dialect = conn.dialect.name
        for name, (table, column, partial) in added.items():
            [found] = [ix for ix in inspect(conn).get_indexes(table) if ix["name"] == name]
            assert found["column_names"] == [column], name
            where = found.get("dialect_options", {}).get(f"{dialect}_where")
            assert (f"{column} IS NOT NULL" in str(where)) == partial, (name, where)
    command.downgrade(migrate.config(empty_url), "0042")
    for name, (table, _, _) in added.items():
        assert name not in _indexes(db, table)
    db.dispose()
    migrate.upgrade(empty_url)
