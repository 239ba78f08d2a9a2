"""The Redis bus when Redis stops answering."""

import asyncio
import socket
import threading

import pytest

from rapport.bus import RedisBus

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
