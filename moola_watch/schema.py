"""The record contract, schema 1: encode a record to one strict-JSON line, decode and validate one line.

Pure and torch-free; the trainer writes with :func:`encode_record` and every reader goes through
:func:`decode_record`, so both sides agree on one definition. Non-finite floats travel as the strings
``"nan"``, ``"inf"`` and ``"-inf"`` (strict JSON has no such tokens) and come back as floats.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

SCHEMA_VERSION = 1
#: The category of a line a newer moola wrote (its ``schema`` is above :data:`SCHEMA_VERSION`).
NEWER_SCHEMA = "newer_schema"
#: A line longer than this is rejected unparsed: it cannot be a record we wrote.
MAX_LINE_BYTES = 1 << 20
#: run_end's ``tasks`` names at most this many (a loss dict keyed by something per batch must not grow it).
MAX_TASK_NAMES = 64

RUN_START = "run_start"
GRAD_STATS = "grad_stats"
TASK_BALANCE = "task_balance"
EPOCH = "epoch"
ALERT = "alert"
RUN_END = "run_end"
LOSS_WEIGHTS = "loss_weights"  # an automatic loss balancer changed the task weights
KINDS = (RUN_START, GRAD_STATS, TASK_BALANCE, EPOCH, ALERT, RUN_END, LOSS_WEIGHTS)
#: A ``run_start`` field, ``true`` on the copy of a run's ``run_start`` that opens a rotated log's new file: the run
#: goes on (read after the old file, it is not a restart under the same id).
CONTINUED = "continued"

RUN_STATUSES = ("completed", "failed", "interrupted")
SEVERITIES = ("info", "warning", "error", "critical")

Record = dict[str, Any]

_NONFINITE_TEXT = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


# --------------------------------------------------------------------------------------------- encode


_PLAIN_SCALARS = frozenset({str, int, bool, type(None)})


def _jsonable(value: Any) -> Any:
    """Convert to JSON-native values; non-finite floats become their contract strings."""
    kind = type(value)
    if kind in _PLAIN_SCALARS:  # exact types first: the ABC checks below cost microseconds each
        return value
    if kind is float and math.isfinite(value):
        return value
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        as_float = float(value)
        if math.isfinite(as_float):
            return as_float
        return "nan" if math.isnan(as_float) else ("inf" if as_float > 0 else "-inf")
    if isinstance(value, Mapping):
        values = value.values()
        # Fast path for the big maps (per-layer norms): all plain finite floats pass through untouched.
        if set(map(type, values)) == {float} and math.isfinite(sum(values)) and set(map(type, value)) == {str}:
            return value
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    raise TypeError(f"cannot encode {type(value).__name__} in a record")


def encode_record(record: Mapping[str, Any]) -> bytes:
    """Encode one record as one UTF-8 strict-JSON line, ``\\n``-terminated, floats at full precision."""
    return orjson.dumps(_jsonable(record), option=orjson.OPT_APPEND_NEWLINE)


def encode_native(record: Mapping[str, Any]) -> bytes:
    """:func:`encode_record`'s line for a record built of JSON-native values only (``str`` keys; ``str``, ``int``,
    ``bool``, ``None``, finite ``float``, and dicts and lists of them), without the walk that converts other
    values: for a writer that knows what it built. Any other type raises ``TypeError``, but a non-finite float
    would be written as ``null``: the caller guarantees there is none."""
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)


def make_record(kind: str, run: str, time: float, **fields: Any) -> Record:
    """Build a record of ``kind`` with the common fields (``time`` in unix seconds) filled in."""
    return record_of(kind, run, time, fields)


def record_of(kind: str, run: str, time: float, fields: Mapping[str, Any]) -> Record:
    """:func:`make_record` from a mapping of the other fields (a writer that holds them in one saves a copy)."""
    if kind not in KINDS:
        raise ValueError(f"unknown record kind {kind!r}")
    return {"schema": SCHEMA_VERSION, "kind": kind, "run": run, "time": time, **fields}


# --------------------------------------------------------------------------------------------- decode


@dataclass(frozen=True)
class Rejected:
    """A line that is not a valid record: ``reason`` is one human line, ``category`` is for counting."""

    category: str  # too_long | bad_utf8 | bad_json | invalid | unknown_kind | newer_schema
    reason: str
    schema: int | None = None  # a newer_schema line's version: which moola wrote it


class _Invalid(Exception):
    """Internal: raised by field validators, turned into a :class:`Rejected` at the boundary."""


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'…' if len(text) > 40 else ''}"


def _number(value: Any) -> float:
    if type(value) is float:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value in _NONFINITE_TEXT:
        return _NONFINITE_TEXT[value]
    raise _Invalid(f"expected a number, got {_describe(value)}")


def _optional_number(value: Any) -> float | None:
    return None if value is None else _number(value)


INT64 = range(-(2**63), 2**63)  # counts (steps, epochs, layers) beyond it are no count a run makes, and no table holds


def _integer(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        if value in INT64:
            return value
        raise _Invalid(f"expected an integer in the 64-bit range, got {value}")
    raise _Invalid(f"expected an integer, got {_describe(value)}")


def _optional_integer(value: Any) -> int | None:
    return None if value is None else _integer(value)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise _Invalid(f"expected a string, got {_describe(value)}")


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise _Invalid(f"expected true or false, got {_describe(value)}")


def _optional_text(value: Any) -> str | None:
    return None if value is None else _text(value)


def _object(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    raise _Invalid(f"expected an object, got {_describe(value)}")


def _number_map(value: Any) -> dict[str, float]:
    mapping = _object(value)
    if set(map(type, mapping.values())) <= {float}:  # the common case, checked in C: all plain floats
        return mapping
    for key, item in mapping.items():
        if type(item) is not float:
            try:
                mapping[key] = _number(item)
            except _Invalid as exc:
                raise _Invalid(f"[{key!r}]: {exc}") from None
    return mapping


def _text_list(value: Any) -> list[str]:
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    raise _Invalid(f"expected a list of strings, got {_describe(value)}")


def _one_of(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value in choices:
            return value
        raise _Invalid(f"expected one of {', '.join(choices)}, got {_describe(value)}")

    return check


Validator = Callable[[Any], Any]
# (field, validator, required). Fields not listed pass through untouched; readers ignore them.
_COMMON: tuple[tuple[str, Validator, bool], ...] = (
    ("run", _text, True),
    ("time", _number, True),
    ("epoch", _optional_integer, False),
    ("step", _optional_integer, False),
)
_FIELDS: dict[str, tuple[tuple[str, Validator, bool], ...]] = {
    RUN_START: (
        ("model", _text, True),
        ("parameters", _text_list, False),
        ("parameter_count", _integer, False),
        ("config", _object, False),
        ("thresholds", _object, False),
        (CONTINUED, _boolean, False),
        ("process", _object, False),  # what tells the writer from a later process given its pid (Linux)
        ("first_step", _optional_integer, False),  # where the writing process began monitoring (resumed: late)
        ("first_epoch", _optional_integer, False),
    ),
    GRAD_STATS: (
        ("layer_norms", _number_map, True),
        ("total_norm", _number, True),
        ("mean_norm", _number, True),
        ("std_norm", _number, True),
        ("min_norm", _number, True),
        ("max_norm", _number, True),
        ("nonfinite_count", _integer, True),
        ("nonfinite_layers", _text_list, False),
        ("top_layers", _number_map, False),  # a model of more tensors than layer_norms names: the extremes
        ("layer_groups", _object, False),
        ("cost_ms", _number, False),
        ("amp", _object, False),  # {"scale": float, "overflow": bool} when a GradScaler is in use
    ),
    TASK_BALANCE: (
        ("ratio", _optional_number, False),  # pointer/type, the spec's figure; absent for other task sets
        ("norms", _number_map, True),
        ("cosines", _number_map, False),
        ("shares", _number_map, False),
        ("raw_norms", _number_map, False),
        ("cosine", _optional_number, False),
        ("losses", _number_map, False),
        ("weights", _number_map, False),
        ("scope", _text, False),
        ("left_out", _text_list, False),  # tasks with no gradient on the shared parameters (a detached head)
        ("persistence", _number_map, False),  # per task: cosine of its gradient with the previous sample's
        ("start_losses", _number_map, False),  # the first record only: the task losses of the run's first step
        ("start_step", _optional_integer, False),  # ... and that step, earlier than this record's
    ),
    EPOCH: (
        ("train_loss", _number, True),
        ("val_loss", _optional_number, False),
        ("task_losses", _number_map, False),
        ("metrics", _number_map, False),
        ("lr", _optional_number, False),
        ("duration_s", _optional_number, False),
    ),
    ALERT: (
        ("rule", _text, True),
        ("severity", _one_of(SEVERITIES), True),
        ("state", _text, True),
        ("subject", _text, True),
        ("value", _optional_number, False),
        ("message", _text, True),
        ("recommendation", _optional_text, False),
    ),
    LOSS_WEIGHTS: (
        ("weights", _number_map, True),
        ("previous", _number_map, False),
        ("method", _text, False),
        ("reason", _optional_text, False),
    ),
    RUN_END: (
        ("status", _one_of(RUN_STATUSES), True),
        ("summary", _object, False),
        ("error", _optional_text, False),
        ("tasks", _text_list, False),  # the tasks the writer was given losses of (a balance never measured: said)
    ),
}


# What each validator accepts as it stands (no conversion needed): the fast path checks only types.
_PLAIN_TYPES: dict[Validator, frozenset[type]] = {
    _number: frozenset({float, int}),
    _optional_number: frozenset({float, int, type(None)}),
    _integer: frozenset({int}),
    _optional_integer: frozenset({int, type(None)}),
    _text: frozenset({str}),
    _optional_text: frozenset({str, type(None)}),
    _object: frozenset({dict}),
    _boolean: frozenset({bool}),
}
_COUNTS = (_integer, _optional_integer)  # their ints must also lie in INT64
_FAST: dict[str, list[tuple[str, Validator, frozenset[type] | None, bool, bool]]] = {
    kind: [
        (name, check, _PLAIN_TYPES.get(check), required, check in _COUNTS)
        for name, check, required in (*_COMMON, *fields)
    ]
    for kind, fields in _FIELDS.items()
}


def _plain(record: dict[str, Any], kind: str) -> bool:
    """True if every field is valid as it stands (the common case): a type check per scalar field, and the
    container validators, which convert in place and return their argument. False sends the record to the
    field-by-field pass that names the problem."""
    for name, check, types, required, count in _FAST[kind]:
        value = record.get(name, _MISSING)
        if value is _MISSING:
            if required:
                return False
        elif types is None:
            try:
                check(value)
            except _Invalid:
                return False
        elif type(value) not in types or (count and type(value) is int and value not in INT64):
            return False
    return True


_MISSING = object()


def _validate(record: dict[str, Any], kind: str) -> None:
    if _plain(record, kind):
        return
    for fields in (_COMMON, _FIELDS[kind]):
        for name, check, required in fields:
            if name in record:
                try:
                    record[name] = check(record[name])
                except _Invalid as exc:
                    raise _Invalid(f"{kind}.{name}: {exc}") from None
            elif required:
                raise _Invalid(f"{kind} record has no {name!r}")


def _clean_number_map(value: Any) -> tuple[Any, list[str]]:
    """A number map without its None entries (a metric not measured this time), and their keys."""
    if not isinstance(value, dict) or None not in value.values():
        return value, []
    missing = [str(key) for key, item in value.items() if item is None]
    return {key: item for key, item in value.items() if item is not None}, missing


def clean_fields(kind: str, fields: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The ``fields`` of a record of ``kind`` that this schema accepts, and one problem per field dropped.

    For writers: an optional field that readers would reject is left out (and a number map loses only its
    None entries), so one bad value never costs the record; a missing or bad required field is a problem
    the caller must not write past. Fields the schema does not list pass through untouched.
    """
    if kind not in _FIELDS:
        raise ValueError(f"unknown record kind {kind!r}")
    out = dict(fields)
    problems: list[str] = []
    for name, check, required in (*_COMMON, *_FIELDS[kind]):
        if name not in out:
            if required and name not in ("run", "time"):
                problems.append(f"{kind}.{name} is missing")
            continue
        if check is _number_map:
            out[name], missing = _clean_number_map(out[name])
            problems.extend(f"{kind}.{name}[{key!r}] is None (left out)" for key in missing)
        try:
            out[name] = check(out[name])
        except _Invalid as exc:
            if required:
                problems.append(f"{kind}.{name}: {exc}")
            else:
                del out[name]
                problems.append(f"{kind}.{name}: {exc} (left out)")
    return out, problems


