"""What ``follow`` is told to notify: the commands and webhook URLs from its flags or config, checked when it
starts (a bad URL is a usage error then, never a failure that prints it later), and URLs shown without their path."""

from __future__ import annotations

import math
import re
import shlex
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from moola_watch.config_keys import field_spelled
from moola_watch.options import SEVERITY_CHOICES
from moola_watch.textsafe import inert


@dataclass(frozen=True)
class NotifySettings:
    """Where alerts go and which ones. ``timeout`` is seconds per attempt (HTTP request or command run);
    ``retries`` is quick extra webhook attempts at one alert before the webhook counts as failing (it is still
    tried after that, with longer backoff); ``resolve_after`` is seconds an alert must stay resolved before its
    resolution is sent (firing again meanwhile, it is the same incident: nothing more is sent)."""

    commands: tuple[str, ...] = ()
    webhooks: tuple[str, ...] = ()
    notify_on: str = "error"
    timeout: float = 10.0
    retries: int = 2
    resolve_after: float = 60.0  # seconds an alert must stay resolved before that is sent (flapping: one incident)
    # The ledger of alerts each destination got (:mod:`.ledger`): a restarted watcher does not send them again.
    # None: the default place; "": none (every watcher sends its logs' whole history, as keys let a receiver drop).
    sent_log: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.commands or self.webhooks)


# ------------------------------------------------------------------------------ settings (pure)


def _strings(table: Mapping[str, Any], key: str) -> list[str]:
    value = table.get(key, [])
    value = [value] if isinstance(value, str) else value
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"[notify] {key} must be a string or a list of strings")
    return value


#: The keys of a config's [notify] table, in field spelling; the flags' spelling (``notify-on``) is taken too.
KEYS = ("on_alert", "webhook", "notify_on", "timeout", "retries", "resolve_after", "sent_log")
#: Longest timeout, in seconds: a day. A slow webhook is waited on up to 8 times it, and a socket's or lock's
#: timeout beyond about 292 years overflows the clock (1e10 s killed the webhook's thread, nothing was sent).
MAX_TIMEOUT_S = 86_400.0


def _keys(table: Mapping[str, Any]) -> dict[str, Any]:
    """``table`` with its keys in field spelling (``notify-on`` is ``notify_on``, as [thresholds] takes both).
    Raises ValueError on a key set in both spellings, and on unknown keys, listing the valid ones."""
    return field_spelled(table, KEYS, "notify")


def settings_from(
    table: Mapping[str, Any],
    commands: Sequence[str] = (),
    webhooks: Sequence[str] = (),
    notify_on: str | None = None,
    timeout: float | None = None,
    sent_log: str | None = None,
) -> NotifySettings:
    """A config file's ``[notify]`` table, then the flags: commands and webhooks add up, the rest override.
    Raises ValueError on anything unusable, before following starts."""
    config = _keys(table)
    settings = NotifySettings(
        commands=tuple(_strings(config, "on_alert") + list(commands)),
        webhooks=tuple(_strings(config, "webhook") + list(webhooks)),
        notify_on=notify_on or config.get("notify_on", "error"),
        timeout=timeout if timeout is not None else config.get("timeout", 10.0),
        retries=config.get("retries", 2),
        resolve_after=config.get("resolve_after", 60.0),
        sent_log=sent_log if sent_log is not None else config.get("sent_log"),
    )
    if settings.sent_log is not None and not isinstance(settings.sent_log, str):
        raise ValueError(f'[notify] sent_log must be a path ("" for none), got {settings.sent_log!r}')
    if settings.notify_on not in SEVERITY_CHOICES:  # --notify-on's choices: no rule fires at info
        raise ValueError(f"[notify] notify_on must be one of {', '.join(SEVERITY_CHOICES)}, got {settings.notify_on!r}")
    timeout = settings.timeout
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= MAX_TIMEOUT_S:
        raise ValueError(
            f"--notify-timeout ([notify] timeout) must be a number of seconds above 0 and at most "
            f"{MAX_TIMEOUT_S:g} (a day), got {timeout!r}"
        )
    if isinstance(settings.retries, bool) or not isinstance(settings.retries, int) or not 0 <= settings.retries <= 10:
        raise ValueError(f"[notify] retries must be a whole number from 0 to 10, got {settings.retries!r}")
    hold = settings.resolve_after
    if isinstance(hold, bool) or not isinstance(hold, int | float) or not 0 <= hold < math.inf:
        raise ValueError(f"[notify] resolve_after must be a finite number of seconds, 0 or more, got {hold!r}")
    for command in settings.commands:
        command_argv(command)
    for url in settings.webhooks:
        check_url(url)
    return settings


def command_argv(command: str) -> list[str]:
    """The argv of an ``--on-alert`` command: ``shlex.split`` of the user's own text, never a shell."""
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise ValueError(f"--on-alert {command!r}: {exc}") from None
    if not argv:
        raise ValueError("--on-alert needs a command")
    if shutil.which(argv[0]) is None:
        raise ValueError(f"--on-alert {command!r}: {argv[0]} is not an executable command")
    return argv


def check_url(url: str) -> str:
    """``url`` if it is an http(s) URL with a host and a valid port (urllib would also open file: and ftp: ones),
    in printable ASCII without spaces. The errors show the URL redacted: its path holds the secret."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:  # an unclosed [ of an IPv6 address
        raise ValueError(f"--webhook {_given(url)!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        missing = "" if "://" in url else " (nothing in front of the host: write https:// or http://)"
        raise ValueError(f"--webhook needs an http:// or https:// URL, got {_given(url)!r}{missing}")
    # A pasted comment or line break would reach http.client, whose refusal quotes the whole URL, secret and all.
    if not all(" " < ch < "\x7f" for ch in url):
        raise ValueError(f"--webhook {redact(url)}: the URL holds a space, control or non-ASCII character")
    if _port(parts) == 0:
        raise ValueError(f"--webhook {redact(url)}: the port is not a number from 1 to 65535")
    return url


def _given(url: str) -> str:
    """A webhook URL as an error about its form shows it, parsed or not: its scheme and host, without a
    ``user:password@``, and ``/…`` for the rest (the path holds the secret)."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        scheme, rest = "", url
    host = re.split(r"[/?#]", rest, maxsplit=1)[0]
    shown = scheme + separator + host.rpartition("@")[2]
    return inert(shown) + ("/…" if len(host) < len(rest) else "")


def _port(parts: urllib.parse.SplitResult) -> int | None:
    """The URL's port; None when it has none (the scheme's default), 0 when it is no usable port."""
    try:
        return parts.port
    except ValueError:  # not a number, or beyond 65535
        return 0


def redact(url: str) -> str:
    """A webhook URL shown without its path and query, which often hold the secret (Slack, Discord)."""
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:
        return "<webhook>"
    port = _port(parts)
    shown = "" if port is None else f":{port}" if port else ":<bad port>"
    return f"{parts.scheme}://{inert(parts.hostname)}{shown}/…"


# ------------------------------------------------------------------------------ formatting (pure)
