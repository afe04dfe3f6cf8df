"""ResNet50 and CNN6: parameter counts derived by hand (and checked against the published ones),
paper-size forward, and pretrained loading of torchvision / PANNs style checkpoints."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from torchvision.models.resnet import Bottleneck, ResNet

from lungpipe.models import count_parameters, create_model
from lungpipe.models import resnet as resnet_module
from lungpipe.models.cnn6 import build_cnn6_backbone
from lungpipe.models.pretrained import PretrainedError, PretrainedNotFoundError
from lungpipe.models.registry import resolve_config
from lungpipe.models.resnet import BottleneckBlock, build_resnet50_backbone, load_resnet_pretrained

# --- ResNet50 ---------------------------------------------------------------------------------


def _bottleneck_resnet_count(layers, width: int, in_channels: int, classes: int) -> int:
    """Parameters of a bottleneck ResNet: stem conv + BN, stages of 1×1 / 3×3 / 1×1 convs with BNs
    (a 1×1 conv + BN shortcut in each stage's first block), a linear head."""
    total = in_channels * width * 7 * 7 + 2 * width
    channels = width
    for i, blocks in enumerate(layers):
        planes = width * 2**i
        out = 4 * planes
        for b in range(blocks):
            cin = channels if b == 0 else out
            total += cin * planes + 2 * planes + 9 * planes * planes + 2 * planes + planes * out + 2 * out
            if b == 0:
                total += cin * out + 2 * out
        channels = out
    return total + channels * classes + classes


def test_reference_formula_reproduces_torchvision_published_resnet50_count():
    # torchvision documents 25,557,032 parameters for ResNet50 (3-channel input, 1000 classes).
    assert _bottleneck_resnet_count([3, 4, 6, 3], 64, 3, 1000) == 25_557_032


def test_resnet50_paper_preset_parameter_count():
    with torch.device("meta"):
        model = create_model("resnet50", {"preset": "paper", "num_classes": 4})
    reference = _bottleneck_resnet_count([3, 4, 6, 3], 64, 1, 4)
    # 25,557,032 − 2·64·7·7 (stem 3 → 1 channel) − 2,049,000 (1000-way fc) + 8,196 (4-way head)
    assert reference == 23_509_956
    assert count_parameters(model) == reference
    assert abs(count_parameters(model) - 23.5e6) / 23.5e6 < 0.05


def test_resnet50_trunk_has_torchvision_names_and_shapes():
    with torch.device("meta"):
        ours = create_model("resnet50", {"preset": "paper"}).backbone.state_dict()
        theirs = torchvision.models.resnet50(weights=None).state_dict()
    theirs = {k: v for k, v in theirs.items() if not k.startswith("fc.")}
    assert set(ours) == set(theirs)
    differing = [k for k in ours if ours[k].shape != theirs[k].shape]
    assert differing == ["conv1.weight"] and ours["conv1.weight"].shape == (64, 1, 7, 7)


def test_resnet50_paper_forward_shape():
    torch.manual_seed(0)
    model = create_model("resnet50", {"preset": "paper", "num_classes": 4}).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 1, 798, 128))
    assert out.shape == (1, 4) and torch.isfinite(out).all()


def test_resnet_small_preset_handles_minimum_input_and_backbone_channels():
    model = create_model("resnet50", {"preset": "small", "n_frames": 64, "n_mels": 32}).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 64, 32)).shape == (2, 4)
    cfg = resolve_config("resnet50", {"preset": "small"})
    backbone, dim = build_resnet50_backbone(cfg, in_channels=3)
    assert dim == 16 * 8 * 4
    assert backbone(torch.randn(2, 3, 64, 32)).shape == (2, dim)


def _seeded_build(build, seed: int):
    torch.manual_seed(seed)
    module = build()
    return module, torch.rand(4)  # the RNG state after the build: equal only if init drew the same numbers


def _outputs(module, x: torch.Tensor):
    """Eval and train-mode outputs and the parameter gradients of a train-mode step."""
    module.eval()
    with torch.no_grad():
        evaluated = module(x)
    module.train()
    out = module(x)
    out.square().sum().backward()
    return evaluated, out.detach(), {n: p.grad for n, p in module.named_parameters()}


def _assert_same_module(ours, theirs, x: torch.Tensor) -> None:
    (ours, ours_rng), (theirs, theirs_rng) = ours, theirs
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]
    for key, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key
    assert torch.equal(ours_rng, theirs_rng)
    for a, b in zip(_outputs(ours, x), _outputs(theirs, x)):
        if isinstance(a, dict):
            assert a.keys() == b.keys()
            assert all((a[k] is None and b[k] is None) or torch.equal(a[k], b[k]) for k in a)
        else:
            assert torch.equal(a, b)


