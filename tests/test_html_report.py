"""The HTML/PNG report: its pieces (thinning, grouping, escaping) and the real CLI end to end (no browser here;
tests/test_html_report_browser.py opens the page in Chromium)."""

from __future__ import annotations

import base64
import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import REPO, run_cli, run_id
from report_logs import distinct_bytes, hostile_log, write_log

from moola.utils.monitoring import GradientMonitor
from moola_watch import analyze
from moola_watch.html_report import build_page
from moola_watch.html_report.heatmap import choose_rows, module_groups
from moola_watch.html_report.page import render
from moola_watch.html_report.sampling import MAX_POINTS, keep_extremes
from moola_watch.html_report.text import escaped

SAMPLES = REPO / "sample_logs"


def figure_data(html: str, slug: str) -> dict:
    """The JSON of one figure as the page embeds it."""
    match = re.search(rf'<script type="application/json" id="data-plot-{slug}">(.*?)</script>', html, re.S)
    assert match, f"no figure {slug}"
    return json.loads(match.group(1))


def values(array: list | dict) -> list[float]:
    """A figure array as plotly writes it: a list, or a typed array (``{"dtype", "bdata"}`` base64)."""
    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=np.dtype(array["dtype"])).tolist()
    return list(array)


def test_thinning_keeps_spikes_and_nonfinite_values() -> None:
    values = np.full(100_000, 0.3)
    values[31_337] = 900.0
    values[77_000] = 1e-9
    values[50_001] = np.nan
    keep = keep_extremes(values)
    assert len(keep) <= MAX_POINTS * 1.3
    assert {31_337, 77_000, 50_001} <= set(keep.tolist())
    assert keep.tolist() == sorted(keep.tolist())
    assert keep_extremes(values[:10]).tolist() == list(range(10))


def test_thousands_of_layers_become_module_groups_with_the_worst_layers_first() -> None:
    names = [
        f"model.layers.{i}.{part}.weight" for i in range(500) for part in ("attn.q", "attn.k", "mlp.up", "mlp.down")
    ]
    frame = pd.DataFrame(
        {"layer": names * 2, "norm": [0.3] * len(names) * 2, "step": [1] * len(names) + [2] * len(names)}
    )
    frame.loc[len(names) + 1234, "norm"] = 1e4  # one layer explodes at step 2
    frame.loc[17, "norm"] = float("nan")
    rows = choose_rows(frame, center=np.log10(0.22))
    assert len(rows.labels) <= 60
    assert rows.worst and rows.members[0] == [names[17]] and rows.members[1] == [names[1234]]
    grouped = rows.members[rows.worst :]
    assert [n for m in grouped for n in m] == names  # every layer once, in model order
    assert len(grouped) >= 40  # 500 blocks cut into consecutive runs, not one 'model.layers.*' row
    assert rows.labels[rows.worst] == "model.layers.0 … 9 (40 layers)"
    assert module_groups(["a", "b", "c"], 2) == [("a … b", ["a", "b"]), ("c", ["c"])]
    assert module_groups(["enc.w", "enc.b", "head.w"], 2) == [("enc.*", ["enc.w", "enc.b"]), ("head.w", ["head.w"])]


def attention_block() -> torch.nn.ModuleDict:
    """A block named as a BERT encoder's is: ``attention.self.query`` (key, value) in ``bert.encoder.layer.N``."""
    heads = torch.nn.ModuleDict({part: torch.nn.Linear(4, 4) for part in ("query", "key", "value")})
    return torch.nn.ModuleDict({"attention": torch.nn.ModuleDict({"self": heads})})


class Encoder(torch.nn.Module):
    """Two blocks whose tensors' names (``bert.encoder.layer.1.attention.self.query.weight``) are over 40
    characters and differ only in the block's number, in their middle."""

    def __init__(self) -> None:
        super().__init__()
        layers = torch.nn.ModuleList([attention_block(), attention_block()])
        self.bert = torch.nn.ModuleDict({"encoder": torch.nn.ModuleDict({"layer": layers})})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.bert["encoder"]["layer"]:
            x = sum(torch.tanh(linear(x)) for linear in block["attention"]["self"].values())
        return x


