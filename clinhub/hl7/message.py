"""HL7 v2 messages: parse (lazily), read and edit values by path, encode, and build ACKs."""

from __future__ import annotations

import codecs
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

from clinhub.errors import ClinhubError, InvalidMessage

# Segments never contain CR (it ends them), so splitting on it is a no-op: a missing delimiter is
# replaced by this sentinel and the hot paths need no "is this delimiter defined" branch.
_ABSENT = "\r"
_ENVELOPE = frozenset({"FHS", "BHS", "BTS", "FTS"})
_LEADING_JUNK = "\ufeff\x0b\x00 \t\r\n"
_TRAILING_JUNK = "\x1c\x00\r\n"
# One scan finds what needs the slow path: a blank or whitespace-led line, or a second MSH.
_IRREGULAR = re.compile("\r(?:[\r \t\x0b]|MSH)")

#: HL7 table 0357 (message error condition codes) -> text, for ERR-3.
ERROR_CODES: dict[str, str] = {
    "0": "Message accepted",
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "104": "Value too long",
    "200": "Unsupported message type",
    "201": "Unsupported event code",
    "202": "Unsupported processing id",
    "203": "Unsupported version id",
    "204": "Unknown key identifier",
    "205": "Duplicate key identifier",
    "206": "Application record locked",
    "207": "Application internal error",
}
ACK_CODES = frozenset({"AA", "AE", "AR", "CA", "CE", "CR"})

# MSH-18 character set (table 0211) -> Python codec. Only ASCII-compatible sets are listed: the MSH
# itself has to be readable before the declared set is known.
_CHARSETS = {
    "ASCII": "ascii",
    "ISO IR6": "ascii",
    "8859/1": "latin-1",
    "ISO IR100": "latin-1",
    "8859/2": "iso8859-2",
    "8859/3": "iso8859-3",
    "8859/4": "iso8859-4",
    "8859/5": "iso8859-5",
    "8859/6": "iso8859-6",
    "8859/7": "iso8859-7",
    "8859/8": "iso8859-8",
    "8859/9": "iso8859-9",
    "8859/15": "iso8859-15",
    "UNICODE": "utf-8",
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",
    "ISO IR87": "iso2022_jp",
    "ISO IR159": "iso2022_jp_2",
    "GB 18030-2000": "gb18030",
    "KS X 1001": "euc_kr",
    "BIG-5": "big5",
}


class ParseError(InvalidMessage):
    """A message that cannot be parsed; `message` is a one-line reason.

    `error_code` is the HL7 table 0357 code an ACK reports (ERR-3) and `location` the segment and
    field at fault (e.g. "MSH-9"), when known.
    """

    def __init__(self, message: str, *, error_code: str = "100", location: str | None = None) -> None:
        super().__init__(message, detail={"hl7_error_code": error_code, "location": location})
        self.error_code = error_code
        self.location = location


