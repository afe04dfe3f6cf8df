"""The training engine on real (tiny) computations: it learns, resumes, stops, and fails loudly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from tiny_training import K, TinyNet, accuracy_eval, quiet_cfg, separable_task

from lungpipe.training import checkpoint
from lungpipe.training.augment import AugmentConfig
from lungpipe.training.data import SpectrogramDataset, class_weights, split_by_patient
from lungpipe.training.engine import NonFiniteLossError, fit, predict_proba, run_signature


def test_tiny_model_learns_a_separable_task(tmp_path):
    x, y = separable_task(256)
    xv, yv = separable_task(128, seed=1)
    torch.manual_seed(0)
    model = TinyNet()
    before = accuracy_eval(yv, predict_proba(model, SpectrogramDataset(xv, yv)))["accuracy"]
    res = fit(model, SpectrogramDataset(x, y), SpectrogramDataset(xv, yv), quiet_cfg(), num_classes=K,
              evaluate=accuracy_eval, checkpoint_dir=tmp_path, progress=False)
    assert res.best_value >= 0.95 > before + 0.3
    assert len(res.history) == 6 and res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    saved = checkpoint.load(tmp_path / "best.pt")
    assert saved["epoch"] == res.best_epoch
    model.load_state_dict(saved["model"])
    assert accuracy_eval(yv, predict_proba(model, SpectrogramDataset(xv, yv)))["accuracy"] == pytest.approx(res.best_value)


def test_interrupted_run_resumes_from_last_epoch_bit_identically(tmp_path):
    x, y = separable_task(64)
    ds = SpectrogramDataset(x, y)
    sig = run_signature("tiny", 1)
    cfg = quiet_cfg(ma_update=True, augment=AugmentConfig(mode="release", mixup_alpha=0.4))

    class Interrupt(Exception):
        pass

    def stop_after_epoch_2(epoch, record):
        if epoch == 2:
            raise Interrupt

    torch.manual_seed(0)
    with pytest.raises(Interrupt):
        fit(TinyNet(), ds, ds, cfg, num_classes=K, evaluate=accuracy_eval, checkpoint_dir=tmp_path,
            signature=sig, callbacks=[stop_after_epoch_2], progress=False)
    assert checkpoint.load(tmp_path / "last.pt")["epoch"] == 2
    seen = []
    resumed_model = TinyNet()
    res = fit(resumed_model, ds, ds, cfg, num_classes=K, evaluate=accuracy_eval, checkpoint_dir=tmp_path,
              signature=sig, callbacks=[lambda e, r: seen.append(e)], progress=False)
    assert res.resumed_from_epoch == 3 and seen == [3, 4, 5]
    assert [h["epoch"] for h in res.history] == list(range(6))

    # an uninterrupted run with the same seed ends with the same bits as interrupted + resumed
    torch.manual_seed(0)
    straight_model = TinyNet()
    straight = fit(straight_model, ds, ds, cfg, num_classes=K, evaluate=accuracy_eval, progress=False)
    without_time = [[(k, v) for k, v in h.items() if k != "seconds"] for h in straight.history]
    assert without_time == [[(k, v) for k, v in h.items() if k != "seconds"] for h in res.history]
    a, b = straight_model.state_dict(), resumed_model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_other_configuration_does_not_resume(tmp_path):
    x, y = separable_task(32)
    ds = SpectrogramDataset(x, y)
    fit(TinyNet(), ds, ds, quiet_cfg(epochs=2), num_classes=K, evaluate=accuracy_eval, checkpoint_dir=tmp_path,
        signature="a", progress=False)
    res = fit(TinyNet(), ds, ds, quiet_cfg(epochs=2), num_classes=K, evaluate=accuracy_eval,
              checkpoint_dir=tmp_path, signature="b", progress=False)
    assert res.resumed_from_epoch is None and len(res.history) == 2


def test_early_stopping_stops_when_validation_stalls():
    x, y = separable_task(64)
    ds = SpectrogramDataset(x, y)
    res = fit(TinyNet(), ds, ds, quiet_cfg(epochs=30, lr=1e-12), num_classes=K,
              evaluate=lambda l, p: {"accuracy": 0.5}, progress=False, )
    assert res.stopped_early is False  # patience 0 disables it
    res = fit(TinyNet(), ds, ds, quiet_cfg(epochs=30, early_stopping_patience=3), num_classes=K,
              evaluate=lambda l, p: {"accuracy": 0.5}, progress=False)
    assert res.stopped_early and len(res.history) == 4 and res.best_epoch == 0


def test_nan_loss_is_an_error():
    class NanNet(TinyNet):
        def forward(self, x):
            return super().forward(x) * float("nan")

    x, y = separable_task(32)
    ds = SpectrogramDataset(x, y)
    with pytest.raises(NonFiniteLossError):
        fit(NanNet(), ds, ds, quiet_cfg(epochs=1), num_classes=K, evaluate=accuracy_eval, progress=False)


def test_class_weights_inverse_frequency():
    w = class_weights(np.array([0] * 6 + [1] * 2 + [2] * 1), 4)
    assert w[3] == 0
    assert float(w[0] * 6) == pytest.approx(float(w[1] * 2))
    assert float(w[1] * 2) == pytest.approx(float(w[2] * 1))
    assert float(w[:3].mean()) == pytest.approx(1.0)


def test_patient_split_has_no_patient_on_both_sides():
    rng = np.random.default_rng(0)
    idx = pd.DataFrame({"patient": rng.integers(100, 140, 600), "label": rng.integers(0, 4, 600)})
    split = split_by_patient(idx, 0.2, seed=1)
    assert set(idx.patient.iloc[split.train_idx]).isdisjoint(idx.patient.iloc[split.val_idx])
    assert len(split.train_idx) + len(split.val_idx) == 600
    assert 0.1 < len(split.val_idx) / 600 < 0.3
    assert set(idx.label.iloc[split.val_idx]) == {0, 1, 2, 3}
    again = split_by_patient(idx, 0.2, seed=1)
    assert np.array_equal(split.val_idx, again.val_idx)