def test_a_heatmap_row_for_every_layer_whose_long_names_differ_only_in_their_middle(tmp_path: Path) -> None:
    """Labels cut in the middle lost the block's number, and plotly drew both blocks' rows of one label as one: an
    outside review's BERT heatmap said 43 layers and drew 33."""
    model, log = Encoder(), tmp_path / "bert.jsonl"
    with GradientMonitor(every_n_steps=1, log_path=log, echo=lambda _line: None) as monitor:
        for _step in range(3):
            model.zero_grad()
            model(torch.randn(8, 4)).pow(2).mean().backward()
            monitor.on_before_optimizer_step(model)
    out = tmp_path / "report.html"
    assert run_cli("moola_watch.cli", "report", str(log), "-o", str(out)).returncode == 0
    html = out.read_text()
    slug = re.search(r'id="data-plot-(layers[^"]*)"', html)[1]
    labels = figure_data(html, slug)["data"][0]["y"]
    assert len(labels) == len(set(labels)) == 12, labels
    assert "b.e.layer.1.attention.self.query.weight" in labels


class Stack(torch.nn.Module):
    """80 blocks of two small layers and a head: 322 tensors, each block's layer a module group (``blocks.3.a``)
    once a record may name only 200."""

    def __init__(self) -> None:
        super().__init__()
        layer = torch.nn.Linear
        self.blocks = torch.nn.ModuleList(torch.nn.ModuleDict({"a": layer(4, 4), "b": layer(4, 4)}) for _ in range(80))
        self.out = layer(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(sum(torch.tanh(block["b"](torch.tanh(block["a"](x)))) for block in self.blocks))


def big_model_log(path: Path, frozen_at: tuple[int, ...] = ()) -> tuple[Path, list[dict[str, float]]]:
    """A log of :class:`Stack` whose records hold module groups (``max_layer_norms=200``), one dead tensor and one
    exploding; and each step's true norm of every tensor with a gradient, taken from the gradients themselves.
    At the steps ``frozen_at`` (0-based) the first 70 blocks are frozen: the record names its 42 tensors one by
    one."""
    torch.manual_seed(0)
    model = Stack()
    model.blocks[30]["a"].weight.register_hook(lambda grad: grad * 0)
    model.blocks[50]["b"].weight.register_hook(lambda grad: grad * 1e4)
    truth = []
    with GradientMonitor(every_n_steps=1, log_path=path, max_layer_norms=200) as monitor:
        for step in range(6):
            model.zero_grad()
            model.blocks[:70].requires_grad_(step not in frozen_at)
            model(torch.randn(16, 4)).pow(2).mean().backward()
            truth.append(
                {name: torch.linalg.vector_norm(p.grad.double()).item()
                 for name, p in model.named_parameters() if p.grad is not None}
            )  # fmt: skip
            monitor.on_before_optimizer_step(model)
    return path, truth


def tensors_of(label: str, names: list[str]) -> tuple[list[str], int]:
    """The tensors a heatmap row's label covers (``blocks.0 … 1``, ``out.*``, a module or tensor name), and the
    count its label says."""
    base, _, count = label.partition(" (")
    if match := re.fullmatch(r"(.+)\.(\d+) … (\d+)", base):
        prefixes = [f"{match[1]}.{i}" for i in range(int(match[2]), int(match[3]) + 1)]
    else:
        prefixes = [base.removesuffix(".*")]
    covered = [name for name in names if any(name == p or name.startswith(f"{p}.") for p in prefixes)]
    return covered, int(count.split()[0]) if count else 1


def test_a_big_models_heatmap_draws_each_module_group_from_its_norm_at_every_step(tmp_path: Path) -> None:
    """A big model's records hold module-group norms and name only their extreme tensors: each group row is the
    root mean square of its tensors' true norms at every step, labelled with how many tensors it holds (it was
    drawn from the few extremes named, blank or swinging from step to step), with the worst tensors above."""
    log, truth = big_model_log(tmp_path / "big.jsonl")
    grads = [json.loads(line) for line in log.read_text().splitlines() if '"grad_stats"' in line]
    assert all(len(g["layer_norms"]) == 162 and g["layer_groups"]["tensors"] == 322 for g in grads)  # grouped
    _page, figures = build_page([analyze.scan_log(log, frames=True)])
    heatmap = next(f for f in figures if f.slug.startswith("layers"))
    trace = heatmap.figure.data[0]
    z = np.asarray(trace.z, dtype=float)
    labels = list(trace.y)
    worst = sum(label.startswith("worst: ") for label in labels)
    assert labels[:2] == ["worst: blocks.30.a.weight", "worst: blocks.50.b.weight"]  # dead, then exploding
    assert z.shape == (len(labels), 6) and list(trace.x) == [1, 2, 3, 4, 5, 6]
    names, counted = list(truth[0]), 0
    for row, label in enumerate(labels[worst:], start=worst):
        covered, count = tensors_of(label, names)
        assert count == len(covered) > 0, label
        counted += count
        for step, norms in enumerate(truth):
            rms = np.sqrt(np.mean([norms[name] ** 2 for name in covered]))
            assert 10.0 ** z[row, step] == pytest.approx(rms, rel=1e-5), (label, step)
    assert counted == 322 and "blocks.0 … 1 (8 layers)" in labels and "out.weight" in labels
    assert "322 layers of a big model" in heatmap.caption and "root mean square of its layers' norms" in heatmap.caption
    # The row holding the exploding tensor shows it; the one holding the dead tensor is its healthy neighbours'.
    rows = {label: row for row, label in enumerate(labels)}
    assert z[rows["blocks.50 … 51 (8 layers)"]].min() > z[rows["blocks.48 … 49 (8 layers)"]].max() + 2
    assert np.all(np.abs(z[rows["blocks.30 … 31 (8 layers)"]] - z[rows["blocks.28 … 29 (8 layers)"]]) < 1)


def test_a_big_models_group_rows_at_steps_whose_records_name_every_tensor_are_drawn_from_those_tensors(
    tmp_path: Path,
) -> None:
    """At steps where most of a big model is frozen, its records hold per-tensor norms: the group rows there are
    the RMS of the tensors that had a gradient (they were blank), and blank only for groups that had none."""
    log, truth = big_model_log(tmp_path / "big.jsonl", frozen_at=(2, 3))
    grads = [json.loads(line) for line in log.read_text().splitlines() if '"grad_stats"' in line]
    assert ["layer_groups" in g for g in grads] == [True, True, False, False, True, True]
    _page, figures = build_page([analyze.scan_log(log, frames=True)])
    trace = next(f for f in figures if f.slug.startswith("layers")).figure.data[0]
    z, labels = np.asarray(trace.z, dtype=float), list(trace.y)
    worst = sum(label.startswith("worst: ") for label in labels)
    drawn = 0
    for row, label in enumerate(labels[worst:], start=worst):
        covered, _count = tensors_of(label, list(truth[0]))
        for step in (2, 3):
            present = [truth[step][name] for name in covered if name in truth[step]]
            if present:
                assert 10.0 ** z[row, step] == pytest.approx(np.sqrt(np.mean(np.square(present))), rel=1e-5)
                drawn += 1
            else:
                assert np.isnan(z[row, step]), label
    assert drawn == 2 * sum(bool(tensors_of(label, [n for n in truth[2]])[0]) for label in labels[worst:]) > 0


def test_a_big_models_log_whose_records_do_not_size_their_groups_draws_only_the_tensors_named(
    tmp_path: Path,
) -> None:
    """Without sizes a group's norm cannot be read per tensor: no group row is drawn rather than a wrong one."""
    log, _truth = big_model_log(tmp_path / "big.jsonl")
    records = [json.loads(line) for line in log.read_text().splitlines()]
    for record in records:
        record.get("layer_groups", {}).pop("sizes", None)
    log.write_text("".join(json.dumps(record) + "\n" for record in records))
    _page, figures = build_page([analyze.scan_log(log, frames=True)])
    heatmap = next(f for f in figures if f.slug.startswith("layers"))
    labels = list(heatmap.figure.data[0].y)
    assert labels[0] == "worst: blocks.30.a.weight" and all(label.startswith("worst: ") for label in labels)
    assert "no group is drawn" in heatmap.caption


def test_log_strings_are_escaped_for_html_and_plotly() -> None:
    assert escaped("<script>x</script>") == "&lt;script&gt;x&lt;/script&gt;"
    assert escaped("\"%{y}'") == "&#34;&#37;{y}&#39;"
    assert escaped("a\x1b[31mb") == "a\\x1b[31mb"


def test_page_of_a_hostile_log_has_no_markup_from_it(tmp_path: Path) -> None:
    scan = analyze.scan_log(hostile_log(tmp_path / "evil.jsonl"), frames=True)
    page, figures = build_page([scan])
    html = render(page)
    assert "<script>window" not in html and "<img src=x" not in html and "<svg onload" not in html
    assert "&lt;script&gt;window.__pwned" in html  # shown, as text
    for figure in figures:  # plotly reads a little HTML in labels: none of it may come from the log
        text = json.dumps(figure_data(html, figure.slug), ensure_ascii=False)
        for tag in ("<script", "<img", "<svg", "<b onmouseover", "<a href"):
            assert tag not in text, (figure.slug, tag)
        assert "&#37;{x}" in text or figure.slug != "losses_metrics"


def test_report_cli_overlays_two_logs_and_compares_them(tmp_path: Path) -> None:
    out = tmp_path / "out" / "report.html"
    logs = [SAMPLES / "pointer_collapse.jsonl", SAMPLES / "healthy.jsonl"]
    result = run_cli("moola_watch.cli", "report", *map(str, logs), "-o", str(out))
    assert result.returncode == 1, result.stderr  # the collapse log fired an error, as in analyze/check
    assert f"wrote {out}" in result.stdout and "2 runs" in result.stdout
    html = out.read_text("utf-8")
    norms = figure_data(html, "gradient_norms")
    names = {trace.get("name") for trace in norms["data"]}
    assert {"pointer_collapse · total", "healthy · total", "pointer_collapse · max", "healthy · mean"} <= names
    table = html[html.index('<section id="runs">') : html.index("</section>")]
    assert "<th>pointer_collapse</th><th>healthy</th>" in table
    assert "verdict" in table and "error" in table and "healthy" in table
    for slug in ("layers_1", "layers_2", "task_balance", "losses_metrics", "alerts"):
        figure_data(html, slug)
    assert "TASK COLLAPSE: Pointer task dominating" in html and "Urgent: increase alpha" in html
    assert "http://" not in html.split("<script>")[0] and "src=" not in html.split("<script>")[0]


def test_runs_of_logs_that_share_a_file_name_are_told_apart_by_their_folders(tmp_path: Path) -> None:
    """A review's case: ``hf_healthy/log.jsonl`` and ``hf_starved/log.jsonl``, two runs each: every chip read
    ``log · run-…``. Their folder goes in front, as ``analyze --csv`` names their files; a log whose name no
    other shares keeps its stem."""
    two = SAMPLES.joinpath("pointer_collapse.jsonl").read_bytes() + SAMPLES.joinpath("healthy.jsonl").read_bytes()
    logs = [tmp_path / "a" / "log.jsonl", tmp_path / "b" / "log.jsonl"]
    for log in logs:
        log.parent.mkdir()
        log.write_bytes(two)
    logs.append(Path(shutil.copy(SAMPLES / "type_collapse.jsonl", tmp_path / "other.jsonl")))
    page, _figures = build_page([analyze.scan_log(log, frames=True) for log in logs])
    collapse, healthy = run_id(SAMPLES / "pointer_collapse.jsonl"), run_id(SAMPLES / "healthy.jsonl")
    assert [label for label, _status, _verdict in page.runs] == [
        f"a/log · {collapse}", f"a/log · {healthy}", f"b/log · {collapse}", f"b/log · {healthy}", "other",
    ]  # fmt: skip
    assert page.comparison.headers[1:] == [label for label, _status, _verdict in page.runs]


def test_the_comparison_names_the_task_another_dominates(tmp_path: Path) -> None:
    """A review's case: a run of three tasks read ``5.66e+03 (dominated)``, not saying which task was."""
    log = REPO / "tests" / "data" / "detection" / "trio-s2-h3-w100.jsonl"  # its sign task dominated, 18.4
    page, _figures = build_page([analyze.scan_log(log, frames=True)])
    (balance,) = [row for row in page.comparison.rows if row[0] == "task balance (window mean)"]
    assert balance[1] == "18.4 (sign dominated)", balance
    page, _figures = build_page([analyze.scan_log(SAMPLES / "pointer_collapse.jsonl", frames=True)])
    (balance,) = [row for row in page.comparison.rows if row[0] == "task balance (window mean)"]
    assert balance[1].endswith(" (pointer_dominating)"), balance  # pointer/type: the state names the task
    from logs import LogBuilder

    three = LogBuilder().start()  # a window of 3: imbalanced, short of the collapse bound (5)
    for step in range(1, 12):
        three.add("task_balance", step=step, norms={"a": 3.0, "b": 1.0, "c": 2.5})
    page, _figures = build_page([analyze.scan_log(three.write(tmp_path / "three.jsonl"), frames=True)])
    (balance,) = [row for row in page.comparison.rows if row[0] == "task balance (window mean)"]
    assert balance[1] == "3 (b imbalanced)", balance
    short = LogBuilder().start()  # 4 samples of a window of 10: said in words, not as the state's identifier
    for step in range(1, 5):
        short.add("task_balance", step=step, norms={"a": 3.0, "b": 1.0})
    page, _figures = build_page([analyze.scan_log(short.write(tmp_path / "short.jsonl"), frames=True)])
    (balance,) = [row for row in page.comparison.rows if row[0] == "task balance (window mean)"]
    assert balance[1] == "not enough data (4 of 10 samples)", balance


def test_the_comparison_shows_a_final_loss_gone_nan_as_nan_and_a_loss_not_recorded_lately_as_its_last(
    tmp_path: Path,
) -> None:
    from logs import nan_loss_scenario

    page, _figures = build_page([analyze.scan_log(nan_loss_scenario().write(tmp_path / "nan.jsonl"), frames=True)])
    finals = {row[0]: row[1] for row in page.comparison.rows if row[0].startswith("final ")}
    # Before, NaN was skipped as if missing: the final training loss read 0.7, the type loss 0.9.
    assert finals["final train_loss"] == finals["final loss_type"] == "nan"
    assert finals["final val_loss"] == "0.6" and finals["final loss_pointer"] == "0.5"


def test_report_cli_writes_the_same_figures_as_pngs(tmp_path: Path) -> None:
    pngs = tmp_path / "png"
    result = run_cli("moola_watch.cli", "report", str(SAMPLES / "type_collapse.jsonl"), "-o",
                     str(tmp_path / "r.html"), "--png", str(pngs))  # fmt: skip
    assert result.returncode in (0, 1), result.stderr
    html = (tmp_path / "r.html").read_text("utf-8")
    slugs = re.findall(r'<div class="plot" id="plot-([a-z_0-9]+)">', html)
    assert sorted(p.stem for p in pngs.iterdir()) == sorted(slugs) and len(slugs) >= 5
    for png in pngs.iterdir():
        data = png.read_bytes()
        assert distinct_bytes(data) > 40, f"{png.name} looks blank"


def test_epoch_only_logs_are_drawn_against_epochs(tmp_path: Path) -> None:
    log = write_log(tmp_path / "epochs.jsonl", epochs_only=True, steps=12)
    out = tmp_path / "r.html"
    result = run_cli("moola_watch.cli", "report", str(log), "-o", str(out))
    assert result.returncode == 0, result.stderr
    norms = figure_data(out.read_text("utf-8"), "gradient_norms")
    assert norms["layout"]["xaxis"]["title"]["text"] == "epoch"
    assert values(norms["data"][0]["x"])[:3] == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("reweight_at", [None, 10])
def test_balance_of_any_task_set_shows_loss_weights_only_when_they_change(tmp_path: Path, reweight_at) -> None:
    log = write_log(tmp_path / "three.jsonl", tasks=("price", "volume", "regime"), reweight_at=reweight_at)
    _page, figures = build_page([analyze.scan_log(log, frames=True)])
    drawn = next(f for f in figures if f.slug == "task_balance")
    balance = drawn.figure
    titles = [a.text for a in balance.layout.annotations]
    assert titles[:2] == ["task gradient norm (weighted loss)", "share of the update"]
    assert "pointer/type gradient ratio" not in titles  # no ratio for other task sets
    assert ("loss weight" in titles) == (reweight_at is not None)
    # The caption describes what is drawn: it described a ratio panel with its healthy band here too.
    assert "ratio" not in drawn.caption.lower() and "healthy band" not in drawn.caption, drawn.caption
    assert ("loss weights" in drawn.caption) == (reweight_at is not None), drawn.caption
    pointer_type = write_log(tmp_path / "two.jsonl")
    _page, figures = build_page([analyze.scan_log(pointer_type, frames=True)])
    caption = next(f.caption for f in figures if f.slug == "task_balance")
    assert "Pointer/type ratio: green is the healthy band (0.5-2)" in caption and "loss weights" not in caption
    legend = {t.name for t in balance.data if t.showlegend is not False}
    assert {"price", "volume", "regime"} <= legend


def test_unreadable_log_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("moola_watch.cli", "report", str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "r.html"))
    assert result.returncode == 2
    assert "cannot read" in result.stderr and not (tmp_path / "r.html").exists()


