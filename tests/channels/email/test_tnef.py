"""Outlook's winmail.dat (TNEF): the files inside it are the message's attachments, and a
winmail.dat we cannot read whole is kept as it came (tests/channels/email/test_email.py
has the SMTP frame)."""

import random
import struct
from email.message import EmailMessage

import pytest
from fastapi.testclient import TestClient

from rapport.channels.email import tnef
from rapport.channels.email.parse import parse
from tests.channels.email.test_email import conversations, customer_mail, send
from tests.conftest import auth
from tests.factories import World

XLSX = b"PK\x03\x04" + b"spreadsheet" * 40
JPEG = b"\xff\xd8\xff\xe0" + b"pixels" * 50


# A TNEF writer after [MS-OXTNEF]: each record its level, attribute, length, data and the
# 16-bit sum of the data's bytes.
def record(level: int, attribute: int, value: bytes, checksum: int | None = None) -> bytes:
    check = sum(value) & 0xFFFF if checksum is None else checksum
    return struct.pack("<BII", level, attribute, len(value)) + value + struct.pack("<H", check)


def padded(value: bytes) -> bytes:
    return value + b"\x00" * (-len(value) % 4)


def counted(ptype: int, pid: int, value: bytes) -> bytes:
    """A string or binary property: one value, its size, its bytes padded to 4."""
    return struct.pack("<HHII", ptype, pid, 1, len(value)) + padded(value)


def props(*encoded: bytes) -> bytes:
    return struct.pack("<I", len(encoded)) + b"".join(encoded)


def unicode_prop(pid: int, text: str) -> bytes:
    return counted(tnef.PT_UNICODE, pid, (text + "\x00").encode("utf-16-le"))


def attachment_props(long_name: str, mime: str | None = None) -> bytes:
    named = (  # a named string property (its name, padded), which is skipped
        struct.pack("<HH", tnef.PT_STRING8, 0x8005)
        + b"\x08\x20\x06\x00\x00\x00\x00\x00\xc0\x00\x00\x00\x00\x00\x00\x46"
        + struct.pack("<II", 1, 6)
        + padded("ab\x00".encode("utf-16-le"))
        + struct.pack("<II", 1, 3)
        + padded(b"xy\x00")
    )
    found = [
        struct.pack("<HHI", 0x0003, tnef.PID_ATTACH_METHOD, tnef.ATTACH_BY_VALUE),
        struct.pack("<HHHH", 0x000B, 0x7FFE, 1, 0),  # PidTagAttachmentHidden: false, padded
        named,
        unicode_prop(tnef.PID_ATTACH_LONG_FILENAME, long_name),
    ]
    if mime:
        found.append(counted(tnef.PT_STRING8, tnef.PID_ATTACH_MIME_TAG, mime.encode() + b"\0"))
    return props(*found)


def attachment(title: str, data: bytes, mapi: bytes | None = None) -> bytes:
    rend = struct.pack("<HIHHI", 1, 0xFFFFFFFF, 0xFFFF, 0xFFFF, 0)
    out = record(2, tnef.ATT_ATTACH_REND_DATA, rend)
    out += record(2, tnef.ATT_ATTACH_TITLE, title.encode("cp1252") + b"\x00")
    out += record(2, tnef.ATT_ATTACH_DATA, data)
    return out + (record(2, tnef.ATT_ATTACHMENT, mapi) if mapi is not None else b"")


def stream(*attachments: bytes) -> bytes:
    head = struct.pack("<IH", tnef.SIGNATURE, 0x1A2B)
    head += record(1, 0x00089006, struct.pack("<I", 0x00010000))  # attTnefVersion
    head += record(1, tnef.ATT_OEM_CODEPAGE, struct.pack("<II", 1252, 0))
    head += record(1, 0x00078008, b"IPM.Microsoft Mail.Note\x00")  # attMessageClass
    return head + b"".join(attachments)


def two_files() -> bytes:
    return stream(
        attachment("QUARTE~1.XLS", XLSX, attachment_props("Quarterly report 2026.xlsx")),
        attachment("DAMAGE~1.JPG", JPEG, attachment_props("Photo of the damage.jpg", "image/jpeg")),
    )


def outlook_mail(winmail: bytes) -> EmailMessage:
    mail = customer_mail("The report and a photo are attached.")
    mail.add_attachment(winmail, maintype="application", subtype="ms-tnef", filename="winmail.dat")
    return mail


def stored(mail: EmailMessage) -> list[tuple[str, str, bytes]]:
    parsed = parse(mail.as_bytes())
    return [(a.filename, a.content_type, a.data) for a in parsed.attachments]


def test_the_files_in_winmail_dat_are_the_mails_attachments_by_their_long_names() -> None:
    # winmail.dat was stored as one opaque file, which no agent could open.
    assert stored(outlook_mail(two_files())) == [
        (
            "Quarterly report 2026.xlsx",
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            XLSX,
        ),
        ("Photo of the damage.jpg", "image/jpeg", JPEG),
    ]
    # Without properties to read, each file has its 8.3 title.
    plain = stream(attachment("NOTES.TXT", b"Call me."))
    assert stored(outlook_mail(plain)) == [("NOTES.TXT", "text/plain", b"Call me.")]