class _Null(str):
    """The HL7 null (`""` on the wire): equal to "" and falsy, but distinct by identity."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NULL"


#: The HL7 null: `msg.get(path) is NULL` when the sender sent `""` ("delete this value").
NULL: str = _Null()


class Encoding:
    """The delimiters of a message (MSH-1 and MSH-2); an empty string means "not defined"."""

    __slots__ = (
        "_below_component",
        "_below_repetition",
        "_c",
        "_decode",
        "_e",
        "_encode",
        "_r",
        "_s",
        "_structure",
        "component",
        "escape",
        "field",
        "repetition",
        "subcomponent",
        "truncation",
    )

    def __init__(
        self,
        field: str = "|",
        component: str = "^",
        repetition: str = "~",
        escape: str = "\\",
        subcomponent: str = "&",
        truncation: str = "",
    ) -> None:
        self.field = field
        self.component = component
        self.repetition = repetition
        self.escape = escape
        self.subcomponent = subcomponent
        self.truncation = truncation
        self._c = component or _ABSENT
        self._r = repetition or _ABSENT
        self._s = subcomponent or _ABSENT
        self._e = escape or _ABSENT
        self._structure = self._r + self._c + self._s
        self._below_repetition = self._c + self._s
        self._below_component = self._s
        pairs = [(escape, "E"), (field, "F"), (component, "S"), (repetition, "R"), (subcomponent, "T")]
        pairs.append((truncation, "P"))
        defined = [(char, letter) for char, letter in pairs if char]
        table = {ord(char): f"{escape}{letter}{escape}" for char, letter in defined} if escape else {}
        if escape:  # control characters (CR ends a segment; VT, FS frame MLLP) travel as hex
            table.update({code: f"{escape}X{code:02X}{escape}" for code in range(32) if code not in table})
        self._encode = table
        self._decode = {letter: char for char, letter in defined}

    @property
    def msh2(self) -> str:
        """The encoding characters as MSH-2 writes them."""
        return self.component + self.repetition + self.escape + self.subcomponent + self.truncation

    def __repr__(self) -> str:
        return f"Encoding({self.field + self.msh2!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Encoding) and (self.field, self.msh2) == (other.field, other.msh2)

    def __hash__(self) -> int:
        return hash((self.field, self.msh2))

    def escape_text(self, text: str) -> str:
        """`text` with every delimiter replaced by its escape sequence, control characters by \\Xhh\\."""
        return text.translate(self._encode) if self._encode else text

    def unescape_text(self, text: str) -> str:
        """`text` with escape sequences decoded; unknown or unterminated sequences are kept as sent."""
        esc = self.escape
        if esc not in text or not esc:
            return text
        parts = text.split(esc)
        out = [parts[0]]
        last = len(parts) - 1
        i = 1
        while i <= last:
            if i == last:  # an escape character without its closing partner: literal
                out.append(esc + parts[i])
                break
            decoded = self._sequence(parts[i])
            out.append(f"{esc}{parts[i]}{esc}" if decoded is None else decoded)
            out.append(parts[i + 1])
            i += 2
        return "".join(out)

    def _sequence(self, seq: str) -> str | None:
        char = self._decode.get(seq)
        if char is not None:
            return char
        head = seq[:1]
        if head == "X" and len(seq) > 1:
            return _hex_text(seq[1:])
        if head in ("H", "N") and len(seq) == 1:
            return ""  # highlighting on/off: no meaning in plain text
        if seq == ".br":
            return "\n"
        if seq.startswith(".sp"):
            count = seq[3:].strip().lstrip("+")
            return "\n" * (int(count) if count.isdigit() and int(count) < 100 else 1)
        if seq[:3] in (".fi", ".nf", ".in", ".ti", ".sk", ".ce"):
            return ""
        return None


def _hex_text(digits: str) -> str | None:
    if len(digits) % 2:
        return None
    try:
        data = bytes.fromhex(digits)
    except ValueError:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


_STANDARD = Encoding()
_ENCODINGS: dict[str, Encoding] = {"|^~\\&": _STANDARD}


def _encoding(msh: str) -> Encoding:
    """The Encoding declared by an MSH (or FHS/BHS) segment's text."""
    if len(msh) < 4:
        raise ParseError(f"{msh[:3]}-1 field separator missing", error_code="102", location=f"{msh[:3]}-1")
    fs = msh[3]
    chars = msh[4:].partition(fs)[0]
    key = fs + chars
    cached = _ENCODINGS.get(key)
    if cached is not None:
        return cached
    if fs.isalnum() or fs.isspace():
        raise ParseError(f"MSH-1 field separator {fs!r} is invalid", error_code="102", location="MSH-1")
    if not chars:
        raise ParseError("MSH-2 encoding characters missing", error_code="102", location="MSH-2")
    if len(chars) > 5 or len(set(chars)) != len(chars) or any(c.isalnum() or c.isspace() for c in chars):
        raise ParseError(
            f"MSH-2 encoding characters {chars!r} are invalid", error_code="102", location="MSH-2"
        )
    enc = Encoding(fs, *(list(chars) + [""] * (5 - len(chars))))
    if len(_ENCODINGS) < 256:
        _ENCODINGS[key] = enc
    return enc