def _with_bare_nonfinite(line: bytes | str) -> Any:
    """The line as Python's ``json`` reads it, if it is JSON but for bare ``NaN``/``Infinity`` tokens (what
    ``json.dumps`` writes by default: another writer's non-finite gradient, the very thing to catch), else None."""
    text = line.decode("utf-8") if isinstance(line, bytes | bytearray) else line
    if "NaN" not in text and "Infinity" not in text:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def decode_record(line: bytes | str) -> Record | Rejected:
    """Decode and validate one line (with or without its newline).

    Returns the record, with non-finite strings in numeric fields turned back into floats, or a
    :class:`Rejected` naming the problem. Never raises.
    """
    if len(line) > MAX_LINE_BYTES:
        return Rejected("too_long", f"line of {len(line)} bytes exceeds the {MAX_LINE_BYTES}-byte limit")
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        if line[:3] == b"\xef\xbb\xbf" or line[:1] == "\ufeff":  # a file's byte order mark, files joined by cat
            return decode_record(line[3:] if isinstance(line, bytes | bytearray) else line[1:])
        if isinstance(line, bytes | bytearray):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as utf8_error:
                return Rejected("bad_utf8", f"invalid UTF-8 at byte {utf8_error.start}")
        record = _with_bare_nonfinite(line)
        if record is None:
            return Rejected("bad_json", f"not JSON: {exc}")
    if not isinstance(record, dict):
        return Rejected("bad_json", f"not a JSON object but {type(record).__name__}")
    schema = record.get("schema")
    if not isinstance(schema, int) or isinstance(schema, bool) or schema < 1:
        return Rejected("invalid", f"'schema' must be a positive integer, got {_describe(schema)}")
    if schema > SCHEMA_VERSION:
        return Rejected(NEWER_SCHEMA, f"schema {schema} is newer than this reader ({SCHEMA_VERSION})", schema)
    kind = record.get("kind")
    if not isinstance(kind, str) or kind not in _FIELDS:
        return Rejected("unknown_kind", f"unknown record kind {_describe(kind)}")
    try:
        _validate(record, kind)
    except _Invalid as exc:
        return Rejected("invalid", str(exc))
    return record
