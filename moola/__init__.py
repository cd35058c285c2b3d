"""moola: a dual-task LSTM over OHLC windows, with gradient monitoring and task-collapse detection."""

__version__ = "0.1.0"
