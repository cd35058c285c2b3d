import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moola_watch import schema
from moola_watch.schema import Rejected, decode_record, encode_record, make_record


def grad_stats(**overrides):
    body = dict(
        layer_norms={"a.weight": 0.5, "b.bias": math.nan, "c": math.inf},
        total_norm=math.nan,
        mean_norm=0.5,
        std_norm=0.0,
        min_norm=0.5,
        max_norm=0.5,
        nonfinite_count=2,
        nonfinite_layers=["b.bias", "c"],
        epoch=3,
        step=40,
    )
    body.update(overrides)
    return make_record(schema.GRAD_STATS, "r1", 1700000000.25, **body)


def test_encode_is_one_strict_line_and_round_trips_nonfinite():
    line = encode_record(grad_stats())
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    raw = json.loads(line, parse_constant=lambda t: (_ for _ in ()).throw(ValueError(t)))
    assert raw["layer_norms"]["b.bias"] == "nan" and raw["layer_norms"]["c"] == "inf"
    record = decode_record(line)
    assert not isinstance(record, Rejected)
    assert math.isnan(record["layer_norms"]["b.bias"]) and record["layer_norms"]["c"] == math.inf
    assert math.isnan(record["total_norm"]) and record["layer_norms"]["a.weight"] == 0.5


def test_floats_are_not_rounded():
    value = 0.1 + 0.2  # 0.30000000000000004
    record = decode_record(encode_record(grad_stats(mean_norm=value, total_norm=1e-300)))
    assert record["mean_norm"] == value and record["total_norm"] == 1e-300


def test_negative_infinity_and_numpy_scalars_encode():
    import numpy as np

    record = decode_record(encode_record(grad_stats(min_norm=np.float64(-math.inf), nonfinite_count=np.int64(2))))
    assert record["min_norm"] == -math.inf and record["nonfinite_count"] == 2


def rejected(line) -> Rejected:
    result = decode_record(line)
    assert isinstance(result, Rejected), result
    return result


def test_rejections_name_the_problem():
    assert rejected(b"not json").category == "bad_json"
    assert rejected(b"\xff\xfe{}").category == "bad_utf8"
    assert rejected(b"[1, 2]").category == "bad_json"
    assert rejected(b'{"kind": "epoch"}').category == "invalid"
    newer = rejected(b'{"schema": 2, "kind": "epoch", "run": "r", "time": 1}')
    assert newer.category == "newer_schema" and "schema 2" in newer.reason
    unknown = rejected(b'{"schema": 1, "kind": "weather", "run": "r", "time": 1}')
    assert unknown.category == "unknown_kind" and "weather" in unknown.reason
    stringly = rejected(encode_record(grad_stats(total_norm="0.5")))
    assert stringly.category == "invalid" and "grad_stats.total_norm" in stringly.reason
    nested = rejected(encode_record(grad_stats(layer_norms=[0.5])))
    assert "layer_norms" in nested.reason
    assert "no 'norms'" in rejected(encode_record(make_record("task_balance", "r", 1.0, ratio=1.0))).reason
    assert rejected(b'{"schema": true, "kind": "epoch"}').category == "invalid"
    assert rejected(b'{"schema": 1, "kind": ["x"], "run": "r", "time": 1}').category == "unknown_kind"
    assert rejected(b'{"schema": 1, "kind": "epoch", "run": "r", "time": 1, "train_loss": NaNa}').category == "bad_json"
    # Bare NaN/Infinity (Python's json.dumps): another writer's non-finite value is read, not dropped.
    bare = decode_record(b'{"schema": 1, "kind": "epoch", "run": "r", "time": 1, "train_loss": -Infinity}')
    assert not isinstance(bare, Rejected) and bare["train_loss"] == -math.inf


def test_too_long_line_is_rejected_unparsed():
    assert rejected(b"x" * (schema.MAX_LINE_BYTES + 1)).category == "too_long"


def test_unknown_fields_pass_through():
    record = decode_record(encode_record(make_record("epoch", "r", 1.0, train_loss=1.0, future_field={"x": 1})))
    assert record["future_field"] == {"x": 1}


@given(st.binary(max_size=300))
def test_decode_never_raises_on_bytes(data):
    decode_record(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(schema.KINDS),
    st.dictionaries(
        st.sampled_from(["layer_norms", "ratio", "norms", "train_loss", "status", "rule", "severity", "time", "epoch"]),
        json_values,
    ),
)
def test_decode_never_raises_on_arbitrary_records(kind, fields):
    payload = {"schema": 1, "kind": kind, "run": "r", "time": 1.0, **fields}
    try:
        line = json.dumps(payload).encode()
    except ValueError:
        return
    decode_record(line)


def test_a_count_past_64_bits_is_a_bad_line_not_a_crash_of_analyze(tmp_path):
    """Found by an outside review: a step of 2**63 passed the contract and then broke analyze's Int64 tables."""
    from helpers import run_cli
    from logs import LogBuilder

    log = LogBuilder().start().grad(1, 0.3, 0.4)
    log.records[-1]["step"] = 2**63
    path = log.write(tmp_path / "log.jsonl")
    rejected = decode_record(path.read_bytes().splitlines()[-1])
    assert isinstance(rejected, Rejected) and "64-bit" in rejected.reason
    assert not isinstance(decode_record(encode_record({**log.records[-1], "step": 2**63 - 1})), Rejected)
    result = run_cli("moola_watch.cli", "analyze", str(path))
    assert result.returncode == 0 and "Traceback" not in result.stderr