class Segment:
    """One segment. Fields are split on first access; `fields[n]` is field n (MSH-1 is the separator)."""

    __slots__ = ("_enc", "_fields", "_msh", "_raw", "name")

    def __init__(self, raw: str, encoding: Encoding, name: str | None = None) -> None:
        self._raw: str | None = raw
        self._enc = encoding
        self._fields: list[str] | None = None
        self.name = name if name is not None else _name(raw, encoding.field)
        self._msh = self.name in ("MSH", "FHS", "BHS")

    def __repr__(self) -> str:
        return f"Segment({self.encode()!r})"

    def _split(self) -> list[str]:
        fs = self._enc.field
        fields = self._raw.split(fs)  # type: ignore[union-attr]
        if self._msh:
            fields.insert(1, fs)
        self._fields = fields
        return fields

    @property
    def fields(self) -> list[str]:
        """The fields' encoded texts; index n is field n, index 0 the segment name."""
        return list(self._fields if self._fields is not None else self._split())

    def raw(self, field: int) -> str:
        """Field `field` as sent (delimiters and escape sequences kept); "" when absent."""
        fields = self._fields if self._fields is not None else self._split()
        return fields[field] if 0 <= field < len(fields) else ""

    def count(self, field: int) -> int:
        """How many repetitions field `field` has (0 when it is empty)."""
        text = self.raw(field)
        if not text:
            return 0
        if self._msh and field <= 2:
            return 1
        return text.count(self._enc._r) + 1

    def value(
        self, field: int, rep: int | None = None, comp: int | None = None, sub: int | None = None
    ) -> str:
        """The value at field[(rep)][-comp[-sub]]; see `Message.get` for what comes back."""
        fields = self._fields
        if fields is None:
            fields = self._split()
        if not 0 <= field < len(fields):
            return ""
        text = fields[field]
        if not text:
            return ""
        if field < 3 and self._msh:
            return text if (rep or 1) == 1 and (comp or 1) == 1 and (sub or 1) == 1 else ""
        enc = self._enc
        if rep is None:
            if comp is None and sub is None:
                return _leaf(text, enc, enc._structure)
            if enc._r in text:
                text = text[: text.index(enc._r)]
        elif enc._r in text:
            reps = text.split(enc._r)
            if rep > len(reps):
                return ""
            text = reps[rep - 1]
        elif rep != 1:
            return ""
        if comp is None:
            if sub is None:
                return _leaf(text, enc, enc._below_repetition)
            comp = 1
        if enc._c in text:
            parts = text.split(enc._c)
            if comp > len(parts):
                return ""
            text = parts[comp - 1]
        elif comp != 1:
            return ""
        if sub is None:  # the most common read: _leaf(text, enc, enc._below_component) inlined
            if enc._s in text:
                return text
            if text == '""':
                return NULL
            return enc.unescape_text(text) if enc._e in text else text
        if enc._s in text:
            parts = text.split(enc._s)
            if sub > len(parts):
                return ""
            text = parts[sub - 1]
        elif sub != 1:
            return ""
        return _leaf(text, enc, "")

    def get(self, path: str) -> str:
        """The value at a path relative to this segment: "5", "5-1", "3(2)-1", "5-1-1"."""
        _, _, field, rep, comp, sub = _compile_path(path, relative=True)
        return self.value(field, rep, comp, sub)

    def set(self, path: str, value: str | None) -> None:
        """Set the value at a relative path ("5-1"); the value is escaped, NULL is written as `""`."""
        _, _, field, rep, comp, sub = _compile_path(path, relative=True)
        self.set_value(field, rep, comp, sub, value)

    def set_value(
        self, field: int, rep: int | None, comp: int | None, sub: int | None, value: str | None
    ) -> None:
        if field == 0 or (self._msh and field <= 2):
            raise ValueError(f"{self.name}-{field} cannot be set")
        enc = self._enc
        text = '""' if value is NULL else enc.escape_text(value or "")
        fields = self._fields if self._fields is not None else self._split()
        if field >= len(fields):
            fields.extend([""] * (field + 1 - len(fields)))
        if rep is None and comp is None and sub is None:
            fields[field] = text
        else:
            fields[field] = _replace(fields[field], enc, rep or 1, comp, sub, text)
        self._raw = None

    def encode(self) -> str:
        """The segment's text (without a terminator)."""
        if self._raw is not None:
            return self._raw
        fields = self._fields or [self.name]
        if self._msh:
            fields = [fields[0], *fields[2:]]
        self._raw = self._enc.field.join(fields)
        return self._raw


def _leaf(text: str, enc: Encoding, lower: str) -> str:
    """A value as `get` returns it: NULL, encoded text when it still has structure, else decoded.

    `lower` holds the delimiters below the addressed level (sentinels when undefined).
    """
    if text == '""':
        return NULL
    for char in lower:
        if char in text:
            return text
    if enc._e in text:
        return enc.unescape_text(text)
    return text


def _name(raw: str, fs: str) -> str:
    """A segment's name: the text before its first field separator."""
    if raw[3:4] == fs:
        return raw[:3]
    end = raw.find(fs)
    return raw if end < 0 else raw[:end]


def _set_part(parts: list[str], index: int, text: str) -> None:
    if index > len(parts):
        parts.extend([""] * (index - len(parts)))
    parts[index - 1] = text


