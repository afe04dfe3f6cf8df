"""One training step: weight moving average, optimizer choice, the loss's class weights, mixed
precision, and a loop that reads the device only every ``log_every`` steps."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from tiny_training import K, TinyNet, accuracy_eval, quiet_cfg, separable_task
from torch import nn

from lungpipe.training.averaging import WeightMovingAverage
from lungpipe.training.data import SpectrogramDataset
from lungpipe.training.device import amp_dtype, grad_scaler
from lungpipe.training.engine import NonFiniteLossError, fit
from lungpipe.training.optim import SGD_MOMENTUM, build_criterion, build_optimizer
from lungpipe.training.step import LossMeter, TrainStep
from lungpipe.util.typed_config import ConfigError


def _one_step(model, cfg, x, y):
    gen = torch.Generator().manual_seed(0)
    step = TrainStep(model, cfg, torch.device("cpu"), nn.CrossEntropyLoss(), gen, steps_per_epoch=1)
    model.train()
    step(x, y, LossMeter(torch.device("cpu"), 0))


def test_moving_average_lands_midway_between_before_and_after_the_step_bn_buffers_included():
    torch.manual_seed(0)
    x, y = torch.randn(8, 1, 20, 8) + 1.0, torch.arange(8) % 4
    model = TinyNet()
    before = copy.deepcopy(model.state_dict())
    plain = copy.deepcopy(model)
    _one_step(plain, quiet_cfg(lr=0.1), x, y)
    after = plain.state_dict()
    _one_step(model, quiet_cfg(lr=0.1, ma_update=True, ma_beta=0.5), x, y)
    averaged = model.state_dict()
    float_keys = [k for k, v in before.items() if v.is_floating_point()]
    assert {"bn.running_mean", "bn.running_var", "conv.weight", "head.bias"} <= set(float_keys)
    for key in float_keys:
        assert not torch.allclose(before[key], after[key]), key  # the step moved every tensor
        torch.testing.assert_close(averaged[key], 0.5 * before[key] + 0.5 * after[key], rtol=1e-6, atol=1e-7)
    # the integer counter keeps counting batches
    assert averaged["bn.num_batches_tracked"].item() == after["bn.num_batches_tracked"].item() == 1


def test_moving_average_with_another_beta_and_tied_weights_averages_each_tensor_once():
    lin = nn.Linear(3, 3)
    model = nn.Sequential(lin, nn.Linear(3, 3))
    model[1].weight = lin.weight  # tied
    ma = WeightMovingAverage(model, beta=0.25)
    before = lin.weight.detach().clone()
    ma.begin_step()
    with torch.no_grad():
        lin.weight.add_(4.0)
    ma.end_step()
    torch.testing.assert_close(lin.weight.detach(), 0.25 * before + 0.75 * (before + 4.0))


def test_optimizer_choice_and_hyperparameters():
    model = TinyNet()
    adam = build_optimizer(model, quiet_cfg(optimizer="adam", lr=0.01, weight_decay=0.1))
    adamw = build_optimizer(model, quiet_cfg(optimizer="adamw", lr=5e-5, weight_decay=1e-6))
    sgd = build_optimizer(model, quiet_cfg(optimizer="sgd", lr=0.2, weight_decay=0.0))
    assert type(adam) is torch.optim.Adam and type(adamw) is torch.optim.AdamW and type(sgd) is torch.optim.SGD
    g = adam.param_groups[0]
    assert (g["lr"], g["weight_decay"], g["betas"], g["eps"]) == (0.01, 0.1, (0.9, 0.999), 1e-8)
    assert (adamw.param_groups[0]["lr"], adamw.param_groups[0]["weight_decay"]) == (5e-5, 1e-6)
    assert not adamw.param_groups[0]["fused"]  # fused only on CUDA
    s = sgd.param_groups[0]
    assert (s["lr"], s["momentum"], s["nesterov"]) == (0.2, SGD_MOMENTUM, True)
    assert sum(p.numel() for p in adam.param_groups[0]["params"]) == sum(p.numel() for p in model.parameters())
    with pytest.raises(ConfigError, match=r"TrainConfig\.optimizer"):
        quiet_cfg(optimizer="lamb")


def test_class_weights_reach_the_loss_and_class_weighted_false_is_plain_cross_entropy():
    labels = np.array([0] * 6 + [1] * 2 + [2] * 1 + [3] * 1)
    logits = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 3.0]])
    y = torch.tensor([0, 1, 2, 3])
    nll = -torch.log_softmax(logits, dim=1)[torch.arange(4), y]
    plain = build_criterion(quiet_cfg(class_weighted=False), labels, 4)
    assert plain.weight is None
    assert plain(logits, y).item() == pytest.approx(nll.mean().item())
    weighted = build_criterion(quiet_cfg(class_weighted=True), labels, 4)
    w = 10 / (4 * np.array([6, 2, 1, 1]))  # inverse frequency ...
    w = w / w.mean()  # ... normalised to mean 1
    assert weighted.weight.numpy() == pytest.approx(w, rel=1e-6)
    expected = float((w * nll.numpy()).sum() / w.sum())  # weighted mean over the batch
    assert weighted(logits, y).item() == pytest.approx(expected, rel=1e-6)
    assert abs(expected - nll.mean().item()) > 0.05  # the two settings really differ on this batch


def test_amp_modes_map_to_dtypes_and_the_cpu_stays_float32():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert [amp_dtype(cpu, m) for m in ("auto", "bf16", "fp16", "off")] == [None] * 4
    assert [amp_dtype(cuda, m) for m in ("auto", "bf16", "fp16", "off")] == \
        [torch.bfloat16, torch.bfloat16, torch.float16, None]
    assert not grad_scaler(cpu, "fp16").is_enabled()
    with pytest.raises(ConfigError, match=r"TrainConfig\.amp: must be one of auto, bf16, fp16, off"):
        quiet_cfg(amp="fp32")
    x, y = separable_task(32)
    ds = SpectrogramDataset(x, y)
    res = fit(TinyNet(), ds, ds, quiet_cfg(epochs=1, amp="fp16"), num_classes=K, evaluate=accuracy_eval,
              progress=False)
    assert np.isfinite(res.history[0]["train_loss"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="float16 autocast and the scaler need CUDA")
def test_fp16_on_cuda_scales_the_loss_and_steps_the_fused_optimizer():
    model = TinyNet().cuda()
    cfg = quiet_cfg(amp="fp16")
    step = TrainStep(model, cfg, torch.device("cuda"), nn.CrossEntropyLoss(), torch.Generator(), 1)
    assert step.scaler.is_enabled() and step.optimizer.param_groups[0]["fused"]
    meter = LossMeter(torch.device("cuda"), 0)
    step(torch.randn(8, 1, 20, 8), torch.arange(8) % 4, meter)
    meter.check("cuda")


def test_the_loop_reads_the_device_only_every_log_every_steps(monkeypatch):
    """Every host read of a tensor made by lungpipe's own code during fit is counted (item, float,
    bool, tolist, cpu, numpy); torch's internals (e.g. the CPU optimizer's step counters) are not."""
    import sys

    x, y = separable_task(160)
    ds = SpectrogramDataset(x, y)
    reads: list[str] = []

    def counted(name):
        real = getattr(torch.Tensor, name)

        def wrapper(self, *a, **kw):
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if caller.startswith("lungpipe.training") and caller != "lungpipe.training.probabilities":
                reads.append(f"{caller}.{name}")
            return real(self, *a, **kw)

        return wrapper

    for name in ("item", "__float__", "__bool__", "tolist", "cpu", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, counted(name))
    res = fit(TinyNet(), ds, ds, quiet_cfg(epochs=2, batch_size=8, log_every=5), num_classes=K,
              evaluate=accuracy_eval, progress=False)
    monkeypatch.undo()
    assert len(res.history) == 2
    train_reads = [r for r in reads if not r.startswith("lungpipe.training.engine")]
    # per epoch of 20 steps: a non-finite check and a loss read every 5 steps, then the epoch's means
    # (one copy to the host, read as a list); the old loop read the loss 3 times per step
    assert len(train_reads) == 2 * (2 * (20 // 5) + 2), train_reads
    assert all(r.startswith("lungpipe.training.step.") for r in train_reads)


def test_a_non_finite_loss_names_its_epoch_and_step():
    class NanAtStep7(TinyNet):
        calls = 0

        def forward(self, x):
            out = super().forward(x)
            if self.training:
                NanAtStep7.calls += 1
                if NanAtStep7.calls == 8:
                    return out * float("nan")
            return out

    x, y = separable_task(160)
    ds = SpectrogramDataset(x, y)
    with pytest.raises(NonFiniteLossError, match=r"epoch 0 step 7 \(found by the check over steps 5-9\)"):
        fit(NanAtStep7(), ds, ds, quiet_cfg(epochs=1, batch_size=8, log_every=5), num_classes=K,
            evaluate=accuracy_eval, progress=False)