def test_a_long_log_gives_a_report_of_reasonable_size(tmp_path: Path) -> None:
    small = write_log(tmp_path / "small.jsonl", steps=20)
    big = write_log(tmp_path / "big.jsonl", steps=20_000, spike_at=12_345)
    sizes = {}
    for log in (small, big):
        started = time.perf_counter()
        result = run_cli("moola_watch.cli", "report", str(log), "-o", str(tmp_path / f"{log.stem}.html"))
        assert result.returncode in (0, 1), result.stderr
        sizes[log.stem] = ((tmp_path / f"{log.stem}.html").stat().st_size, time.perf_counter() - started)
    assert sizes["big"][0] - sizes["small"][0] < 2_500_000, sizes  # thinned: not 1000x the data
    norms = figure_data((tmp_path / "big.html").read_text("utf-8"), "gradient_norms")
    peak = max(y for trace in norms["data"] if trace.get("name") == "max" for y in values(trace["y"]))
    assert peak == 500.0  # the one-step spike survived thinning


def test_a_log_of_many_runs_draws_the_most_telling_runs_and_tables_them_all(tmp_path: Path) -> None:
    """A sweep appended into one log: 30 runs, one of them exploding. The figures draw 12 (that one among them,
    it was one heatmap of 30), the comparison table lists every run, and the subtitle says so."""
    from logs import LogBuilder

    lines = []
    for i in range(30):
        log = LogBuilder(f"sweep-{i:02d}", t0=1_700_000_000.0 + 1000 * i).start()
        for epoch in range(1, 4):
            peak = 500.0 if i == 7 else 0.5
            log.grad(epoch, 0.3, peak, {"enc.weight": 0.3, "head.weight": peak})
        lines += log.end().lines()
    path = tmp_path / "sweep.jsonl"
    path.write_bytes(b"".join(lines))
    page, figures = build_page([analyze.scan_log(path, frames=True)])
    heatmaps = [f for f in figures if f.slug.startswith("layers")]
    assert len(heatmaps) == 12 and any("sweep-07" in f.title for f in heatmaps)
    assert "the figures draw 12 of the 30 runs" in page.subtitle and len(page.comparison.headers) == 1 + 30


