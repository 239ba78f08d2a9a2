"""The files an Outlook mail carries inside ``winmail.dat`` (``application/ms-tnef``).

Outlook wraps a mail's attachments in one TNEF part ([MS-OXTNEF]): a signature, a legacy
key, then attribute records (level, attribute id and type, length, data, 16-bit checksum).
Each attachment's records begin with attAttachRendData; its bytes are attAttachData, its
8.3 name attAttachTitle, and its long name and MIME type are MAPI properties in
attAttachment. Read here and no further: embedded messages, OLE objects and the RTF body
are left in winmail.dat, which is then kept as it came.

Every count and length is checked against the bytes that remain before anything is read
or allocated (the maintained-by-no-one ``tnefparse`` trusts a 32-bit count, and a 37-byte
file keeps it busy for good): a stream that is cut short, lies about a length or a
checksum, or holds more than we read, is ``Unreadable`` and the caller keeps winmail.dat.
"""

import codecs
import mimetypes
import re
import struct
from dataclasses import dataclass

SIGNATURE = 0x223E9F78
LVL_MESSAGE = 0x01
LVL_ATTACHMENT = 0x02

# Attribute ids as written: the attribute's type in the high 16 bits, its id in the low.
ATT_OEM_CODEPAGE = 0x00069007
ATT_ATTACH_REND_DATA = 0x00069002
ATT_ATTACH_TITLE = 0x00018010
ATT_ATTACH_DATA = 0x0006800F
ATT_ATTACHMENT = 0x00069005

# MAPI properties of an attachment read from attAttachment.
PID_ATTACH_METHOD = 0x3705
PID_ATTACH_LONG_FILENAME = 0x3707
PID_ATTACH_MIME_TAG = 0x370E
ATTACH_BY_VALUE = 1

MAX_FILES = 100
# A real stream holds ~10 records per attachment: a cap well past that keeps a stream of
# millions of empty records from costing seconds of a listener's time.
MAX_ATTRIBUTES = 20 * MAX_FILES + 100
MAX_PROPERTIES = 1_000

# Property types whose values have a fixed size, each value padded to 4 bytes.
_FIXED = {
    0x0002: 2,  # PtypInteger16
    0x0003: 4,  # PtypInteger32
    0x0004: 4,  # PtypFloating32
    0x0005: 8,  # PtypFloating64
    0x0006: 8,  # PtypCurrency
    0x0007: 8,  # PtypFloatingTime
    0x000A: 4,  # PtypErrorCode
    0x000B: 2,  # PtypBoolean
    0x0014: 8,  # PtypInteger64
    0x0040: 8,  # PtypTime
    0x0048: 16,  # PtypGuid
}
PT_STRING8 = 0x001E
PT_UNICODE = 0x001F
# Counted values, each its size then its bytes, padded to 4 bytes.
_VARIABLE = {PT_STRING8, PT_UNICODE, 0x0102, 0x000D}  # strings, PtypBinary, PtypObject
MV_FLAG = 0x1000

_MIME_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$")
_UNSAFE_IN_NAME = re.compile(r"[\x00-\x1f\x7f]")


class Unreadable(ValueError):
    """Not a TNEF stream we can read whole: the caller keeps winmail.dat."""


@dataclass(frozen=True)
class TnefFile:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class Decoded:
    files: list[TnefFile]
    # Every attachment the stream holds is among ``files`` (none was an embedded message
    # or an OLE object, which are not files and stay in winmail.dat).
    complete: bool


