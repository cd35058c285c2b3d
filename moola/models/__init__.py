"""Models of the trainer side."""

from moola.models.enhanced_simple_lstm import DualTaskLSTMNet, EnhancedSimpleLSTM

__all__ = ["DualTaskLSTMNet", "EnhancedSimpleLSTM"]
