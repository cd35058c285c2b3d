"""Notifications: alert transitions sent to the user's commands (``--on-alert``) and webhooks (``--webhook``).

The follow loop hands every alert event (the object ``follow --json`` prints) to a :class:`Notifier`, which
returns at once.

* :mod:`.settings` what to notify, from flags or config, checked at start;
* :mod:`.sinks` what is sent and how (pure formatting; ``post_json`` and ``Command`` are the thin shells);
* :mod:`.flapping` which transitions are news (a flapping alert is one incident);
* :mod:`.ledger` which events each destination already got, across watchers (a restart does not page again);
* :mod:`.delivery` the queues, retries and exit grace that get it out without stalling following.
"""

from moola_watch.notify.delivery import CLOSE_GRACE_S, MAX_BACKOFF_S, QUEUE_SIZE, Notifier, backoff
from moola_watch.notify.flapping import ResolveHold
from moola_watch.notify.settings import NotifySettings, check_url, command_argv, redact, settings_from
from moola_watch.notify.sinks import (
    CHAT_LIMIT,
    ENV_LIMIT,
    DeliveryError,
    Sink,
    alert_key,
    command_env,
    headline,
    post_json,
    sinks_for,
    slack_escape,
    wanted,
    webhook_body,
)

__all__ = [
    "CHAT_LIMIT", "CLOSE_GRACE_S", "ENV_LIMIT", "MAX_BACKOFF_S", "QUEUE_SIZE", "DeliveryError", "Notifier",
    "NotifySettings", "ResolveHold", "Sink", "alert_key", "backoff", "check_url", "command_argv", "command_env",
    "headline", "post_json", "redact", "settings_from", "sinks_for", "slack_escape", "wanted", "webhook_body",
]  # fmt: skip