class _Reader:
    """Bytes read front to back; asking for more than remains is ``Unreadable``."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        if n < 0 or n > self.remaining:
            raise Unreadable("cut short")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "little")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "little")

    def pad(self, size: int) -> None:
        # Writers differ on the last value's padding: skip what is there of it.
        self.pos += min(-size % 4, self.remaining)


def is_tnef(data: bytes) -> bool:
    return len(data) >= 4 and struct.unpack_from("<I", data)[0] == SIGNATURE


@dataclass
class _Attachment:
    title: bytes | None = None
    data: bytes | None = None
    props: bytes | None = None


def decode(data: bytes, *, max_files: int = MAX_FILES) -> Decoded:
    """The files a TNEF stream holds; ``Unreadable`` unless the whole stream reads."""
    r = _Reader(data)
    if r.u32() != SIGNATURE:
        raise Unreadable("no TNEF signature")
    r.u16()  # the legacy key
    codepage = "cp1252"
    attachments: list[_Attachment] = []
    records = 0
    while r.remaining:
        records += 1
        if records > MAX_ATTRIBUTES:
            raise Unreadable("too many attributes")
        level = r.take(1)[0]
        attribute = r.u32()
        value = r.take(r.u32())
        if r.u16() != sum(value) & 0xFFFF:
            raise Unreadable("bad checksum")
        if level == LVL_MESSAGE:
            if attribute == ATT_OEM_CODEPAGE and len(value) >= 4:
                codepage = _codepage(int.from_bytes(value[:4], "little"), codepage)
            continue  # the message's own attributes: its text is in the mail itself
        if level != LVL_ATTACHMENT:
            raise Unreadable(f"unknown level {level}")
        if attribute == ATT_ATTACH_REND_DATA:
            if len(attachments) >= max_files:
                raise Unreadable("too many attachments")
            attachments.append(_Attachment())
            continue
        if not attachments:
            raise Unreadable("an attachment's attribute before its attAttachRendData")
        if attribute == ATT_ATTACH_TITLE:
            attachments[-1].title = value
        elif attribute == ATT_ATTACH_DATA:
            attachments[-1].data = value
        elif attribute == ATT_ATTACHMENT:
            attachments[-1].props = value
    files: list[TnefFile] = []
    complete = True
    for number, att in enumerate(attachments, 1):
        props = _attachment_props(att.props, codepage)
        method = props.get(PID_ATTACH_METHOD)
        if att.data is None or (method is not None and method != ATTACH_BY_VALUE):
            complete = False  # an embedded message or OLE object: not a file
            continue
        long_name = props.get(PID_ATTACH_LONG_FILENAME)
        title = _text(att.title, codepage) if att.title is not None else ""
        name = _file_name(long_name if isinstance(long_name, str) else "") or _file_name(title)
        name = name or f"attachment-{number}"
        mime = props.get(PID_ATTACH_MIME_TAG)
        mime = mime.strip().lower() if isinstance(mime, str) else ""
        content_type = (
            mime
            if _MIME_TYPE.match(mime)
            else mimetypes.guess_type(name)[0] or "application/octet-stream"
        )
        files.append(TnefFile(name, content_type, att.data))
    return Decoded(files, complete)


def _codepage(number: int, default: str) -> str:
    try:
        return codecs.lookup(f"cp{number}").name
    except LookupError:
        return default


def _text(raw: bytes, codepage: str) -> str:
    return raw.split(b"\x00", 1)[0].decode(codepage, errors="replace")


def _file_name(name: str) -> str:
    """A name to store a file under: its last path part (a name is no place to say where
    to save it), without control characters."""
    name = _UNSAFE_IN_NAME.sub("", re.split(r"[\\/]", name)[-1]).strip()
    return "" if name in (".", "..") else name[:255]


def _attachment_props(raw: bytes | None, codepage: str) -> dict[int, str | int]:
    """The attachment's method, long name and MIME type; none when its properties cannot
    be read (its 8.3 title then names it)."""
    if raw is None:
        return {}
    try:
        return _properties(raw, codepage)
    except Unreadable:
        return {}


def _properties(raw: bytes, codepage: str) -> dict[int, str | int]:
    r = _Reader(raw)
    count = r.u32()
    # Each property takes at least 8 bytes (tag, then a value or a count).
    if count > MAX_PROPERTIES or count > r.remaining // 8:
        raise Unreadable("property count past the bytes")
    found: dict[int, str | int] = {}
    for _ in range(count):
        ptype, pid = r.u16(), r.u16()
        if pid >= 0x8000:  # a named property: its name follows, which we skip
            r.take(16)  # the property set's GUID
            kind = r.u32()
            if kind == 0:
                r.u32()
            elif kind == 1:
                size = r.u32()
                r.take(size)
                r.pad(size)
            else:
                raise Unreadable("named property of no known kind")
        base, multi = ptype & ~MV_FLAG, bool(ptype & MV_FLAG)
        values: list[bytes] = []
        if base in _FIXED:
            size = _FIXED[base]
            n = r.u32() if multi else 1
            if n > r.remaining // 4:
                raise Unreadable("value count past the bytes")
            for _ in range(n):
                values.append(r.take(size))
                r.pad(size)
        elif base in _VARIABLE:
            n = r.u32()
            if n > r.remaining // 4:
                raise Unreadable("value count past the bytes")
            for _ in range(n):
                size = r.u32()
                values.append(r.take(size))
                r.pad(size)
        else:
            raise Unreadable(f"property type {ptype:#06x}")
        if multi or len(values) != 1:
            continue
        if pid in (PID_ATTACH_LONG_FILENAME, PID_ATTACH_MIME_TAG) and base == PT_UNICODE:
            found[pid] = values[0].decode("utf-16-le", errors="replace").split("\x00", 1)[0]
        elif pid in (PID_ATTACH_LONG_FILENAME, PID_ATTACH_MIME_TAG) and base == PT_STRING8:
            found[pid] = _text(values[0], codepage)
        elif pid == PID_ATTACH_METHOD and base == 0x0003:
            found[pid] = int.from_bytes(values[0], "little")
    return found