def _replace(field: str, enc: Encoding, rep: int, comp: int | None, sub: int | None, text: str) -> str:
    """`field` with repetition `rep` (its component `comp`, subcomponent `sub`) replaced by `text`."""
    if not enc.repetition and rep != 1:
        raise ValueError("this message defines no repetition separator")
    reps = field.split(enc.repetition) if enc.repetition else [field]
    if comp is None and sub is None:
        _set_part(reps, rep, text)
    else:
        if not enc.component and (comp or 1) != 1:
            raise ValueError("this message defines no component separator")
        current = reps[rep - 1] if rep <= len(reps) else ""
        comps = current.split(enc.component) if enc.component else [current]
        if sub is None:
            _set_part(comps, comp or 1, text)
        else:
            if not enc.subcomponent and sub != 1:
                raise ValueError("this message defines no subcomponent separator")
            inner = comps[(comp or 1) - 1] if (comp or 1) <= len(comps) else ""
            subs = inner.split(enc.subcomponent) if enc.subcomponent else [inner]
            _set_part(subs, sub, text)
            _set_part(comps, comp or 1, enc.subcomponent.join(subs))
        _set_part(reps, rep, enc.component.join(comps))
    return enc.repetition.join(reps)


_PATH = re.compile(
    r"^(?:(?P<seg>[A-Za-z][A-Za-z0-9]{1,2})(?:\[(?P<occ>\d+)\])?[-.])?"
    r"(?P<field>\d+)(?:\((?P<rep>\d+)\))?(?:[-.](?P<comp>\d+)(?:[-.](?P<sub>\d+))?)?$"
)
_PATHS: dict[str, tuple] = {}
_ABSOLUTE: dict[str, tuple] = {}  # the paths of _PATHS that name a segment: Message.get's lookup


def _compile_path(path: str, *, relative: bool = False) -> tuple:
    """(segment, occurrence, field, repetition, component, subcomponent) for a path like PID-3(2)-1."""
    spec = _PATHS.get(path)
    if spec is not None and (spec[0] is None) == relative:
        return spec
    match = _PATH.match(path) if isinstance(path, str) else None
    if match is None or (match["seg"] is None) != relative:
        shape = "FIELD[(REP)][-COMP[-SUB]]" if relative else "SEG[N]-FIELD[(REP)][-COMP[-SUB]]"
        raise ValueError(f"invalid HL7 path {path!r}: expected {shape}, e.g. PID-3(2)-1")
    numbers = [int(match[k]) if match[k] else None for k in ("occ", "field", "rep", "comp", "sub")]
    occ, field, rep, comp, sub = numbers
    if 0 in (occ, rep, comp, sub):
        raise ValueError(f"invalid HL7 path {path!r}: positions count from 1")
    spec = (match["seg"], occ or 1, field, rep, comp, sub)
    if len(_PATHS) > 4096:
        _PATHS.clear()
        _ABSOLUTE.clear()
    _PATHS[path] = spec
    if not relative:
        _ABSOLUTE[path] = spec
    return spec