def test_analyze_points_to_the_report() -> None:
    result = run_cli("moola_watch.cli", "analyze", str(SAMPLES / "healthy.jsonl"))
    assert f"moola-watch report {SAMPLES / 'healthy.jsonl'} -o report.html" in result.stdout


def test_each_runs_verdict_in_the_report_is_checks(tmp_path: Path) -> None:
    """A run that measured nothing, a run a later one superseded, a collapse that recovered: the report's
    verdicts are the ones ``check --json`` gives (it called the first two healthy)."""
    from logs import LogBuilder, recovered_collapse_scenario

    from moola_watch.html_report.runs import collect_runs

    nothing = LogBuilder("only-epochs").start().epoch(1).epoch(2).end()
    superseded, later = LogBuilder("killed").start().grad(1, 0.3, 0.3), LogBuilder("after").start().grad(1, 0.3, 0.3)
    recovered = recovered_collapse_scenario()
    logs = [nothing.write(tmp_path / "nothing.jsonl"), recovered.write(tmp_path / "recovered.jsonl")]
    (tmp_path / "two.jsonl").write_bytes(b"".join(superseded.lines() + later.end().lines()))
    logs.append(tmp_path / "two.jsonl")
    scans = [analyze.scan_log(str(path), frames=True) for path in logs]
    reported = {data.run: data.verdict for data in collect_runs(scans)}
    checked = {}
    for path in logs:
        for line in run_cli("moola_watch.cli", "check", "--json", str(path)).stdout.splitlines():
            checked.update({run["run"]: run["verdict"] for run in json.loads(line)["runs"]})
    assert reported == checked
    assert checked == {"only-epochs": "no_measurements", "recovered": "warning", "killed": "unterminated",
                       "after": "healthy"}  # fmt: skip


