"""A real terminal for the live view's tests: a tmux session on a private server, read with capture-pane."""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

from helpers import REPO


class Terminal:
    """A real terminal: a tmux session on a private server, read with capture-pane."""

    def __init__(self, command: str, width: int = 150, height: int = 50) -> None:
        self.socket = f"moola-test-{uuid.uuid4().hex[:8]}"
        self.exit_file = Path(f"/tmp/{self.socket}.exit")
        # The pane's own size must rule, not sizes inherited from whoever started the tests.
        script = f"unset COLUMNS LINES; cd {REPO} && {command}; echo $? > {self.exit_file}; sleep 60"
        self._tmux("new-session", "-d", "-x", str(width), "-y", str(height), script)

    def _tmux(self, *args: str) -> str:
        result = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10)
        return result.stdout

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p")

    def wait_for(self, text: str, timeout: float = 20.0, count: int = 1) -> float:
        """Poll the screen until ``text`` shows (``count`` times); return the wall time it was first seen."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.screen().count(text) >= count:
                return time.time()
            time.sleep(0.05)
        raise AssertionError(f"{text!r} never appeared {count} time(s); screen:\n{self.screen()}")

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", *keys)

    def exit_code(self, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.exit_file.exists() and self.exit_file.read_text().strip():
                return int(self.exit_file.read_text())
            time.sleep(0.05)
        raise AssertionError(f"the command did not exit; screen:\n{self.screen()}")

    def close(self) -> None:
        self._tmux("kill-server")
        self.exit_file.unlink(missing_ok=True)
