"""The watcher installed alone, as `pip install .` gives it on a laptop or a login node: no torch, and it works.

The project's wheel is built once from a copy of the sources and installed into a fresh virtual environment
(dependencies from the package index or pip's cache); the real console scripts of that environment are run.
"""

from __future__ import annotations

import email.parser
import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import REPO

pytestmark = pytest.mark.slow

SOURCES = ("pyproject.toml", "README.md", "moola", "moola_watch")
MAX_INSTALL_MB = 300


def _copy_sources(destination: Path) -> Path:
    """The files a wheel is built from, without this checkout's build leftovers."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    destination.mkdir()
    for name in SOURCES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, destination / name, ignore=ignore)
        else:
            shutil.copy2(source, destination / name)
    return destination


def _pip(*args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "pip", "-q", *args], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("build")
    source = _copy_sources(root / "src")
    # The build backend from this environment when it has one (seconds faster than an isolated build).
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    _pip("wheel", "--no-deps", *isolation, "-w", str(root / "dist"), str(source))
    (built,) = (root / "dist").glob("moola-*.whl")
    return built


@pytest.fixture(scope="module")
def watcher_env(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding what `pip install .` installs, nothing else."""
    env = tmp_path_factory.mktemp("env") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=120)
    _pip("--python", str(env / "bin" / "python"), "install", str(wheel))
    return env


def _run(env: Path, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(env / "bin" / command[0]), *command[1:]],
        cwd=env,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "100"},
    )


def _size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 1e6


def test_torch_is_only_in_the_train_extra(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = email.parser.Parser().parsestr(archive.read(name).decode("utf-8"))
    requires = metadata.get_all("Requires-Dist")
    torch = [r for r in requires if r.startswith("torch")]
    assert torch and all('extra == "train"' in r for r in torch), torch
    extras = set(metadata.get_all("Provides-Extra"))
    assert {"train", "test", "lightning", "transformers", "accelerate"} <= extras


def test_watcher_alone_has_no_torch_is_small_and_works(watcher_env: Path) -> None:
    python = str(watcher_env / "bin" / "python")
    no_torch = subprocess.run([python, "-c", "import torch"], capture_output=True, text=True, timeout=60)
    assert no_torch.returncode == 1 and "No module named 'torch'" in no_torch.stderr

    size = _size_mb(watcher_env)
    print(f"watcher-only venv: {size:.0f} MB")
    assert size < MAX_INSTALL_MB

    healthy = _run(watcher_env, "moola-watch", "check", str(REPO / "sample_logs" / "healthy.jsonl"))
    assert healthy.returncode == 0 and healthy.stdout.startswith("ok"), healthy.stderr
    collapse = _run(watcher_env, "moola-watch", "analyze", str(REPO / "sample_logs" / "pointer_collapse.jsonl"))
    assert collapse.returncode == 1, collapse.stderr
    assert "TASK COLLAPSE" in collapse.stdout and "Worst layers" in collapse.stdout


def test_trainer_without_torch_names_what_to_install(watcher_env: Path) -> None:
    result = _run(watcher_env, "moola", "train", "--epochs", "1")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "pip install 'moola[train]'" in result.stderr
