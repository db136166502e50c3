"""The scvi-tools bridge's history conversion, on a fake ``model.history``: it needs no
scvi-tools, so it runs where tests/test_bridge.py is skipped."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd

from scgen_ae.bridge import scvi_tools as bridge
from scgen_ae.train import History


def _logged(**columns) -> dict:
    """scvi-tools' ``model.history``: one single-column DataFrame per logged key, by epoch."""
    return {key: pd.DataFrame({key: values}, index=pd.Index(range(len(values)), name="epoch"))
            for key, values in columns.items()}


def test_scvi_history_becomes_a_history_record():
    logged = _logged(train_loss=[9.0, 7.0, 8.0], elbo_validation=[10.0, 6.0, 6.5],
                     reconstruction_loss_train=[8.0, 6.5, 7.5], kl_local_train=[1.0, 0.5, 0.5],
                     reconstruction_loss_validation=[9.0, 5.5, 6.0], kl_local_validation=[1.0, 0.5, 0.5],
                     kl_global_train=[0.0, 0.0, 0.0])  # logged, but no term of ours
    recorder = SimpleNamespace(kl_weight=[0.5, 1.0, 1.0, 1.0], seconds=2.5)  # one epoch more than logged
    hist = bridge._history(logged, recorder, 10, "train_loss", "elbo_validation")
    terms = ["train_reconstruction", "train_kl", "validation_reconstruction", "validation_kl"]
    assert list(hist) == list(History().as_dict()) + terms
    np.testing.assert_array_equal(hist["train_loss"], [9.0, 7.0, 8.0])
    np.testing.assert_array_equal(hist["validation_loss"], [10.0, 6.0, 6.5])
    np.testing.assert_array_equal(hist["kl_weight"], [0.5, 1.0, 1.0])
    np.testing.assert_array_equal(hist["validation_kl"], [1.0, 0.5, 0.5])
    assert all(hist[k].dtype == np.float64 for k in ["train_loss", "validation_loss", "kl_weight", *terms])
    assert hist["best_epoch"] == 1 and hist["stopped_early"] and not hist["interrupted"]
    assert hist["seconds"] == 2.5


def test_scvi_history_without_validation_or_terms():
    """AmortizedLDA logs ``elbo_train`` only: no validation, no terms, best_epoch -1."""
    hist = bridge._history(_logged(elbo_train=[5.0, 4.0]), SimpleNamespace(kl_weight=[], seconds=1.0), 2,
                           "elbo_train", "elbo_validation")
    assert list(hist) == list(History().as_dict())
    np.testing.assert_array_equal(hist["train_loss"], [5.0, 4.0])
    assert len(hist["validation_loss"]) == 0 and len(hist["kl_weight"]) == 0
    assert hist["best_epoch"] == -1 and not hist["stopped_early"]
