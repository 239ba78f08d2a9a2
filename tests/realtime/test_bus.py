"""The Redis bus: which processes hear each other, and when Redis stops answering."""

import asyncio
import socket
import threading
import uuid
from typing import Any

import pytest

from rapport import bus as bus_module
from rapport.bus import RedisBus
from rapport.db import Database
from rapport.realtime import service as realtime
from tests.conftest import REDIS_URL
from tests.factories import World

pytest.importorskip("redis", reason="the redis extra is not installed")


async def test_a_redis_that_stops_answering_is_given_up_and_events_still_reach_this_process() -> (
    None
):
    # Events are published from request and ingest threads. A Redis that accepts and never
    # answers used to hang each publish for good (no socket timeout); now the first one
    # times out, Redis is left alone for a while, and this process's subscribers get every
    # event all the same.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = silent.accept()
            except OSError:
                return
            accepted.append(conn)  # never read, never answered

    threading.Thread(target=accept, daemon=True).start()
    bus = RedisBus(f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
    bus._loop = asyncio.get_running_loop()  # as start() sets it, without Redis's listener
    try:
        with bus.subscribe("ws-1") as sub:
            for n in range(5):
                await asyncio.to_thread(
                    bus.publish, {"id": n, "workspace_id": "ws-1", "type": "t", "payload": {}}
                )
            got = [(await asyncio.wait_for(sub.queue.get(), 5))["id"] for _ in range(5)]
        assert got == [0, 1, 2, 3, 4]
        assert len(accepted) == 1  # tried once, then left alone
    finally:
        silent.close()
        for conn in accepted:
            conn.close()


@pytest.mark.redis
async def test_installations_sharing_a_redis_server_hear_only_their_own_database() -> None:
    # Pub/sub ignores Redis's database numbers. Two installations pointed at databases of
    # their own on one server used to share one channel, and each delivered the other's
    # events to its own workspace of the same id.
    if not REDIS_URL:
        pytest.skip("Redis not configured: set RAPPORT_TEST_REDIS_URL")
    server = REDIS_URL.rpartition("/")[0]
    ours, ours_too, theirs = (RedisBus(f"{server}/{db}") for db in (14, 14, 15))
    for bus in (ours, ours_too, theirs):
        await bus.start()
    workspace = uuid.uuid4().hex
    try:
        with ours.subscribe(workspace) as sub:
            for n, bus in enumerate((theirs, ours_too)):
                event = {"id": n, "workspace_id": workspace, "type": "t", "payload": {}}
                await asyncio.to_thread(bus.publish, event)
            heard = await asyncio.wait_for(sub.queue.get(), 5)
            assert heard["id"] == 1  # the other installation's event (0) never came
            await asyncio.sleep(0.2)
            assert sub.queue.empty()
    finally:
        for bus in (ours, ours_too, theirs):
            await bus.stop()


@pytest.mark.redis
async def test_a_transactions_events_go_to_redis_in_one_round_trip_in_order(
    database: Database, world: World
) -> None:
    # Each event was a PUBLISH of its own: a bulk change of 3,000 conversations cost the
    # request 3,000 round trips to Redis after its commit.
    if not REDIS_URL:
        pytest.skip("Redis not configured: set RAPPORT_TEST_REDIS_URL")
    ours, other_process = RedisBus(REDIS_URL), RedisBus(REDIS_URL)
    trips: list[int] = []
    sync = ours._sync

    class Counted:
        """Redis's client, counting the commands of each round trip to the server."""

        def __getattr__(self, name: str) -> Any:
            if name in ("publish", "execute_command"):
                trips.append(1)
            return getattr(sync, name)

        def pipeline(self, **kw: Any) -> Any:
            pipe = sync.pipeline(**kw)
            execute = pipe.execute

            def counted() -> Any:
                trips.append(len(pipe.command_stack))
                return execute()

            pipe.execute = counted  # type: ignore[method-assign]
            return pipe

    ours._sync = Counted()  # type: ignore[assignment]
    await other_process.start()
    workspace = world.acme.workspace.id
    previous = bus_module.get_bus()
    bus_module.set_bus(ours)
    try:
        with other_process.subscribe(workspace) as sub:
            with database.session() as db:
                for n in range(500):
                    realtime.emit(db, workspace_id=workspace, type="t", payload={"n": n})
            heard = [(await asyncio.wait_for(sub.queue.get(), 5)) for _ in range(500)]
        assert [e["payload"]["n"] for e in heard] == list(range(500))
        assert trips == [500]  # one pipeline of 500 commands
    finally:
        bus_module.set_bus(previous)
        await other_process.stop()
