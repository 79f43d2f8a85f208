"""A record's shape, checked before any recursive decoding of untrusted bytes.

Decoding a Kafka record must be a total function: whatever the bytes, the worker gets an
answer (a command, a rejection or a dead letter), never an exception. msgspec's decoders
recurse, also while they skip unknown fields, so a hostile record with a field nested
about a thousand levels deep makes them raise RecursionError. And a map with the same
key twice decodes silently with the last value winning, so a gateway that read the first
value and the engine that reads the last could disagree about what a command says.

``msgpack_shape`` and ``json_shape`` look at the shape only: nesting depth, element
count, framing and duplicate keys. They are pure and total (no exception for any bytes),
never recurse (an explicit stack), never allocate in proportion to a length that a header
merely claims, and loop in Python only over elements: msgpack payloads are skipped by
their length; JSON string literals are cut out with str.replace and str.split (C speed),
so that only brackets are left to walk. The typed decoders run only on records whose
``Shape.problem`` is empty.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final, NoReturn

import msgspec

NESTING_MAX: Final = 8
"""Containers inside containers that a record may have, the top-level map counting as 1."""
ELEMENTS_MAX: Final = 1_024
"""Array items plus map entries that a record may have, counted over the whole record."""
PROBLEM_LENGTH_MAX: Final = 200
"""Longest ``Shape.problem``: a reason short enough for a log line or a dead letter."""
KEY_SHOWN_MAX: Final = 40
"""Characters of a key shown in ``Shape.duplicate_keys`` and in a problem."""


class Shape(msgspec.Struct, frozen=True):
    """The verdict on one record's shape.

    ``problem`` is "" when the record is within the limits, else a short reason in plain
    English (and ``duplicate_keys`` is then empty). ``duplicate_keys`` are the keys that
    occur more than once in the top-level map, each once, in the order the repeats occur.
    """

    problem: str = ""
    duplicate_keys: tuple[str, ...] = ()


def _fail(problem: str) -> Shape:
    return Shape(problem=problem[:PROBLEM_LENGTH_MAX])


_TOO_DEEP: Final = f"nested deeper than {NESTING_MAX} levels"
_TOO_MANY: Final = f"more than {ELEMENTS_MAX} elements"


# ---------------------------------------------------------------------------------------
# msgpack
# ---------------------------------------------------------------------------------------

_SCALAR, _BLOB, _RESERVED, _ARRAY, _MAP = range(5)
"""Kinds of msgpack head; the containers sort last (``kind >= _ARRAY``)."""


def _heads() -> tuple[tuple[int, int, int, int], ...]:
    """Per first byte: (kind, width of the length field, fixed size or count, extra bytes).

    A scalar's fixed size is its whole size. A blob (str, bin, ext) is the first byte, the
    length field, ``extra`` bytes (ext's type) and the payload, whose length is the length
    field or the fixed size. A container's count is the length field or the fixed count.
    """
    heads = [(_SCALAR, 0, 1, 0)] * 256  # fixints, nil, false, true
    for lead in range(0x80, 0x90):
        heads[lead] = (_MAP, 0, lead & 0x0F, 0)
    for lead in range(0x90, 0xA0):
        heads[lead] = (_ARRAY, 0, lead & 0x0F, 0)
    for lead in range(0xA0, 0xC0):
        heads[lead] = (_BLOB, 0, lead & 0x1F, 0)
    heads[0xC1] = (_RESERVED, 0, 0, 0)
    for lead, width in zip((0xC4, 0xC5, 0xC6, 0xD9, 0xDA, 0xDB), (1, 2, 4, 1, 2, 4), strict=True):
        heads[lead] = (_BLOB, width, 0, 0)  # bin8/16/32, str8/16/32
    for lead, width in zip((0xC7, 0xC8, 0xC9), (1, 2, 4), strict=True):
        heads[lead] = (_BLOB, width, 0, 1)  # ext8/16/32
    sizes = {0xCA: 5, 0xCB: 9, 0xCC: 2, 0xCD: 3, 0xCE: 5, 0xCF: 9, 0xD0: 2, 0xD1: 3, 0xD2: 5}
    sizes |= {0xD3: 9, 0xD4: 3, 0xD5: 4, 0xD6: 6, 0xD7: 10, 0xD8: 18}  # int64, fixext1-16
    for lead, size in sizes.items():
        heads[lead] = (_SCALAR, 0, size, 0)
    for lead, width in ((0xDC, 2), (0xDD, 4)):
        heads[lead] = (_ARRAY, width, 0, 0)
    for lead, width in ((0xDE, 2), (0xDF, 4)):
        heads[lead] = (_MAP, width, 0, 0)
    return tuple(heads)


_HEADS: Final = _heads()


def _head(data: bytes, pos: int) -> tuple[int, int, int] | str:
    """The value at ``pos``: (kind, where its payload or items begin, count), or a problem.

    Scalars and blobs are skipped whole (the position returned is just past them).
    """
    size = len(data)
    if pos >= size:
        return f"truncated at byte {size}"
    kind, width, fixed, extra = _HEADS[data[pos]]
    if kind == _RESERVED:
        return f"reserved byte 0x{data[pos]:02x} at byte {pos}"
    if kind == _SCALAR:
        return (kind, pos + fixed, 0) if pos + fixed <= size else f"truncated at byte {size}"
    start = pos + 1 + width
    if start > size:
        return f"truncated at byte {size}"
    count = int.from_bytes(data[pos + 1 : start], "big") if width else fixed
    if kind != _BLOB:
        return kind, start, count
    end = start + extra + count
    return (kind, end, 0) if end <= size else f"truncated at byte {size}"


class _Frame:
    """An open container: values still to read (a map's keys and values both count)."""

    __slots__ = ("is_map", "key_start", "left", "seen")

    def __init__(self, count: int, is_map: bool) -> None:
        self.left = 2 * count if is_map else count
        self.is_map = is_map
        self.key_start = 0
        self.seen: dict[bytes, bool] = {}  # a map's key identities -> reported as duplicate


def _key_identity(raw: bytes) -> bytes:
    """What makes two encoded keys the same key: a str's text, an int's value, else bytes."""
    lead = raw[0]
    if 0xA0 <= lead <= 0xBF or 0xD9 <= lead <= 0xDB:
        return b"s" + raw[{0xD9: 2, 0xDA: 3, 0xDB: 5}.get(lead, 1) :]
    if lead <= 0x7F or lead >= 0xE0 or 0xCC <= lead <= 0xD3:
        value = lead - 256 if lead >= 0xE0 else lead
        if 0xCC <= lead <= 0xD3:
            value = int.from_bytes(raw[1:], "big", signed=lead >= 0xD0)
        return b"i%d" % value
    return b"r" + raw


def _key_text(raw: bytes) -> str:
    """An encoded key as shown to people: a str's text, else the repr of the value."""
    identity = _key_identity(raw)
    if identity.startswith(b"s"):
        return identity[1:].decode("utf-8", "replace")[:KEY_SHOWN_MAX]
    try:  # the record's depth and size are within the limits so far: safe to decode
        key = msgspec.msgpack.decode(raw)
    except Exception:  # a bad timestamp ext, an unhashable key...
        key = bytes(raw)
    if isinstance(key, msgspec.msgpack.Ext):
        key = bytes(raw)  # its repr would show an address
    return repr(key)[:KEY_SHOWN_MAX]


def _repeated_key(raw: bytes, top: bool, frame: _Frame, duplicates: list[str]) -> str:
    """A map's key met again: listed once in ``duplicates`` (top-level map), else a problem."""
    if not top:
        return f"duplicate key {_key_text(raw)!r} in a nested map"
    identity = _key_identity(raw)
    if not frame.seen[identity]:
        frame.seen[identity] = True
        duplicates.append(_key_text(raw))
    return ""


def msgpack_shape(data: bytes) -> Shape:
    """The shape of one msgpack record: exactly one value, within the limits.

    A top-level value that is not a map is fine here (the typed decoder refuses it).
    Duplicate keys are compared by identity (str keys by text, int keys by value, other
    keys by their encoded bytes), whatever encoding of the length or width was used.
    """
    if not data:
        return _fail("empty record")
    stack: list[_Frame] = []
    duplicates: list[str] = []
    elements = 0
    pos = 0
    while True:
        if stack:
            frame = stack[-1]
            if not frame.is_map or frame.left % 2 == 0:  # an array item or a map entry
                elements += 1
                if elements > ELEMENTS_MAX:
                    return _fail(_TOO_MANY)
                frame.key_start = pos
        head = _head(data, pos)
        if isinstance(head, str):
            return _fail(head)
        kind, pos, count = head
        if kind >= _ARRAY:
            if len(stack) >= NESTING_MAX:
                return _fail(_TOO_DEEP)
            if count:
                stack.append(_Frame(count, kind == _MAP))
                continue
        while stack:  # the value is complete: count it off, close finished containers
            frame = stack[-1]
            frame.left -= 1
            if frame.is_map and frame.left % 2:  # the value was a key
                raw = data[frame.key_start : pos]
                identity = _key_identity(raw)
                if identity in frame.seen:
                    problem = _repeated_key(raw, len(stack) == 1, frame, duplicates)
                    if problem:
                        return _fail(problem)
                else:
                    frame.seen[identity] = False
            if frame.left:
                break
            stack.pop()
        if not stack:
            break
    if pos != len(data):
        left = len(data) - pos
        return _fail(f"{left} byte{'s' if left > 1 else ''} after the value")
    return Shape(duplicate_keys=tuple(duplicates))


# ---------------------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------------------

_STRINGS_MAX: Final = 2 * ELEMENTS_MAX
"""Most string literals a JSON record within the limits can have: a key and a value each."""
_BRACKET: Final = re.compile(r"[\[\]{}]")
_EMPTY: Final = re.compile(r"\[[ \t\n\r]*\]|\{[ \t\n\r]*\}")


def _skeleton(text: str) -> tuple[str, str]:
    """(JSON text with each string literal replaced by ``0``, "") or ("", a problem).

    Escapes are undone pairwise from the left, as a JSON parser reads them, so the quotes
    left are the ones that open and close strings: split on them, keep what is between.
    """
    unescaped = text
    if "\\" in text:  # memchr speed: most records have no escapes
        unescaped = text.replace("\\\\", "").replace('\\"', "")
    parts = unescaped.split('"', 2 * _STRINGS_MAX)
    if len(parts) > 2 * _STRINGS_MAX and '"' in parts[-1]:
        return "", _TOO_MANY
    if len(parts) % 2 == 0:  # an odd number of quotes
        return "", "unterminated string"
    return "0".join(parts[0::2]), ""


def _skeleton_problem(skeleton: str) -> str:
    """Check brackets, depth and size of JSON text whose strings are replaced by ``0``."""
    opens = skeleton.count("[") + skeleton.count("{")
    if opens - 1 > ELEMENTS_MAX:  # every container but the outermost is an element
        return _TOO_MANY
    if skeleton.count("]") + skeleton.count("}") != opens:
        return "unbalanced brackets"
    closers: list[str] = []
    for bracket in _BRACKET.findall(skeleton):  # at most 2 * (ELEMENTS_MAX + 1) of them
        if bracket in "[{":
            if len(closers) >= NESTING_MAX:
                return _TOO_DEEP
            closers.append("]" if bracket == "[" else "}")
        elif not closers or closers.pop() != bracket:
            return "unbalanced brackets"
    # Each comma separates two elements; each non-empty container adds one more.
    elements = skeleton.count(",") + opens - len(_EMPTY.findall(skeleton))
    if elements > ELEMENTS_MAX:
        return _TOO_MANY
    return ""


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _parse_duplicates(text: str) -> Shape:
    """Parse JSON known to be shallow and small; report its duplicate keys."""
    repeats: list[list[str]] = []  # per object, innermost first: its repeated keys

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        repeated: list[str] = []
        for key, _ in pairs:
            if key in seen and key not in repeated:
                repeated.append(key)
            seen.add(key)
        repeats.append(repeated)
        return {}  # only "is the top level an object" matters, not the contents

    try:
        value = json.loads(text, object_pairs_hook=pairs_hook, parse_constant=_reject_constant)
    except json.JSONDecodeError as error:
        at = len(text[: error.pos].encode())
        return _fail(f"not valid JSON at byte {at}: {error.msg}")
    except (ValueError, RecursionError) as error:
        return _fail(f"not valid JSON: {error}")
    top = repeats.pop() if isinstance(value, dict) and repeats else []
    nested = next((repeated[0] for repeated in repeats if repeated), None)
    if nested is not None:
        return _fail(f"duplicate key {nested[:KEY_SHOWN_MAX]!r} in a nested map")
    return Shape(duplicate_keys=tuple(key[:KEY_SHOWN_MAX] for key in top))


def json_shape(data: bytes) -> Shape:
    """The shape of one JSON record (RFC 8259 text in UTF-8, whitespace around allowed).

    NaN and Infinity are not JSON. Duplicate keys are compared after unescaping.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        return _fail(f"not UTF-8 at byte {error.start}")
    skeleton, problem = _skeleton(text)
    if not problem:
        problem = _skeleton_problem(skeleton)
    if problem:
        return _fail(problem)
    return _parse_duplicates(text)
