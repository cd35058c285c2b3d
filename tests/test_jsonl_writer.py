import errno
import io
import os

from moola.utils.monitoring.jsonl_writer import JsonlRecordWriter
from moola_watch.schema import Rejected, decode_record, make_record


def record(i: int) -> dict:
    return make_record("epoch", "r", float(i), epoch=i, train_loss=1.0 / (i + 1))


def test_appending_after_a_cut_line_starts_a_fresh_line(tmp_path):
    log = tmp_path / "run.jsonl"
    log.write_bytes(b'{"schema":1,"kind":"epoch","run":"old","time":1,"train_loss":1.0}\n{"schema":1,"kind":"ep')
    warnings: list[str] = []
    writer = JsonlRecordWriter(log, warn=warnings.append)
    for i in range(3):
        assert writer.write(record(i))
    writer.close()
    decoded = [decode_record(line) for line in log.read_bytes().splitlines()]
    assert [isinstance(d, Rejected) for d in decoded] == [False, True, False, False, False]
    assert warnings == []


def test_second_writer_on_the_same_file_is_refused(tmp_path):
    log = tmp_path / "run.jsonl"
    first = JsonlRecordWriter(log, warn=lambda _m: None)
    warnings: list[str] = []
    second = JsonlRecordWriter(log, warn=warnings.append)
    assert not second.write(record(1))
    assert len(warnings) == 1 and "another process is writing" in warnings[0]
    assert first.write(record(2))
    first.close()


class FullDisk(io.RawIOBase):
    def writable(self):
        return True

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_and_closed_stream_warn_once():
    for stream in (FullDisk(), io.BytesIO()):
        if isinstance(stream, io.BytesIO):
            stream.close()
        warnings: list[str] = []
        writer = JsonlRecordWriter(stream, warn=warnings.append)
        assert not writer.write(record(1))
        assert not writer.write(record(2))
        assert len(warnings) == 1 and "training continues" in warnings[0]


def test_path_under_a_file_warns_once(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    warnings: list[str] = []
    writer = JsonlRecordWriter(blocker / "run.jsonl", warn=warnings.append)
    assert not writer.write(record(1)) and not writer.write(record(2))
    assert len(warnings) == 1 and str(blocker / "run.jsonl") in warnings[0]


def test_a_record_no_reader_would_accept_is_not_written_and_the_log_stays_good(tmp_path):
    log = tmp_path / "run.jsonl"
    warnings: list[str] = []
    writer = JsonlRecordWriter(log, warn=warnings.append)
    assert writer.write(record(0))
    huge = make_record("grad_stats", "r", 1.0, layer_norms={f"layer{i:07d}.weight": 1.0 for i in range(60_000)})
    assert not writer.write(huge)
    assert writer.write(record(1))  # the writer goes on
    writer.close()
    assert len(warnings) == 1 and "exceeds the readers'" in warnings[0]
    assert not any(isinstance(decode_record(line), Rejected) for line in log.read_bytes().splitlines())


def test_clean_fields_drops_what_readers_reject_and_keeps_the_rest():
    from moola_watch.schema import clean_fields

    fields, problems = clean_fields(
        "epoch", {"epoch": 1, "train_loss": 0.5, "lr": [1e-3, 1e-4], "metrics": {"f1": None, "acc": 0.9}}
    )
    assert fields == {"epoch": 1, "train_loss": 0.5, "metrics": {"acc": 0.9}}
    assert len(problems) == 2 and all("(left out)" in p for p in problems)
    _fields, problems = clean_fields("epoch", {"train_loss": "low"})
    assert problems == ["epoch.train_loss: expected a number, got str 'low'"]