@pytest.mark.parametrize("in_ch, planes, stride, shortcut", [(16, 16, 1, True), (64, 16, 1, False), (64, 32, 2, True)])
def test_bottleneck_block_equals_torchvision_bottleneck(in_ch, planes, stride, shortcut):
    def downsample():
        return torch.nn.Sequential(torch.nn.Conv2d(in_ch, planes * 4, 1, stride=stride, bias=False),
                                   torch.nn.BatchNorm2d(planes * 4)) if shortcut else None

    x = torch.randn(2, in_ch, 12, 10)
    _assert_same_module(_seeded_build(lambda: BottleneckBlock(in_ch, planes, stride, downsample()), 3),
                        _seeded_build(lambda: Bottleneck(in_ch, planes, stride, downsample()), 3), x)


@pytest.mark.parametrize("arch, config", [
    ("resnet50", {"preset": "small"}),
    ("resnet50", {"preset": "small", "layers": [2, 1, 2, 1]}),
    ("add4rsc_resnet50", {"preset": "small"}),
])
def test_resnet_models_build_as_with_torchvision_blocks(arch, config, monkeypatch):
    """Same seed, same weights, same outputs and gradients as the network built from torchvision's
    Bottleneck (what lungpipe used before its own block)."""
    config = {**config, "num_classes": 4, "n_frames": 64, "n_mels": 32}
    x = torch.randn(2, 1, 64, 32)
    ours = _seeded_build(lambda: create_model(arch, config), 1)
    monkeypatch.setattr(resnet_module, "BottleneckBlock", Bottleneck)
    _assert_same_module(ours, _seeded_build(lambda: create_model(arch, config), 1), x)


def test_imagenet_alias_names_torchvisions_weights(monkeypatch):
    fetched = []

    def fake_download(url):
        fetched.append(url)
        raise PretrainedError("offline")

    monkeypatch.setattr(resnet_module, "download_state_dict", fake_download)
    backbone, _ = build_resnet50_backbone(resolve_config("resnet50", {"preset": "small"}))
    for alias, weights in (("imagenet", "IMAGENET1K_V1"), ("IMAGENET1K_V2", "IMAGENET1K_V2")):
        with pytest.raises(PretrainedError, match="offline"):
            load_resnet_pretrained(backbone, alias)
        assert fetched.pop() == torchvision.models.ResNet50_Weights[weights].url


def test_the_model_zoo_loads_neither_torchvision_nor_dynamo():
    """torchvision's import pulls in torch._dynamo (~2.5 s): loading the registry (every model
    module) and building a ResNet need neither (predicting with a CNN then starts that much sooner;
    a training still loads torch._dynamo, through torch.optim)."""
    code = ("import sys; from lungpipe.models import create_model, model_names; model_names(); "
            "create_model('resnet50', {'preset': 'small'}); "
            "print(sorted(m for m in ('torchvision', 'torch._dynamo') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"


@pytest.fixture()
def torchvision_checkpoint(tmp_path):
    """A genuine torchvision ResNet (bottleneck, one block per stage): 3-channel stem, 1000-way fc."""
    torch.manual_seed(3)
    net = ResNet(Bottleneck, [1, 1, 1, 1])
    with torch.no_grad():  # make BN statistics non-trivial so that copying them is checked
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    path = tmp_path / "resnet_tv.pth"
    torch.save(net.state_dict(), path)
    return path, net.state_dict()


def test_torchvision_checkpoint_loads_with_averaged_stem_and_fresh_head(torchvision_checkpoint):
    path, saved = torchvision_checkpoint
    torch.manual_seed(0)
    model = create_model(
        "resnet50", {"preset": "small", "base_width": 64, "num_classes": 4, "pretrained": str(path)}
    )
    loaded = model.backbone.state_dict()
    assert torch.allclose(loaded["conv1.weight"], saved["conv1.weight"].mean(dim=1, keepdim=True))
    for key, value in saved.items():
        if key.startswith("fc.") or key == "conv1.weight":
            continue
        assert torch.equal(loaded[key], value), key
    assert model.head.weight.shape == (4, 2048)
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 1, 64, 32)).shape == (1, 4)