def test_each_series_of_the_losses_and_metrics_figure_has_its_own_colour(tmp_path: Path) -> None:
    """A review's case: the training loss and the first metric (accuracy) were drawn in the same blue."""
    out = tmp_path / "r.html"
    result = run_cli("moola_watch.cli", "report", str(REPO / "sample_logs" / "healthy.jsonl"), "-o", str(out))
    assert result.returncode == 0, result.stderr
    traces = [t for t in figure_data(out.read_text("utf-8"), "losses_metrics")["data"] if t.get("mode") != "markers"]
    colours = {t["name"]: t["line"]["color"] for t in traces}
    assert {"train", "type_acc"} <= set(colours) and len(set(colours.values())) == len(colours), colours


@pytest.mark.parametrize("writer", ["today's", "older"])
def test_a_run_of_epoch_records_alone_is_drawn_against_epochs_not_all_at_step_0(tmp_path: Path, writer) -> None:
    """An outside review: the epoch hooks alone (no optimizer counted) wrote step 0 in every epoch record, and the
    report drew the five epochs' losses and metrics one above the other at step 0. The writer now leaves the
    step out; a log of the older writer is read as one without steps too."""
    log = tmp_path / "epochs.jsonl"
    with GradientMonitor(log_path=log, echo=lambda _line: None) as monitor:
        for epoch in range(1, 6):
            monitor.on_epoch_start(epoch)
            monitor.on_epoch_end(epoch, train_loss=1.0 / epoch, val_loss=1.2 / epoch, metrics={"acc": 0.5 + epoch / 20})
    records = [json.loads(line) for line in log.read_text().splitlines()]
    epochs = [record for record in records if record["kind"] == "epoch"]
    assert [record.get("step") for record in epochs] == [None] * 5
    if writer == "older":
        log.write_text("".join(json.dumps({**r, "step": 0} if r["kind"] == "epoch" else r) + "\n" for r in records))
    out = tmp_path / "r.html"
    result = run_cli("moola_watch.cli", "report", str(log), "-o", str(out))
    assert result.returncode in (0, 3), result.stderr  # no gradient measured: check's "no measurements"
    progress = figure_data(out.read_text("utf-8"), "losses_metrics")
    axes = [axis for name, axis in progress["layout"].items() if name.startswith("xaxis")]
    titles = {axis.get("title", {}).get("text") for axis in axes}
    assert titles - {None} == {"epoch"}, titles
    assert values(progress["data"][0]["x"]) == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_a_plain_loops_task_losses_are_drawn_from_every_batch_it_gave_the_monitor(tmp_path: Path) -> None:
    """An outside review: the README's loop gives on_epoch_end the total loss alone, so the report's losses panel,
    captioned "each task's own loss", drew only `train`, while 300 balance samples held each task's loss (the
    evidence a collapse alert quotes). The monitor now records each task's mean over the epoch's batches: the
    panel draws those, every batch's loss in them, not only the sampled ones."""
    torch.manual_seed(0)
    trunk, cls_head, reg_head = torch.nn.Linear(8, 16), torch.nn.Linear(16, 3), torch.nn.Linear(16, 1)
    model = torch.nn.ModuleDict({"trunk": trunk, "cls": cls_head, "reg": reg_head})
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    log, batch_means = tmp_path / "mtl.jsonl", {}
    with GradientMonitor(every_n_steps=5, log_path=log, echo=lambda _line: None) as monitor:
        monitor.watch_optimizer(optimizer)
        for epoch in range(1, 4):
            monitor.on_epoch_start(epoch)
            for _batch in range(20):
                x, labels = torch.randn(16, 8), torch.randint(0, 3, (16,))
                h = trunk(x).relu()
                losses = {"cls": torch.nn.functional.cross_entropy(cls_head(h), labels),
                          "reg": torch.nn.functional.mse_loss(reg_head(h).squeeze(1), x[:, 0])}  # fmt: skip
                batch_means.setdefault(epoch, []).append(losses["reg"].item() / 20)
                monitor.backward(model, losses, {"cls": 1.0, "reg": 0.5})
                monitor.on_before_optimizer_step(model)
                optimizer.step()
                optimizer.zero_grad()
            monitor.on_epoch_end(epoch, train_loss=sum(losses.values()))
    out = tmp_path / "r.html"
    assert run_cli("moola_watch.cli", "report", str(log), "-o", str(out)).returncode in (0, 1)
    traces = {trace["name"]: trace for trace in figure_data(out.read_text("utf-8"), "losses_metrics")["data"]}
    assert {"train", "cls", "reg"} <= set(traces), set(traces)
    assert values(traces["cls"]["x"]) == [20.0, 40.0, 60.0]  # each epoch's end
    assert values(traces["reg"]["y"]) == pytest.approx([sum(batch_means[epoch]) for epoch in (1, 2, 3)])
    # Another writer's log, whose epochs hold no task losses: the balance samples' losses are drawn
    records = [json.loads(line) for line in log.read_text().splitlines()]
    bare = tmp_path / "bare.jsonl"
    bare.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "task_losses"}) + "\n" for r in records))
    assert run_cli("moola_watch.cli", "report", str(bare), "-o", str(out)).returncode in (0, 1)
    traces = {trace["name"]: trace for trace in figure_data(out.read_text("utf-8"), "losses_metrics")["data"]}
    assert values(traces["cls"]["x"]) == [float(step) for step in range(5, 61, 5)]  # each balance sample's step
    sampled = [record["losses"]["reg"] for record in records if record["kind"] == "task_balance"]
    assert values(traces["reg"]["y"]) == pytest.approx(sampled)