def test_a_winmail_dat_cut_short_is_kept_as_it_came() -> None:
    whole = two_files()
    cut = whole[: len(whole) - 40]  # in the second file's properties
    parsed = parse(outlook_mail(cut).as_bytes())
    assert [(a.filename, a.data) for a in parsed.attachments] == [("winmail.dat", cut)]
    assert any("winmail.dat: TNEF not readable" in p for p in parsed.problems)
    # Cut anywhere, the reader says it cannot read it or reads what is whole; never more.
    for end in range(len(whole)):
        try:
            decoded = tnef.decode(whole[:end])
        except tnef.Unreadable:
            continue
        assert all(f.data in (XLSX, JPEG) for f in decoded.files)


def test_a_huge_count_is_refused_at_once_and_winmail_dat_kept() -> None:
    # tnefparse trusts a 32-bit length: a 37-byte file kept it reading for good.
    crafted = struct.pack("<IH", tnef.SIGNATURE, 1) + struct.pack("<BII", 2, 0x0006800F, 2**32 - 1)
    crafted += b"\x00" * (37 - len(crafted))
    with pytest.raises(tnef.Unreadable):
        tnef.decode(crafted)
    assert stored(outlook_mail(crafted)) == [("winmail.dat", "application/ms-tnef", crafted)]
    # A property list claiming four billion properties, or values: the 8.3 title names it.
    for mapi in (
        struct.pack("<I", 2**32 - 1) + b"\x00" * 16,
        props(struct.pack("<HHI", tnef.PT_UNICODE, tnef.PID_ATTACH_LONG_FILENAME, 2**31)),
        props(struct.pack("<HHII", tnef.PT_UNICODE, tnef.PID_ATTACH_LONG_FILENAME, 1, 2**32 - 8)),
    ):
        got = stored(outlook_mail(stream(attachment("REPORT~1.PDF", b"%PDF-1.4", mapi))))
        assert got == [("REPORT~1.PDF", "application/pdf", b"%PDF-1.4")]
    # Attachments past the cap: not read at all.
    many = stream(*[attachment(f"F{n}.TXT", b"x") for n in range(tnef.MAX_FILES + 1)])
    assert [a[0] for a in stored(outlook_mail(many))] == ["winmail.dat"]


def test_winmail_dat_with_bytes_garbled_reads_or_is_unreadable_never_an_error() -> None:
    # Garbled records, and garbled properties under a right checksum: whatever the bytes,
    # the reader says Unreadable or reads them; no other exception reaches parse.
    rng = random.Random(7)
    whole, mapi = two_files(), attachment_props("Quarterly report 2026.xlsx", "text/plain")

    def garbled(data: bytes) -> bytes:
        out = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            out[rng.randrange(len(out))] = rng.choice((0, 0x80, 0xFF, rng.randrange(256)))
        return bytes(out)

    for n in range(2000):
        data = garbled(whole) if n % 2 else stream(attachment("A.TXT", b"x", garbled(mapi)))
        try:
            tnef.decode(data)
        except tnef.Unreadable:
            pass


def test_a_winmail_dat_with_a_bad_checksum_is_kept_as_it_came() -> None:
    rend = struct.pack("<HIHHI", 1, 0xFFFFFFFF, 0xFFFF, 0xFFFF, 0)
    bad = stream(
        record(2, tnef.ATT_ATTACH_REND_DATA, rend),
        record(2, tnef.ATT_ATTACH_TITLE, b"NOTES.TXT\x00"),
        record(2, tnef.ATT_ATTACH_DATA, b"Call me.", checksum=(sum(b"Call me.") + 1) & 0xFFFF),
    )
    parsed = parse(outlook_mail(bad).as_bytes())
    assert [(a.filename, a.data) for a in parsed.attachments] == [("winmail.dat", bad)]
    assert any("bad checksum" in p for p in parsed.problems)


def test_a_winmail_dat_holding_an_embedded_message_is_kept_beside_its_files() -> None:
    # An attached mail (attach method 5) is no file we can give: winmail.dat stays with it.
    embedded = attachment("FWD.MSG", b"", props(struct.pack("<HHI", 0x0003, 0x3705, 5)))
    mixed = stream(attachment("NOTES.TXT", b"Call me."), embedded)
    assert [a[0] for a in stored(outlook_mail(mixed))] == ["NOTES.TXT", "winmail.dat"]
    # Only the message's own attributes (its rich body): winmail.dat as it came.
    assert [a[0] for a in stored(outlook_mail(stream()))] == ["winmail.dat"]


def test_an_outlook_mails_files_reach_the_agent_over_smtp(
    client: TestClient, world: World, mail_inbox: str, smtp_port: int
) -> None:
    send(smtp_port, outlook_mail(two_files()))
    [conv] = conversations(client, world, mail_inbox)
    [message] = client.get(f"/api/v1/conversations/{conv['id']}", headers=auth(world.bob)).json()[
        "messages"
    ]
    files = {a["filename"]: a for a in message["attachments"]}
    assert set(files) == {"Quarterly report 2026.xlsx", "Photo of the damage.jpg", "original.eml"}
    assert files["Photo of the damage.jpg"]["content_type"] == "image/jpeg"
    base = f"/api/v1/conversations/{conv['id']}/messages/{message['id']}/attachments/"
    for name, data in (("Quarterly report 2026.xlsx", XLSX), ("Photo of the damage.jpg", JPEG)):
        r = client.get(base + files[name]["id"], headers=auth(world.bob))
        assert r.status_code == 200 and r.content == data
