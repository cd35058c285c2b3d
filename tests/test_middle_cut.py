"""Names cut in the middle: start and end kept, never wider than asked, in cells (wide characters too)."""

import pytest
from rich.cells import cell_len
from rich.text import Text

from moola_watch.middle_cut import middle_cut


@pytest.mark.parametrize(
    ("name", "width", "shown"),
    [
        ("run-20261130-201416-6361.jsonl", 40, "run-20261130-201416-6361.jsonl"),
        ("run-20261130-201416-6361.jsonl", 28, "run-20261130-…416-6361.jsonl"),
        ("run-20261130-201416-6361.jsonl", 3, "r…l"),
        ("run-20261130-201416-6361.jsonl", 2, "r…"),
        ("日本語のラン名前-1234", 10, "日本…-1234"),
        ("日本語のラン名前-1234", 9, "日本…1234"),
        ("日本語のラン名前-1234", 8, "日…-1234"),
    ],
)
def test_a_name_keeps_its_start_and_end_within_its_width(name, width, shown):
    cut = middle_cut(Text(name, style="cyan"), width)
    assert cut.plain == shown and cell_len(cut.plain) <= width
    assert all(span.style == "cyan" for span in cut.spans) or cut.style == "cyan"
