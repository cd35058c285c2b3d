"""Framework integrations: thin adapters that call :class:`~moola.utils.monitoring.GradientMonitor`'s hooks at
the framework's own moments of a step; the monitor measures, records and judges.

- :mod:`moola.integrations.lightning`: ``GradientMonitorCallback``, a ``lightning.Callback``
  (extra ``moola[lightning]``);
- :mod:`moola.integrations.transformers`: ``GradientMonitorCallback``, a ``transformers.TrainerCallback``
  (extra ``moola[transformers]``).

An ``accelerate`` loop needs no adapter: it calls the monitor's hooks itself (see the README). Importing this
package imports no framework; each module imports only its own.
"""
