"""IMAP polling against a real IMAP conversation: new mail once, nothing skipped across
restarts, a rebuilt mailbox read again without doubles."""

import socketserver
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import make_msgid

import pytest
from fastapi.testclient import TestClient

from rapport.channels.email.imap import poll
from rapport.config import Settings
from rapport.db import Database
from tests.conftest import auth
from tests.factories import World
from tests.standin import serving


class Mailbox:
    def __init__(self) -> None:
        self.uidvalidity = 1
        self.messages: list[tuple[int, bytes]] = []
        self.logins: list[tuple[str, str]] = []
        self.refuse_once: set[int] = set()  # UIDs whose next FETCH the server answers NO

    def add(self, text: str) -> None:
        mail = EmailMessage()
        mail["From"] = "Ray <ray@example.net>"
        mail["To"] = "help@acme.test"
        mail["Subject"] = "Question"
        mail["Message-ID"] = make_msgid(domain="example.net")
        mail.set_content(text)
        uid = (self.messages[-1][0] + 1) if self.messages else 1
        self.messages.append((uid, mail.as_bytes()))


def handler_for(box: Mailbox) -> type[socketserver.StreamRequestHandler]:
    class Imap(socketserver.StreamRequestHandler):
        """Just enough IMAP4rev1 for imaplib: LOGIN, EXAMINE, UID SEARCH, UID FETCH, LOGOUT."""

        def say(self, line: str) -> None:
            self.wfile.write(line.encode() + b"\r\n")

        def handle(self) -> None:
            self.say("* OK IMAP4rev1 test server ready")
            for raw in self.rfile:
                tag, _, rest = raw.decode().strip().partition(" ")
                cmd, _, args = rest.partition(" ")
                cmd = cmd.upper()
                if cmd == "CAPABILITY":
                    self.say("* CAPABILITY IMAP4rev1 AUTH=PLAIN")
                    self.say(f"{tag} OK CAPABILITY completed")
                elif cmd == "LOGIN":
                    user, password = (a.strip('"') for a in args.split(" ", 1))
                    box.logins.append((user, password))
                    self.say(
                        f"{tag} OK LOGIN completed"
                        if password == "imap-pass"
                        else f"{tag} NO bad password"
                    )
                elif cmd in ("EXAMINE", "SELECT"):
                    self.say(f"* {len(box.messages)} EXISTS")
                    self.say(f"* OK [UIDVALIDITY {box.uidvalidity}] UIDs valid")
                    self.say(f"{tag} OK [READ-ONLY] {cmd} completed")
                elif cmd == "UID" and args.upper().startswith("SEARCH"):
                    low = int(args.split()[-1].split(":")[0])
                    uids = [str(u) for u, _ in box.messages if u >= low]
                    self.say("* SEARCH " + " ".join(uids))
                    self.say(f"{tag} OK SEARCH completed")
                elif cmd == "UID" and args.upper().startswith("FETCH"):
                    uid = int(args.split()[1])
                    if uid in box.refuse_once:
                        box.refuse_once.discard(uid)
                        self.say(f"{tag} NO [UNAVAILABLE] try again later")
                        continue
                    for seq, (u, data) in enumerate(box.messages, 1):
                        if u == uid:
                            self.wfile.write(
                                f"* {seq} FETCH (UID {u} RFC822 {{{len(data)}}}\r\n".encode()
                                + data
                                + b")\r\n"
                            )
                    self.say(f"{tag} OK FETCH completed")
                elif cmd == "LOGOUT":
                    self.say("* BYE")
                    self.say(f"{tag} OK LOGOUT completed")
                    return
                else:
                    self.say(f"{tag} BAD unknown command")

    return Imap


def polled_inbox(client: TestClient, world: World, port: int) -> str:
    """An email inbox that reads the stand-in's mailbox over IMAP."""
    r = client.post(
        "/api/v1/inboxes",
        json={
            "name": "Help",
            "channel": "email",
            "settings": {
                "address": "help@acme.test",
                "imap_host": "127.0.0.1",
                "imap_port": port,
                "imap_security": "none",
                "imap_username": "help@acme.test",
                "imap_password": "imap-pass",
            },
        },
        headers=auth(world.alice),
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def poll_once(database: Database, settings: Settings, inbox: str) -> int:
    """One poll, as the job runs it; how many messages it took."""
    key = settings.secret_key.get_secret_value()
    return poll(database, inbox_id=inbox, secret_key=key, settings_obj=settings)


@pytest.fixture
def imap() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    with serving(socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler_for(box))) as server:
        server.daemon_threads = True
        yield box, server.server_address[1]


def test_polling_takes_new_mail_once_and_resumes_after_a_restart(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    imap: tuple[Mailbox, int],
) -> None:
    box, port = imap
    inbox = polled_inbox(client, world, port)
    box.add("first question")
    box.add("second question")
    assert poll_once(database, settings, inbox) == 2
    assert poll_once(database, settings, inbox) == 0
    box.add("third question")
    # A new process knows nothing in memory: the UID is remembered in the database.
    assert poll_once(database, settings, inbox) == 1
    box.uidvalidity = 2  # the server rebuilt the mailbox: everything is read again...
    poll_once(database, settings, inbox)
    [conv] = client.get(
        "/api/v1/conversations", params={"inbox_id": inbox}, headers=auth(world.bob)
    ).json()["items"]
    texts = [
        m["text"]
        for m in client.get(f"/api/v1/conversations/{conv['id']}", headers=auth(world.bob)).json()[
            "messages"
        ]
    ]
    assert texts == ["first question", "second question", "third question"]  # ...and stored once
    assert box.logins[0] == ("help@acme.test", "imap-pass")


def test_a_message_the_server_cannot_give_now_is_fetched_on_the_next_poll(
    client: TestClient,
    world: World,
    database: Database,
    settings: Settings,
    imap: tuple[Mailbox, int],
) -> None:
    # A FETCH answered NO was skipped, and the next message stored moved the UID mark past
    # it: that mail was never read.
    box, port = imap
    inbox = polled_inbox(client, world, port)
    box.add("first question")
    box.add("second question")
    box.refuse_once = {1}
    with pytest.raises(RuntimeError):  # the job fails, and is tried again
        poll_once(database, settings, inbox)
    assert poll_once(database, settings, inbox) == 2