def test_the_report_says_what_each_run_was_judged_by_and_draws_each_by_its_own_thresholds(tmp_path: Path) -> None:
    """Two runs that recorded different thresholds, a training floor given on the command line: the runs table
    says where each run's thresholds and floors came from (as ``check`` does), the footer gives each run's values,
    and a run's own drawings (its heatmap's scale, its collapse window's mean) use its own, not the first log's."""
    from logs import LAYERS, healthy_scenario

    def recorded(run: str, **thresholds: float) -> Path:
        log = healthy_scenario()
        log.run = log.records[0]["run"] = run
        for record in log.records:
            record["run"] = run
        log.records[0]["thresholds"] = thresholds
        return log.write(tmp_path / f"{run}.jsonl")

    wide = recorded("wide", exploding=500.0, window=4)
    plain = recorded("plain")
    out = tmp_path / "report.html"
    result = run_cli("moola_watch.cli", "report", str(wide), str(plain), "--task-floor", "type=0.3", "-o", str(out))
    assert result.returncode == 0, result.stderr
    html = out.read_text("utf-8")
    table = html[html.index('<section id="runs">') : html.index("</section>")]
    row = table[table.index("thresholds from") :].split("</tr>")[0]
    assert "<td>recorded in run_start; training floors: type 0.3 (given)</td>" in row
    assert "<td>watcher defaults (the run recorded none); training floors: type 0.3 (given)</td>" in row
    footer = html[html.index("<footer") :]
    assert "Thresholds differ between runs" in footer
    assert "wide: vanishing 1e-07, exploding 500," in footer and "window 4," in footer
    assert "plain: vanishing 1e-07, exploding 10," in footer
    heatmaps = [figure_data(html, f"layers_{i}")["data"][0] for i in (1, 2)]
    assert [heatmap["zmax"] for heatmap in heatmaps] == [4, 2]  # each run's exploding bound: 500 and 10
    balance = figure_data(html, "task_balance")["data"]
    assert {"wide · collapse window mean (4 samples)", "plain · collapse window mean (10 samples)"} <= {
        trace.get("name") for trace in balance
    }, [trace.get("name") for trace in balance]
    assert len(LAYERS) == len(heatmaps[0]["y"])