class Message:
    """A parsed HL7 v2 message: segments are split into fields only when first read."""

    __slots__ = ("_charset", "_names", "_raw", "_segs", "encoding")

    def __init__(self, raw: list[str], encoding: Encoding, charset: str | None = None) -> None:
        self._raw = raw
        self._segs: list[Segment | None] = [None] * len(raw)
        self._names: list[str] | None = None
        self._charset = charset
        self.encoding = encoding

    def __repr__(self) -> str:
        return f"<Message {self.message_type}^{self.trigger_event} {self.control_id!r}>"

    def __str__(self) -> str:
        return self.encode()

    def __len__(self) -> int:
        return len(self._raw)

    def __iter__(self) -> Iterator[Segment]:
        return iter(self.segments)

    def _segment_names(self) -> list[str]:
        fs = self.encoding.field
        names = [raw[:3] if raw[3:4] == fs else _name(raw, fs) for raw in self._raw]
        self._names = names
        return names

    def _position(self, name: str, occurrence: int) -> int:
        """Index of the `occurrence`-th segment called `name`, or -1."""
        names = self._names if self._names is not None else self._segment_names()
        if name not in names:
            return -1
        i = names.index(name)
        while occurrence > 1:
            occurrence -= 1
            if name not in names[i + 1 :]:
                return -1
            i = names.index(name, i + 1)
        return i

    def _segment_at(self, i: int) -> Segment:
        seg = self._segs[i]
        if seg is None:
            names = self._names if self._names is not None else self._segment_names()
            seg = self._segs[i] = Segment(self._raw[i], self.encoding, names[i])
        return seg

    @property
    def segments(self) -> list[Segment]:
        """Every segment, in order."""
        return [self._segment_at(i) for i in range(len(self._raw))]

    def segment(self, name: str, occurrence: int = 1) -> Segment | None:
        """The `occurrence`-th (1-based) segment called `name`, or None."""
        i = self._position(name, occurrence) if occurrence > 0 else -1
        return None if i < 0 else self._segment_at(i)

    def all(self, name: str) -> list[Segment]:
        """Every segment called `name`, in order."""
        names = self._names if self._names is not None else self._segment_names()
        return [self._segment_at(i) for i, each in enumerate(names) if each == name]

    def get(self, path: str) -> str:
        """The value at `path`: "PID-5-1", "OBX[2]-5", "PID-3(2)-1", "PID-5-1-1", "MSH-9-2".

        Positions count from 1; a missing segment, field or part gives "". A leaf value comes back
        with its escape sequences decoded; `""` comes back as NULL. An element that still has
        structure below the addressed level (PID-5 holding components) comes back as sent.
        """
        spec = _ABSOLUTE.get(path)
        if spec is None:
            spec = _compile_path(path)
        name, occ, field, rep, comp, sub = spec
        names = self._names
        if names is None:
            names = self._segment_names()
        if name not in names:
            return ""
        i = names.index(name) if occ == 1 else self._position(name, occ)
        if i < 0:
            return ""
        seg = self._segs[i]
        if seg is None:
            seg = self._segs[i] = Segment(self._raw[i], self.encoding, name)
        return seg.value(field, rep, comp, sub)

    def set(self, path: str, value: str | None) -> None:
        """Set the value at `path` (escaped on encode; NULL writes `""`). Missing segments are appended."""
        name, occ, field, rep, comp, sub = _compile_path(path)
        while self.segment(name, occ) is None:
            self._append(name)
        self.segment(name, occ).set_value(field, rep, comp, sub, value)  # type: ignore[union-attr]

    def _append(self, name: str) -> None:
        self._raw.append(name)
        self._segs.append(None)
        self._names = None

    def raw_segments(self) -> list[str]:
        """Each segment's text, in order."""
        return [
            seg.encode() if seg is not None else raw for seg, raw in zip(self._segs, self._raw, strict=True)
        ]

    def encode(self) -> str:
        """The message's text: segments joined with CR (no CR after the last one)."""
        return "\r".join(self.raw_segments())

    @property
    def message_type(self) -> str:
        """MSH-9-1, e.g. "ADT"."""
        return self.get("MSH-9-1")

    @property
    def trigger_event(self) -> str:
        """MSH-9-2, e.g. "A01"."""
        return self.get("MSH-9-2")

    @property
    def message_structure(self) -> str:
        """MSH-9-3, e.g. "ADT_A01" (absent before v2.3.1)."""
        return self.get("MSH-9-3")

    @property
    def control_id(self) -> str:
        """MSH-10, the sender's unique id of this message."""
        return self.get("MSH-10")

    @property
    def processing_id(self) -> str:
        """MSH-11-1: P (production), D (debugging) or T (training)."""
        return self.get("MSH-11-1")

    @property
    def version(self) -> str:
        """MSH-12-1, e.g. "2.5.1"."""
        return self.get("MSH-12-1")

    @property
    def sending_application(self) -> str:
        """MSH-3: its namespace id, or its universal id when the namespace id is empty."""
        return _hd(self, 3)

    @property
    def sending_facility(self) -> str:
        """MSH-4 (namespace id, else universal id)."""
        return _hd(self, 4)

    @property
    def receiving_application(self) -> str:
        """MSH-5 (namespace id, else universal id)."""
        return _hd(self, 5)

    @property
    def receiving_facility(self) -> str:
        """MSH-6 (namespace id, else universal id)."""
        return _hd(self, 6)

    @property
    def charset(self) -> str:
        """The Python codec for this message's text: MSH-18 when known, else the one it was decoded with."""
        declared = _CHARSETS.get(self.get("MSH-18(1)-1").strip().upper())
        return declared or self._charset or "utf-8"


def _hd(msg: Message, field: int) -> str:
    msh = msg.segment("MSH")
    if msh is None:
        return ""
    return msh.value(field, 1, 1) or msh.value(field, 1, 2)


def _declared_charset(data: bytes) -> str | None:
    """The codec MSH-18 of the first MSH in `data` names, if any and known."""
    start = data.find(b"MSH")
    while start > 0 and data[start - 1 : start] not in (b"\r", b"\n"):
        start = data.find(b"MSH", start + 1)
    if start < 0 or len(data) < start + 5:
        return None
    end = min((i for i in (data.find(b"\r", start), data.find(b"\n", start)) if i >= 0), default=len(data))
    header = data[start:end]
    fs = header[3:4]
    fields = header.split(fs)
    if len(fields) < 18:
        return None
    rep = fields[1][1:2]
    value = fields[17].split(rep)[0] if rep else fields[17]
    comp = fields[1][:1]
    if comp:
        value = value.split(comp)[0]
    return _CHARSETS.get(value.decode("latin-1").strip().upper())


