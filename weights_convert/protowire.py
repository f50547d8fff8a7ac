"""The protocol buffers wire format, just what Caffe's files need: no protobuf library, no generated code.

A message is a run of fields, each a varint key (field number << 3 | wire type) and a value: a varint (0),
8 bytes (1), a length-prefixed byte string (2: strings, nested messages, packed arrays) or 4 bytes (5).
Reading never copies a payload (memoryview slices) and checks every length against the buffer, so a
truncated or corrupt file ends in a ValueError, never in a crash, a hang or a huge allocation.
"""
from __future__ import annotations

import struct

import numpy as np

VARINT, I64, LEN, I32 = 0, 1, 2, 5
_MASK64 = (1 << 64) - 1


def _read_varint(buf: memoryview, pos: int, what: str) -> tuple[int, int]:
    result = shift = 0
    end = min(len(buf), pos + 10)
    while pos < end:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
    raise ValueError(f"{what}: truncated or malformed varint")


ARRAY = -1  # pseudo wire type of a run of unpacked floats read at once (see `runs`)


def parse(buf, what: str, runs: dict[int, str] | None = None) -> list[tuple[int, int, object]]:
    """The fields of one message, in file order: (number, wire type, value). value is an int for varints
    and a memoryview for the others (8 or 4 raw bytes, or the length-prefixed payload).

    runs: {field number: dtype} of repeated float fields that may be written unpacked (one key per value,
    as proto2 allows); such a run comes back as one (number, ARRAY, numpy array) field."""
    buf = memoryview(buf).cast("B")
    fields, pos, n = [], 0, len(buf)
    while pos < n:
        key_pos = pos
        key, pos = _read_varint(buf, pos, what)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError(f"{what}: field number 0 at byte {pos}: not a protobuf message")
        if runs and number in runs and wire in (I32, I64):
            if wire != (I32 if np.dtype(runs[number]).itemsize == 4 else I64) or key >= 0x80:
                raise ValueError(f"{what}: field {number} has wire type {wire}, expected {runs[number]} values")
            values, pos = unpacked_floats(buf, key_pos, key, runs[number], what)
            fields.append((number, ARRAY, values))
            continue
        if wire == VARINT:
            value, pos = _read_varint(buf, pos, what)
        elif wire in (I64, I32):
            size = 8 if wire == I64 else 4
            if pos + size > n:
                raise ValueError(f"{what}: truncated: field {number} needs {size} bytes at byte {pos} of {n}")
            value, pos = buf[pos:pos + size], pos + size
        elif wire == LEN:
            size, pos = _read_varint(buf, pos, what)
            if pos + size > n:
                raise ValueError(f"{what}: truncated: field {number} says {size} bytes at byte {pos}, "
                                 f"{n - pos} left")
            value, pos = buf[pos:pos + size], pos + size
        else:  # 3/4 are the deprecated groups, 6/7 do not exist: Caffe writes neither
            raise ValueError(f"{what}: unsupported wire type {wire} for field {number} at byte {pos}")
        fields.append((number, wire, value))
    return fields


def first_key(buf) -> tuple[int, int]:
    """(field number, wire type) of a message's first field; a ValueError where it has none."""
    key, _ = _read_varint(memoryview(buf).cast("B"), 0, "message")
    if key >> 3 == 0:
        raise ValueError("message: field number 0")
    return key >> 3, key & 7


def signed(value: int) -> int:
    """A varint read as int64 (proto's int32/int64 store negatives as 10-byte two's complement)."""
    value &= _MASK64
    return value - (1 << 64) if value >> 63 else value


def as_float(wire: int, value, what: str) -> float:
    if wire == I32:
        return struct.unpack("<f", value)[0]
    if wire == I64:
        return struct.unpack("<d", value)[0]
    raise ValueError(f"{what}: expected a float, got wire type {wire}")


def as_ints(wire: int, value, what: str) -> list[int]:
    """A repeated integer field's values from one occurrence: a single varint or a packed run."""
    if wire == VARINT:
        return [value]
    if wire == LEN:
        out, pos = [], 0
        while pos < len(value):
            v, pos = _read_varint(value, pos, what)
            out.append(v)
        return out
    raise ValueError(f"{what}: expected integers, got wire type {wire}")


def as_str(wire: int, value, what: str) -> str:
    if wire != LEN:
        raise ValueError(f"{what}: expected a string, got wire type {wire}")
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{what}: string is not UTF-8") from None


def packed_array(value, dtype: str, what: str) -> np.ndarray:
    """A packed repeated float/double payload as a read-only numpy view (no copy)."""
    itemsize = np.dtype(dtype).itemsize
    if len(value) % itemsize:
        raise ValueError(f"{what}: packed array of {len(value)} bytes is not a whole number of {dtype} values")
    return np.frombuffer(value, dtype=dtype)


def unpacked_floats(buf: memoryview, start: int, tag: int, dtype: str, what: str) -> tuple[np.ndarray, int]:
    """Proto2 readers must also accept repeated floats written one key per value (tag, 4 or 8 bytes),
    which old writers did. Read such a run vectorised: returns the values and the index after the run."""
    size = 1 + np.dtype(dtype).itemsize
    count = (len(buf) - start) // size
    if count == 0:
        raise ValueError(f"{what}: truncated: {len(buf) - start} bytes left for a {dtype} value")
    rows = np.frombuffer(buf[start:start + count * size], dtype=np.uint8).reshape(count, size)
    bad = np.flatnonzero(rows[:, 0] != tag)
    count = int(bad[0]) if bad.size else count
    return rows[:count, 1:].copy().view(dtype).reshape(-1), start + count * size


# --- writing --------------------------------------------------------------------------------------------
# A message is built as a list of chunks (bytes, or the buffers of big arrays) so that a 240 MB blob is
# never concatenated: `size` adds the chunk lengths, and the file is written chunk by chunk.

Chunks = list


def varint(n: int) -> bytes:
    n &= _MASK64
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def size(chunks: Chunks) -> int:
    return sum(memoryview(c).nbytes for c in chunks)


def key(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def field_varint(number: int, n: int) -> Chunks:
    return [key(number, VARINT) + varint(int(n))]


def field_float(number: int, x: float) -> Chunks:
    return [key(number, I32) + struct.pack("<f", x)]


def field_str(number: int, s: str) -> Chunks:
    data = s.encode("utf-8")
    return [key(number, LEN) + varint(len(data)) + data]


def field_message(number: int, chunks: Chunks) -> Chunks:
    return [key(number, LEN) + varint(size(chunks)), *chunks]


def field_packed_varints(number: int, values) -> Chunks:
    payload = b"".join(varint(int(v)) for v in values)
    return [key(number, LEN) + varint(len(payload)) + payload]


def field_packed_array(number: int, array: np.ndarray, dtype: str = "<f4") -> Chunks:
    data = np.ascontiguousarray(array, dtype=dtype).reshape(-1)
    return [key(number, LEN) + varint(data.nbytes), memoryview(data).cast("B")]
