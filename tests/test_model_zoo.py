"""Contract checks every registered architecture must pass (small preset, CPU).

Shapes, gradient flow to every parameter, memorising a batch of 16 spectrograms, and identical
outputs after a save/reload. Architecture-specific checks (parameter counts at the paper preset,
pretrained loading, ADD4RSC's losses, MRINet's branch shapes) live in each model's own test file.
"""

from __future__ import annotations

import io

import pytest
import torch

from lungpipe.models import LungModel, create_model, model_names

N_FRAMES, N_MELS, N_CLASSES = 128, 64, 4


def _small(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, {"preset": "small", "num_classes": N_CLASSES, "n_frames": N_FRAMES, "n_mels": N_MELS})


def _names() -> list[str]:
    names = model_names()
    return names or ["<none registered>"]


@pytest.fixture(params=_names())
def name(request) -> str:
    if request.param == "<none registered>":
        pytest.skip("no architecture registered")
    return request.param


def test_forward_shape_and_base_class(name):
    model = _small(name).eval()
    assert isinstance(model, LungModel)
    with torch.no_grad():
        out = model(torch.randn(3, 1, N_FRAMES, N_MELS))
    assert out.shape == (3, N_CLASSES)
    assert torch.isfinite(out).all()


def test_gradients_reach_every_parameter(name):
    model = _small(name).train()
    x = torch.randn(4, 1, N_FRAMES, N_MELS)
    y = torch.tensor([0, 1, 2, 3])
    out = model.training_loss(x, y, torch.nn.functional.cross_entropy)
    out.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]
    assert not missing, f"no finite gradient for: {missing[:10]}"
    dead = [n for n, p in model.named_parameters() if p.requires_grad and p.grad.abs().sum() == 0]
    assert len(dead) <= len(list(model.parameters())) // 10, f"all-zero gradients for: {dead[:10]}"


def test_memorises_a_batch_of_16(name):
    torch.manual_seed(1)
    model = _small(name)
    x = torch.randn(16, 1, N_FRAMES, N_MELS)
    y = torch.arange(16) % N_CLASSES
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    acc = 0.0
    for step in range(200):
        model.train()
        opt.zero_grad()
        model.training_loss(x, y, torch.nn.functional.cross_entropy).loss.backward()
        opt.step()
        if step % 10 == 9:
            model.eval()
            with torch.no_grad():
                acc = (model(x).argmax(1) == y).float().mean().item()
            if acc == 1.0:
                break
    assert acc == 1.0, f"{name} reached only {acc:.2f} training accuracy"


def test_save_and_reload_gives_identical_outputs(name):
    model = _small(name).eval()
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    clone = _small(name)
    torch.manual_seed(123)  # a different init must be overwritten by the loaded state
    for p in clone.parameters():
        torch.nn.init.normal_(p)
    clone.load_state_dict(torch.load(buf, weights_only=True))
    clone.eval()
    x = torch.randn(2, 1, N_FRAMES, N_MELS)
    with torch.no_grad():
        assert torch.equal(model(x), clone(x))


# --- registry helpers the engine and the report use --------------------------------------------


def test_channels_last_marks_the_cnns_and_keeps_outputs(name):
    from lungpipe.models import channels_last_modules, to_channels_last

    model = _small(name).eval()
    x = torch.randn(2, 1, N_FRAMES, N_MELS)
    with torch.no_grad():
        before = model(x)
    parts = channels_last_modules(model)
    cnn = name in ("cnn6", "resnet50", "mrinet", "add4rsc_resnet50")
    assert bool(parts) == cnn, [type(p).__name__ for p in parts]
    assert model.prefers_channels_last == cnn  # what the engine reads
    assert to_channels_last(model) == len(parts)
    for part in parts:
        conv = next(m for m in part.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[-1] > 1)
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert torch.allclose(model(x), before, atol=1e-4)


def test_every_preset_has_an_honest_one_line_summary(name):
    import re

    from lungpipe.cli.models import parameter_count
    from lungpipe.models import get_spec, preset_summary
    from lungpipe.util.typed_config import ConfigError

    for preset in get_spec(name).presets:
        line = preset_summary(name, preset)
        assert line.startswith(f"{name} {preset} preset: ") and "\n" not in line
        for stated in re.findall(r"(\d+(?:\.\d+)?) M\b", line):  # a size it states is the real one
            assert float(stated) == round(parameter_count(name, preset) / 1e6, 1), line
    with pytest.raises(ConfigError, match="no preset 'huge'"):
        preset_summary(name, "huge")
