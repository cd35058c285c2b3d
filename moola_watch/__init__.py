"""moola-watch: follow, judge and summarise moola's JSONL gradient logs. Never imports torch."""

__version__ = "0.1.0"