def test_resnet_checkpoint_of_other_width_or_depth_names_the_keys(torchvision_checkpoint, tmp_path):
    path, saved = torchvision_checkpoint
    with pytest.raises(
        PretrainedError, match=r"shape mismatches \(\d+\): bn1\.bias \(checkpoint \(64,\), model \(16,\)\)"
    ):
        create_model("resnet50", {"preset": "small", "pretrained": str(path)})
    deeper = dict(saved)
    deeper["layer1.1.conv1.weight"] = torch.zeros(64, 256, 1, 1)
    torch.save(deeper, tmp_path / "deeper.pth")
    with pytest.raises(PretrainedError, match=r"unexpected keys \(1\): layer1\.1\.conv1\.weight"):
        create_model(
            "resnet50", {"preset": "small", "base_width": 64, "pretrained": str(tmp_path / "deeper.pth")}
        )


def test_resnet_missing_checkpoint_is_an_error(tmp_path):
    with pytest.raises(PretrainedNotFoundError, match="does not exist"):
        create_model("resnet50", {"preset": "small", "pretrained": str(tmp_path / "imagenet.pth")})


# --- CNN6 -------------------------------------------------------------------------------------


def _cnn6_reference_count(n_mels: int, channels, embed: int, classes: int, bn0: bool = True) -> int:
    """CNN6: bn0 over mel bins (PANNs only), 5×5 convs without bias + BN, fc1 (with bias; embed 0:
    none, as patch-mix CL), head."""
    total = 2 * n_mels if bn0 else 0
    cin = 1
    for c in channels:
        total += 25 * cin * c + 2 * c
        cin = c
    if embed:
        total += cin * embed + embed
        cin = embed
    return total + cin * classes + classes


def test_cnn6_panns_preset_parameter_count():
    # PANNs' CNN6 (64 mel bins, 527 AudioSet classes) is published as 4.8 M parameters.
    panns = _cnn6_reference_count(64, [64, 128, 256, 512], 512, 527)
    assert panns == 4_837_455 and abs(panns - 4.8e6) / 4.8e6 < 0.05
    with torch.device("meta"):
        as_panns = create_model("cnn6", {"preset": "panns", "n_mels": 64, "num_classes": 527})
        model = create_model("cnn6", {"preset": "panns", "num_classes": 4})
    assert count_parameters(as_panns) == panns
    reference = _cnn6_reference_count(128, [64, 128, 256, 512], 512, 4)
    assert reference == 4_569_284
    assert count_parameters(model) == reference


def test_cnn6_paper_preset_is_patch_mix_cnn6():
    with torch.device("meta"):
        model = create_model("cnn6", {"preset": "paper", "num_classes": 4})
    # no input BatchNorm, no fc1: four conv blocks and a 512 → 4 head
    reference = _cnn6_reference_count(128, [64, 128, 256, 512], 0, 4, bn0=False)
    assert reference == 4_306_372
    assert count_parameters(model) == reference
    assert model.backbone.bn0 is None and model.backbone.fc1 is None and model.backbone.feature_dim == 512
    assert not [m for m in model.modules() if isinstance(m, torch.nn.Dropout) and m.p > 0]
    assert model.backbone.prefers_channels_last


def test_cnn6_paper_preset_feeds_the_pooled_map_to_the_head():
    torch.manual_seed(0)
    model = create_model("cnn6", {"preset": "paper", "n_frames": 64, "n_mels": 32, "channels": [4, 8, 8, 8]}).eval()
    x = torch.randn(2, 1, 64, 32) * 3 + 1
    with torch.no_grad():
        h = x  # no bn0: the first conv sees the input as it is
        for block in model.backbone.blocks:
            h = block(h)
        per_time = h.mean(dim=3)
        expected = model.head(per_time.amax(dim=2) + per_time.mean(dim=2))
        assert torch.allclose(model(x), expected, atol=1e-5)


def test_panns_checkpoint_loads_into_the_paper_cnn6_without_bn0_and_fc1(tmp_path):
    checkpoint, ours = _panns_checkpoint()
    torch.save(checkpoint, tmp_path / "Cnn6_mAP=0.343.pth")
    model = create_model("cnn6", {"preset": "paper", "n_frames": 64, "n_mels": 64, "channels": [8, 16, 32, 64],
                                  "pretrained": str(tmp_path / "Cnn6_mAP=0.343.pth")})
    loaded = model.backbone.state_dict()
    assert not any(k.startswith(("bn0.", "fc1.")) for k in loaded)
    for key in loaded:
        assert torch.equal(loaded[key], ours[key]), key


def test_cnn6_paper_forward_shape():
    torch.manual_seed(0)
    model = create_model("cnn6", {"preset": "paper", "num_classes": 4}).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 1, 798, 128))
    assert out.shape == (1, 4) and torch.isfinite(out).all()


