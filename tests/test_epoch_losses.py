"""Each task's mean loss over an epoch, as the monitor keeps it for the epoch record."""

import torch

from moola.utils.monitoring.epoch_losses import EpochTaskLosses


def test_the_epoch_mean_is_of_the_values_given_even_when_the_loop_reuses_a_loss_tensor_and_restarts_each_epoch():
    losses = EpochTaskLosses()
    reused = torch.tensor(2.0)
    losses.add({"a": reused, "b": torch.tensor([1.0]), "not a loss": torch.ones(3)})
    reused.fill_(100.0)  # a loop writing the next batch's loss into the same storage
    losses.add({"a": torch.tensor(4.0, dtype=torch.bfloat16), "b": torch.tensor(float("nan"))})
    assert losses.means() == {"a": 3.0}  # b's epoch held a NaN: no mean to compare
    losses.add({"b": torch.tensor(0.5)})
    assert losses.means() == {"b": 0.5} and losses.means() == {}
