"""The training engine on real (tiny) computations: it learns, resumes, stops, and fails loudly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from lungpipe.augment import spec_augment
from lungpipe.models.base import LungModel
from lungpipe.training import checkpoint
from lungpipe.training.config import AugmentConfig, TrainConfig
from lungpipe.training.data import SpectrogramDataset, class_weights, split_by_patient
from lungpipe.training.engine import NonFiniteLossError, fit, predict_proba, run_signature

T, F, K = 20, 8, 4


class TinyNet(LungModel):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(4 * F, K)

    def forward(self, x):  # pool over time only, so the mel band that lights up stays visible
        return self.head(torch.relu(self.conv(x)).mean(dim=2).flatten(1))


def separable_task(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class k lights up mel band k*2..k*2+1 (plus noise): linearly separable after pooling."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, size=n)
    x = rng.normal(0, 0.3, size=(n, T, F)).astype(np.float32)
    for i, k in enumerate(y):
        x[i, :, 2 * k : 2 * k + 2] += 2.0
    return x, y


def accuracy_eval(labels, probs):
    return {"accuracy": float((probs.argmax(1) == labels).mean())}


def quiet_cfg(**kw) -> TrainConfig:
    base = dict(epochs=6, batch_size=16, lr=3e-2, warmup_epochs=0.5, selection_metric="accuracy",
                augment=AugmentConfig(freq_masks=0, time_masks=0))
    base.update(kw)
    return TrainConfig(**base)


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


def test_interrupted_run_resumes_from_last_epoch(tmp_path):
    x, y = separable_task(64)
    ds = SpectrogramDataset(x, y)
    sig = run_signature("tiny", 1)

    class Interrupt(Exception):
        pass

    def stop_after_epoch_2(epoch, record):
        if epoch == 2:
            raise Interrupt

    torch.manual_seed(0)
    with pytest.raises(Interrupt):
        fit(TinyNet(), ds, ds, quiet_cfg(), num_classes=K, evaluate=accuracy_eval, checkpoint_dir=tmp_path,
            signature=sig, callbacks=[stop_after_epoch_2], progress=False)
    assert checkpoint.load(tmp_path / "last.pt")["epoch"] == 2
    seen = []
    res = fit(TinyNet(), ds, ds, quiet_cfg(), num_classes=K, evaluate=accuracy_eval, checkpoint_dir=tmp_path,
              signature=sig, callbacks=[lambda e, r: seen.append(e)], progress=False)
    assert res.resumed_from_epoch == 3 and seen == [3, 4, 5]
    assert [h["epoch"] for h in res.history] == list(range(6))

    # an uninterrupted run with the same seed ends with the same weights as interrupted + resumed
    torch.manual_seed(0)
    straight = fit(TinyNet(), ds, ds, quiet_cfg(), num_classes=K, evaluate=accuracy_eval, progress=False)
    resumed_last = checkpoint.load(tmp_path / "last.pt")["history"]
    assert [h["train_loss"] for h in straight.history] == pytest.approx([h["train_loss"] for h in resumed_last], rel=1e-5)


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
    res = fit(TinyNet(), ds, ds, quiet_cfg(epochs=30, lr=0.0), num_classes=K,
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


def test_spec_augment_masks_bands_with_the_mean():
    x = torch.arange(2 * 1 * 50 * 20, dtype=torch.float32).reshape(2, 1, 50, 20)
    cfg = AugmentConfig(freq_masks=1, freq_mask_frac=0.25, time_masks=1, time_mask_frac=0.2, fill="mean")
    out = spec_augment(x, cfg, torch.Generator().manual_seed(3))
    changed = out != x
    assert changed.any()
    for b in range(2):
        mean = x[b].mean()
        assert torch.allclose(out[b][changed[b]], mean.expand(int(changed[b].sum())))
        rows = changed[b, 0].all(dim=1).sum().item()  # fully masked frames
        cols = changed[b, 0].all(dim=0).sum().item()  # fully masked mel bins
        assert rows <= 10 and cols <= 5
    assert torch.equal(spec_augment(x, AugmentConfig(freq_masks=0, time_masks=0)), x)


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