def test_cnn6_pools_max_plus_mean_over_time():
    # What reaches fc1 must be max over time + mean over time of the last block's map after
    # averaging its frequency axis (PANNs' clip-level pooling).
    cfg = resolve_config(
        "cnn6", {"preset": "small", "n_frames": 64, "n_mels": 32, "dropout": 0.0, "block_dropout": 0.0}
    )
    backbone, dim = build_cnn6_backbone(cfg)
    backbone.eval()
    seen = {}
    backbone.fc1.register_forward_hook(lambda m, inp, out: seen.setdefault("pooled", inp[0]))
    captured = {}
    backbone.blocks[-1].register_forward_hook(lambda m, inp, out: captured.setdefault("map", out))
    with torch.no_grad():
        emb = backbone(torch.randn(2, 1, 64, 32))
    per_time = captured["map"].mean(dim=3)
    assert torch.allclose(seen["pooled"], per_time.amax(dim=2) + per_time.mean(dim=2))
    assert emb.shape == (2, dim)


def _panns_checkpoint(n_mels: int = 64) -> tuple[dict, dict[str, torch.Tensor]]:
    """A checkpoint in PANNs' layout built from a small CNN6 trunk, plus the trunk's own state."""
    cfg = resolve_config("cnn6", {"preset": "small", "n_frames": 64, "n_mels": n_mels})
    torch.manual_seed(5)
    trunk, _ = build_cnn6_backbone(cfg)
    with torch.no_grad():
        for m in trunk.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.running_mean.uniform_(-1, 1)
    ours = trunk.state_dict()
    panns = {}
    for key, value in ours.items():
        key = re.sub(r"^blocks\.(\d+)\.conv\.", lambda m: f"conv_block{int(m.group(1)) + 1}.conv1.", key)
        key = re.sub(r"^blocks\.(\d+)\.bn\.", lambda m: f"conv_block{int(m.group(1)) + 1}.bn1.", key)
        panns[key] = value
    panns["fc_audioset.weight"] = torch.zeros(527, 128)
    panns["fc_audioset.bias"] = torch.zeros(527)
    panns["spectrogram_extractor.stft.conv_real.weight"] = torch.zeros(257, 1, 512)
    panns["logmel_extractor.melW"] = torch.zeros(257, 64)
    return {"iteration": 660000, "model": panns}, ours


def test_panns_checkpoint_loads_into_cnn6(tmp_path):
    checkpoint, ours = _panns_checkpoint()
    torch.save(checkpoint, tmp_path / "Cnn6_mAP=0.343.pth")
    model = create_model(
        "cnn6",
        {"preset": "small", "n_frames": 64, "n_mels": 64, "pretrained": str(tmp_path / "Cnn6_mAP=0.343.pth")},
    )
    loaded = model.backbone.state_dict()
    assert set(loaded) == set(ours)
    for key, value in ours.items():
        assert torch.equal(loaded[key], value), key


def test_panns_checkpoint_with_other_mel_count_keeps_fresh_bn0(tmp_path, caplog):
    checkpoint, ours = _panns_checkpoint(n_mels=64)
    torch.save(checkpoint, tmp_path / "cnn6.pth")
    with caplog.at_level(logging.WARNING, logger="lungpipe.models.pretrained"):
        model = create_model(
            "cnn6",
            {"preset": "small", "n_frames": 64, "n_mels": 128, "pretrained": str(tmp_path / "cnn6.pth")},
        )
    assert "bn0 keeps its fresh initialisation" in caplog.text
    loaded = model.backbone.state_dict()
    assert torch.equal(loaded["bn0.weight"], torch.ones(128))
    assert torch.equal(loaded["blocks.2.conv.weight"], ours["blocks.2.conv.weight"])


def test_cnn6_mismatching_checkpoint_names_the_keys(tmp_path):
    checkpoint, _ = _panns_checkpoint()
    del checkpoint["model"]["fc1.bias"]
    torch.save(checkpoint, tmp_path / "broken.pth")
    with pytest.raises(PretrainedError, match=r"missing keys \(1\): fc1\.bias"):
        create_model(
            "cnn6",
            {"preset": "small", "n_frames": 64, "n_mels": 64, "pretrained": str(tmp_path / "broken.pth")},
        )
    torch.save(_panns_checkpoint()[0], tmp_path / "small.pth")
    with pytest.raises(PretrainedError, match=r"shape mismatches \(\d+\): blocks\.0\.bn\.bias"):
        create_model(
            "cnn6",
            {"preset": "paper", "n_frames": 64, "n_mels": 64, "pretrained": str(tmp_path / "small.pth")},
        )


def test_cnn6_missing_checkpoint_is_an_error(tmp_path):
    with pytest.raises(PretrainedNotFoundError):
        create_model("cnn6", {"preset": "small", "pretrained": str(tmp_path / "Cnn6_mAP=0.343.pth")})