def _decode(data: object) -> tuple[str, str | None]:
    """(text, codec used) for bytes; ParseError for anything that is neither str nor bytes."""
    if isinstance(data, bytearray | memoryview):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise ParseError(f"an HL7 message is text or bytes, not {type(data).__name__}", error_code="102")
    if data.startswith(codecs.BOM_UTF8):
        data = data[3:]
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16"), "utf-16"
        except UnicodeDecodeError:
            raise ParseError("the message is not valid UTF-16", error_code="102") from None
    if data.isascii():
        return data.decode("ascii"), "ascii"
    for codec in (_declared_charset(data), "utf-8"):
        if codec:
            try:
                return data.decode(codec), codec
            except (UnicodeDecodeError, LookupError):
                continue
    return data.decode("latin-1"), "latin-1"


def _normalize(text: str) -> str:
    """`text` with MLLP framing bytes and a BOM stripped and every segment ended by CR alone."""
    text = text.lstrip(_LEADING_JUNK).rstrip(_TRAILING_JUNK)
    if "\n" in text:
        text = text.replace("\r\n", "\r").replace("\n", "\r")
    return text


def _lines(text: str) -> list[str]:
    """The segments of normalized `text`, blank and whitespace-only lines dropped."""
    return [line for line in text.split("\r") if line and not line.isspace()]


def _to_text(data: str | bytes) -> tuple[str, str | None]:
    if isinstance(data, str):
        return data, None
    return _decode(data)


def _message(lines: list[str], charset: str | None) -> Message:
    """A Message from its segment lines; the first must be the MSH."""
    if not lines or lines == [""]:
        raise ParseError("MSH segment missing: the message is empty")
    first = lines[0]
    if not first.startswith("MSH"):
        name = first[:3]
        if name in _ENVELOPE:
            raise ParseError(f"{name} batch envelope: use parse_batch", error_code="100", location=name)
        raise ParseError("MSH segment missing: a message starts with MSH", location="MSH")
    enc = _encoding(first)
    msg = Message(lines, enc, charset)
    msh = msg._segment_at(0)
    if not msh.value(9, None, 1).strip():
        raise ParseError("MSH-9 message type missing", error_code="101", location="MSH-9")
    return msg


def parse(text: str | bytes) -> Message:
    """Parse one HL7 v2 message (segments ended by CR, LF or CRLF); bytes are decoded per MSH-18.

    Raises ParseError (with a one-line reason) for anything that is not one message starting with MSH.
    """
    if type(text) is str:
        charset = None
    else:
        text, charset = _decode(text)
    text = _normalize(text)
    lines = text.split("\r")
    if _IRREGULAR.search(text) is not None:
        lines = [line for line in lines if line and not line.isspace()]
        count = sum(1 for line in lines if line.startswith("MSH"))
        if count > 1:
            raise ParseError(f"{count} messages in one text: use parse_batch", error_code="100")
    return _message(lines, charset)


def split_batch(text: str | bytes) -> list[str]:
    """The messages of a batch or multi-message file as texts (CR-separated), envelopes dropped.

    Use it to parse and answer each message on its own; `parse_batch` stops at the first bad one.
    """
    text, _ = _to_text(text)
    messages: list[list[str]] = []
    for line in _lines(_normalize(text)):
        name = line[:3]
        if name == "MSH":
            messages.append([line])
        elif name in _ENVELOPE and (len(line) == 3 or not line[3].isalnum()):
            continue
        elif not messages:
            raise ParseError(f"segment {name!r} before the first MSH", location=name)
        else:
            messages[-1].append(line)
    return ["\r".join(lines) for lines in messages]


def parse_batch(text: str | bytes) -> list[Message]:
    """Every message of an FHS/BHS batch, or of a file of messages (each starts at an MSH segment)."""
    text, charset = _to_text(text)
    messages = []
    for number, chunk in enumerate(split_batch(text), start=1):
        try:
            messages.append(_message(chunk.split("\r"), charset))
        except ParseError as error:
            raise ParseError(
                f"message {number}: {error.message}", error_code=error.error_code, location=error.location
            ) from None
    return messages


_last_stamp: tuple[datetime | None, str] = (None, "")


def local_now() -> datetime:
    """Now, in the local time zone, to the second (an ACK carries no finer time)."""
    return datetime.now(UTC).astimezone().replace(microsecond=0)


