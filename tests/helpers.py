"""Helpers for tests: run the real CLIs in subprocesses, read JSONL logs strictly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_cli(
    module: str, *args: str, cwd: Path | None = None, timeout: float = 300, **kwargs
) -> subprocess.CompletedProcess:
    """Run ``python -m module args`` as a user would, capturing text output."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "120"}
    env.update(kwargs.pop("env", {}))
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        **kwargs,
    )


def strict_lines(path: Path) -> list[dict]:
    """Every line of ``path`` parsed by the stdlib with NaN/Infinity tokens refused."""

    def refuse(token: str) -> None:
        raise ValueError(f"non-strict JSON token {token}")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text("utf-8").splitlines()]


def run_id(log: Path) -> str:
    """The run id of ``log``'s first ``run_start`` record (sample logs get new ids when they are regenerated)."""
    return next(record["run"] for record in strict_lines(log) if record["kind"] == "run_start")


def run_readme_example(
    marker: str, cwd: Path, timeout: float = 240, edit: tuple[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run the README's Python block that follows ``<!-- marker -->`` as written (or with the one ``edit``, old
    text -> new, that the README itself describes), in a fresh process in ``cwd``."""
    readme = (REPO / "README.md").read_text("utf-8")
    code = readme[readme.index(f"<!-- {marker} -->") :].split("```python\n", 1)[1].split("```", 1)[0]
    if edit is not None:
        assert edit[0] in code, edit
        code = code.replace(*edit)
    script = cwd / "example.py"
    script.write_text(code, "utf-8")
    result = subprocess.run([sys.executable, str(script)], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-2000:]
    return result
