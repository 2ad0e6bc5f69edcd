"""Training stage: fit one model on one dataset for one (lookback, horizon, seed).

``core.py`` fits (series and spec in, model and history out), ``sgd.py`` is its Lightning path,
``module.py`` the one LightningModule, ``stage.py`` the job shell that loads, tracks and writes.
"""
