"""The exit codes every ``moola-watch`` command shares (``check``'s, documented in the README)."""

EXIT_OK, EXIT_ALERT, EXIT_USAGE, EXIT_NO_MEASUREMENTS = 0, 1, 2, 3
#: Which exit code wins when several logs or runs disagree (most telling first).
EXIT_PRECEDENCE = (EXIT_USAGE, EXIT_ALERT, EXIT_NO_MEASUREMENTS, EXIT_OK)
