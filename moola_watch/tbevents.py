"""TensorBoard event files written by hand: no TensorFlow, torch or protobuf needed.

An event file is a sequence of TFRecords (length, masked CRC32C of the length, the bytes, their masked CRC32C),
each holding one serialized ``tensorboard.Event`` protobuf. Only the few fields TensorBoard reads for scalars
and text are encoded, with the protobuf wire format written out below (field numbers from TensorBoard's
``event.proto``, ``summary.proto``, ``tensor.proto``). Pure functions: bytes in, bytes out.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

FILE_VERSION = "brain.Event:2"
DT_STRING = 7  # tensorflow.DataType
TEXT_PLUGIN = "text"

_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5
_CRC_MASK_DELTA = 0xA282EAD8


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1  # Castagnoli polynomial, reflected
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``, as TFRecord framing uses it."""
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC: rotated and offset so that CRCs of CRCs stay well distributed."""
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _CRC_MASK_DELTA) & 0xFFFFFFFF


def tfrecord(data: bytes) -> bytes:
    """One TFRecord: little-endian uint64 length, its masked CRC, the data, the data's masked CRC."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc(length)) + data + struct.pack("<I", masked_crc(data))


# ----------------------------------------------------------------------------------- protobuf wire format


def _varint(value: int) -> bytes:
    value &= 0xFFFFFFFFFFFFFFFF  # negative int64 as two's complement, ten bytes
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _message(field: int, payload: bytes) -> bytes:
    """A length-delimited field: a string, bytes or an embedded message."""
    return _key(field, _LENGTH) + _varint(len(payload)) + payload


def _text(field: int, value: str) -> bytes:
    return _message(field, value.encode("utf-8"))


# ----------------------------------------------------------------------------------- TensorBoard messages


def scalar_value(tag: str, value: float) -> bytes:
    """A ``Summary.Value`` with ``simple_value`` (float32, as TensorBoard stores scalars)."""
    return _text(1, tag) + _key(2, _FIXED32) + struct.pack("<f", value)


def text_value(tag: str, text: str) -> bytes:
    """A ``Summary.Value`` the text plugin shows: a scalar string tensor tagged with the plugin's name."""
    metadata = _message(1, _text(1, TEXT_PLUGIN))  # SummaryMetadata.plugin_data.plugin_name
    tensor = _key(1, _VARINT) + _varint(DT_STRING) + _message(2, b"") + _message(8, text.encode("utf-8"))
    return _text(1, tag) + _message(9, metadata) + _message(8, tensor)


def event(wall_time: float, step: int, values: Iterable[bytes] = (), file_version: str | None = None) -> bytes:
    """A serialized ``Event``: its time and step, and a ``Summary`` of ``values`` (or the file's version)."""
    out = _key(1, _FIXED64) + struct.pack("<d", wall_time) + _key(2, _VARINT) + _varint(step)
    if file_version is not None:
        out += _text(3, file_version)
    summary = b"".join(_message(1, value) for value in values)
    if summary:
        out += _message(5, summary)
    return out


def event_file(first_wall_time: float, events: Iterable[bytes]) -> bytes:
    """A whole event file: the version header, then ``events``, each framed as a TFRecord."""
    header = tfrecord(event(first_wall_time, 0, file_version=FILE_VERSION))
    return header + b"".join(tfrecord(e) for e in events)
