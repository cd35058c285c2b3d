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
    assert len(warnings) == 1 and "an earlier run of this process that was not ended still holds it" in warnings[0]
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


def epochs_in(path) -> list[int]:
    return [decode_record(line).get("epoch") for line in path.read_bytes().splitlines()]


def grad_stats(i: int) -> dict:
    return make_record(
        "grad_stats", "r", float(i), epoch=i, step=i, total_norm=1.0, mean_norm=1.0, std_norm=0.0, min_norm=1.0,
        max_norm=1.0, nonfinite_count=0, layer_norms={"w": 1.0},
    )  # fmt: skip


def test_grad_stats_lines_check_the_path_every_few_lines_and_any_other_record_at_once(tmp_path, monkeypatch):
    """A deletion is noticed by the IDENTITY_CHECK_LINES-th grad_stats line after it at the latest (or within
    IDENTITY_CHECK_S), and by any other record at once: the run_end always lands in the file at the path."""
    from moola.utils.monitoring import jsonl_writer
    from moola.utils.monitoring.jsonl_writer import IDENTITY_CHECK_LINES

    monkeypatch.setattr(jsonl_writer, "IDENTITY_CHECK_S", 3600.0)  # the line count alone, however slow the machine
    log = tmp_path / "run.jsonl"
    warnings: list[str] = []
    writer = JsonlRecordWriter(log, warn=warnings.append)
    writer.write(record(0))
    log.unlink()
    for i in range(1, IDENTITY_CHECK_LINES + 2):
        writer.write(grad_stats(i))
    assert epochs_in(log) == [IDENTITY_CHECK_LINES, IDENTITY_CHECK_LINES + 1]  # the check made a new file
    log.unlink()
    writer.write(grad_stats(100))  # into the deleted file: not checked yet
    writer.write(record(101))  # an epoch record checks first
    writer.close()
    assert epochs_in(log) == [101]
    assert len(warnings) == 2 and all("was deleted or replaced; writing a new file there" in w for w in warnings)


def test_a_log_rotated_between_checks_keeps_its_lines_and_the_writer_follows_the_name(tmp_path, monkeypatch):
    from moola.utils.monitoring import jsonl_writer

    monkeypatch.setattr(jsonl_writer, "IDENTITY_CHECK_S", 3600.0)
    log, rotated = tmp_path / "run.jsonl", tmp_path / "run.jsonl.1"
    writer = JsonlRecordWriter(log, warn=lambda _m: None)
    for i in range(3):
        writer.write(grad_stats(i))
    log.rename(rotated)
    writer.write(grad_stats(3))  # still into the rotated file, which keeps it
    writer.write(record(4))
    writer.close()
    assert epochs_in(rotated) == [0, 1, 2, 3]
    assert epochs_in(log) == [4]