def hl7_timestamp(moment: datetime) -> str:
    """`moment` as an HL7 DTM: YYYYMMDDHHMMSS, plus +/-ZZZZ when it knows its offset."""
    global _last_stamp
    last = _last_stamp  # one read of an immutable pair: safe with other threads replacing it
    if last[0] is not None and last[0] == moment and moment.utcoffset() == last[0].utcoffset():
        return last[1]  # an ACK burst shares the second: formatting it once is enough
    text = _format_stamp(moment)
    _last_stamp = (moment, text)
    return text


def _format_stamp(moment: datetime) -> str:
    text = moment.strftime("%Y%m%d%H%M%S")
    offset = moment.utcoffset()
    if offset is not None:
        minutes = int(offset.total_seconds() // 60)
        sign = "-" if minutes < 0 else "+"
        text += f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"
    return text


def _version_before(version: str, major: int, minor: int) -> bool:
    parts = version.split(".")
    try:
        return (int(parts[0]), int(parts[1]) if len(parts) > 1 else 0) < (major, minor)
    except ValueError:
        return False


def _reason(error: str | BaseException | None, code: str) -> tuple[str, str | None, str | None]:
    """(text, 0357 code, location) of an error; an unexpected exception's text is never shown."""
    if error is None:
        return ("", None, None) if code in ("AA", "CA") else (ERROR_CODES["207"], None, None)
    if isinstance(error, str):
        return error, None, None
    if isinstance(error, ClinhubError):
        return error.message, getattr(error, "error_code", None), getattr(error, "location", None)
    return ERROR_CODES["207"], "207", None


def _location_parts(location: str | None) -> list[str]:
    """[segment, sequence, field] from "MSH-9" or "OBX[2]-5"; empty strings when unknown."""
    match = re.match(r"^([A-Za-z][A-Za-z0-9]{1,2})(?:\[(\d+)\])?(?:-(\d+))?", location or "")
    if match is None:
        return ["", "", ""]
    return [match[1], match[2] or "1", match[3] or ""]


def _location(location: str | None, comp: str) -> str:
    """An ERL (segment^sequence^field) for ERR-2; "" when unknown."""
    return comp.join(_location_parts(location)).rstrip(comp)


def _eld(location: str | None, coded: str, comp: str) -> str:
    """An ELD (segment^sequence^field^code) for ERR-1 of versions before 2.5."""
    return comp.join([*_location_parts(location), coded])


def ack(
    msg: Message,
    code: str,
    *,
    error: str | BaseException | None = None,
    control_id: str | None = None,
    now: datetime | None = None,
    error_code: str | None = None,
) -> Message:
    """An original-mode acknowledgement of `msg` (see `ack_text`)."""
    lines = _ack_lines(msg, code, error, control_id, now, error_code)
    return _message(lines, msg._charset)


def ack_text(
    msg: Message,
    code: str,
    *,
    error: str | BaseException | None = None,
    control_id: str | None = None,
    now: datetime | None = None,
    error_code: str | None = None,
) -> str:
    """`ack(...).encode()` without building a Message: the hot path of the MLLP listener.

    An original-mode acknowledgement of `msg`.

    MSH swaps sender and receiver, MSH-9 is ACK^<trigger>^ACK, MSH-10 a new control id (or
    `control_id`), MSH-11/12/18 are copied. MSA-1 is `code` (AA, AE, AR), MSA-2 the received MSH-10.
    For anything but AA/CA an ERR segment carries ERR-3 (table 0357: `error_code`, else the error's
    own `error_code`, else 207), ERR-4 severity E and ERR-8 the reason; versions before 2.5 get the
    reason in MSA-3 and ERR-1 instead. A ClinhubError's message is shown; any other exception's is not.
    """
    return "\r".join(_ack_lines(msg, code, error, control_id, now, error_code))


def _ack_lines(
    msg: Message,
    code: str,
    error: str | BaseException | None,
    control_id: str | None,
    now: datetime | None,
    error_code: str | None,
) -> list[str]:
    if code not in ACK_CODES:
        raise ValueError(f"acknowledgement code must be one of {sorted(ACK_CODES)}, not {code!r}")
    enc = msg.encoding
    msh = msg.segment("MSH")
    assert msh is not None  # parse() guarantees it
    c = enc.component or "^"
    trigger = msg.trigger_event
    message_type = f"ACK{c}{enc.escape_text(trigger)}{c}ACK" if trigger else "ACK"
    moment = now or local_now()
    control = enc.escape_text(control_id) if control_id else uuid.uuid4().hex[:20]
    version = msg.version
    header = [
        "MSH",
        enc.msh2,
        msh.raw(5),
        msh.raw(6),
        msh.raw(3),
        msh.raw(4),
        hl7_timestamp(moment),
        "",
        message_type,
        control,
        msh.raw(11),
        msh.raw(12),
        "",
        "",
        "",
        "",
        "",
        msh.raw(18),
    ]
    segments = [header, ["MSA", code, msh.raw(10)]]
    if code not in ("AA", "CA"):
        text, own_code, location = _reason(error, code)
        number = error_code or own_code or "207"
        described = f"{number}{c}{enc.escape_text(ERROR_CODES.get(number, ''))}{c}HL70357"
        if _version_before(version, 2, 5):
            segments[1].append(enc.escape_text(text))
            sub = enc.subcomponent or "&"
            coded = f"{number}{sub}{enc.escape_text(ERROR_CODES.get(number, ''))}{sub}HL70357"
            segments.append(["ERR", _eld(location, coded, c)])
        else:
            segments.append(
                ["ERR", "", _location(location, c), described, "E", "", "", "", enc.escape_text(text)]
            )
    lines = []
    for fields in segments:
        end = len(fields)
        while end > 1 and not fields[end - 1]:
            end -= 1
        lines.append(enc.field.join(fields[:end]))
    return lines


def _salvage(raw: str | bytes) -> dict[int, str]:
    """Whatever MSH fields can be read from a message that does not parse: number -> plain text."""
    text = raw if isinstance(raw, str) else bytes(raw).decode("latin-1")
    text = text.lstrip(_LEADING_JUNK)
    first = re.split(r"[\r\n]", text, maxsplit=1)[0]
    if not first.startswith("MSH") or len(first) < 4:
        return {}
    fs = first[3]
    if fs.isalnum() or fs.isspace():
        return {}
    fields = first.split(fs)
    chars = fields[1] if len(fields) > 1 else ""
    comp = chars[:1] if chars[:1] and not chars[:1].isalnum() else None
    rep = chars[1:2] if chars[1:2] and not chars[1:2].isalnum() else None
    out = {}
    for number in (3, 4, 5, 6, 10, 11, 12):
        value = fields[number - 1] if number - 1 < len(fields) else ""
        if rep:
            value = value.split(rep)[0]
        if comp:
            value = value.split(comp)[0]
        out[number] = value[:199]
    return out


def nak_for_unparseable(raw: str | bytes, reason: str | BaseException) -> str:
    """An AR acknowledgement (encoded text) for a message that could not be handled; never raises.

    When `raw` parses, this is `ack(parse(raw), "AR", error=reason)`; otherwise the MSH fields that
    can be salvaged (sender, receiver, control id, processing id, version) are used with the
    standard delimiters.
    """
    try:
        return ack(parse(raw), "AR", error=reason).encode()
    except Exception:  # noqa: S110 - anything unparseable falls through to salvaging
        pass
    text, own_code, location = _reason(reason, "AR")
    number = own_code or "100"
    try:
        salvaged = _salvage(raw)
    except Exception:
        salvaged = {}
    enc = _STANDARD
    field = {n: enc.escape_text(v) for n, v in salvaged.items()}
    version = salvaged.get(12, "")
    if not re.fullmatch(r"\d\.\d+(\.\d+)?", version):
        version = "2.5.1"
    processing = salvaged.get(11, "") if salvaged.get(11, "") in ("P", "D", "T") else "P"
    header = "|".join(
        [
            "MSH",
            enc.msh2,
            field.get(5, ""),
            field.get(6, ""),
            field.get(3, ""),
            field.get(4, ""),
            hl7_timestamp(datetime.now(UTC).astimezone()),
            "",
            "ACK",
            uuid.uuid4().hex[:20],
            processing,
            version,
        ]
    )
    described = f"{number}^{enc.escape_text(ERROR_CODES.get(number, ''))}^HL70357"
    msa = f"MSA|AR|{field.get(10, '')}"
    if _version_before(version, 2, 5):
        coded = described.replace("^", "&")
        return "\r".join([header, f"{msa}|{enc.escape_text(text)}", f"ERR|{_eld(location, coded, '^')}"])
    err = f"ERR||{_location(location, '^')}|{described}|E||||{enc.escape_text(text)}"
    return "\r".join([header, msa, err])


__all__ = [
    "ACK_CODES",
    "ERROR_CODES",
    "NULL",
    "Encoding",
    "Message",
    "ParseError",
    "Segment",
    "ack",
    "ack_text",
    "hl7_timestamp",
    "nak_for_unparseable",
    "parse",
    "parse_batch",
    "split_batch",
]
