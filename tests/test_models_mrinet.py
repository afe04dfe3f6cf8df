"""MRINet: branch shapes at the paper geometry, parameter counts derived by hand from the
architecture, the folding/regrouping of the time branch, the shifted-window mask, the branch
attention formula, geometry errors and weight loading. The registry contract (gradients,
memorising a batch, save/reload) is in test_model_zoo.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lungpipe.models import count_parameters, create_model, resolve_config
from lungpipe.models.mrinet import MRINetConfig, plan_geometry
from lungpipe.models.mrinet.fusion import BranchAttention
from lungpipe.models.mrinet.swin import SwinBlock
from lungpipe.models.mrinet.time_branch import fold_spectrogram, regroup_tokens
from lungpipe.models.pretrained import PretrainedError, PretrainedNotFoundError
from lungpipe.util.typed_config import ConfigError

K = 4


def _small(**overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(
        "mrinet", {"preset": "small", "num_classes": K, "n_frames": 128, "n_mels": 64, **overrides}
    )


# --- paper geometry -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def paper_outputs():
    torch.manual_seed(0)
    model = create_model("mrinet", {"preset": "paper", "num_classes": K}).eval()
    with torch.no_grad():  # 1001 frames (10 s at a 10 ms hop) are resized to the model's 1024
        return model.branch_outputs(torch.randn(1, 1, 1001, 64))


def test_paper_branch_shapes(paper_outputs):
    assert paper_outputs.freq.shape == (1, 512, 2, 32)
    assert paper_outputs.time.shape == (1, 512, 2, 32)
    assert paper_outputs.weights.shape == (1, 2, 512)
    assert paper_outputs.class_map.shape == (1, K, 16)
    assert paper_outputs.logits.shape == (1, K)
    assert torch.allclose(paper_outputs.logits, paper_outputs.class_map.mean(dim=2))
    assert torch.isfinite(paper_outputs.logits).all()


def test_paper_geometry_folds_into_a_square_image():
    geo = plan_geometry(resolve_config("mrinet", {"preset": "paper"}))
    assert geo.chunks == 4 and geo.image == (256, 256)
    assert [s.grid for s in geo.swin_stages] == [(64, 64), (32, 32), (16, 16), (8, 8)]
    assert [s.dim for s in geo.swin_stages] == [96, 192, 384, 768]
    # the last stage's 8×8 grid is one window: no shift there
    assert [s.shift for s in geo.swin_stages] == [4, 4, 4, 0]


# --- parameter counts -----------------------------------------------------------------------


def _attention_parameters(c: int) -> int:
    """The branch attention of the release: Conv1d C→C (k3, bias) + BN1d(C), one Conv1d C→C (k3,
    bias) per branch."""
    return 3 * (3 * c * c + c) + 2 * c


def _expected_parameters(cfg: MRINetConfig) -> int:
    """MRINet's parameter count from its definition, term by term."""
    geo = plan_geometry(cfg)
    n = 2 * cfg.n_mels if cfg.mel_batchnorm else 0
    # frequency branch: stem conv (bias) + BN; per block five pre-activated convs with bias:
    # 1×1 (2w→w) ×2, 3×3 (w→w) ×2, shortcut 1×1 (2w→w) = 24 w² weights + 5 w biases, and BNs over
    # 2w, w, 2w, w, 2w channels = 16 w; transitions BN + 1×1 with bias
    w = cfg.widths
    n += 49 * w[0] + w[0] + 2 * w[0]
    n += sum(b * (24 * c * c + 5 * c + 16 * c) for b, c in zip(cfg.blocks, w))
    n += sum(2 * w[i] + w[i] * w[i + 1] + w[i + 1] for i in range(len(w) - 1))
    n += w[-1] * cfg.fused_channels + cfg.fused_channels if w[-1] != cfg.fused_channels else 0
    n += 2 * geo.freq_map[1]  # LayerNorm over time
    # time branch: patch embedding conv + LN; per block 2 LNs, qkv, proj, MLP, bias table; merging
    d = cfg.swin_dim
    n += cfg.swin_patch**2 * d + d + 2 * d
    for s in geo.swin_stages:
        c, hidden = s.dim, int(s.dim * cfg.swin_mlp_ratio)
        per_block = 4 * c + (3 * c * c + 3 * c) + (c * c + c) + (2 * c * hidden + hidden + c)
        per_block += (2 * s.window - 1) ** 2 * s.heads
        n += s.depth * per_block
    n += sum(8 * s.dim + 8 * s.dim * s.dim for s in geo.swin_stages[:-1])
    last = geo.swin_stages[-1].dim
    n += 2 * last + 9 * last * cfg.fused_channels + cfg.fused_channels
    n += _attention_parameters(cfg.fused_channels)
    # semantic head: (freq × 3) conv C→h, (1 × 3) conv h→K, both with bias
    f, h = cfg.fused_channels, cfg.head_channels
    n += f * h * geo.freq_map[0] * 3 + h + h * cfg.num_classes * 3 + cfg.num_classes
    return n


def _meta_model(preset: str, **overrides) -> torch.nn.Module:
    with torch.device("meta"):
        return create_model("mrinet", {"preset": preset, **overrides})


@pytest.mark.parametrize("preset", ["paper", "paper67m", "small"])
def test_parameter_count_matches_the_architecture(preset):
    model = _meta_model(preset)
    assert count_parameters(model) == _expected_parameters(model.config)


def test_paper_preset_has_the_released_parameter_count():
    model = _meta_model("paper", num_classes=4)
    # the released network's trainable parameters at 4 classes (DESIGN §3)
    assert count_parameters(model, trainable_only=True) == 119_733_980
    # lungpipe's own ~67 M approximation: stage 4 cut to 2 blocks (DESIGN §3: 69.32 M)
    assert round(count_parameters(_meta_model("paper67m", num_classes=4)) / 1e4) == 6932


def test_branch_attention_count_follows_its_description():
    model = _meta_model("paper")
    # Conv1d(512→512, k3, p1, bias) + BN1d(512) + one Conv1d(512→512, k3, bias) per branch
    assert count_parameters(model.attention) == 3 * (512 * 512 * 3 + 512) + 2 * 512 == 2_361_856


def test_swin_tiny_part_has_the_swin_tiny_size():
    model = _meta_model("paper")
    swin = count_parameters(model.time_branch.swin)
    # Swin-T backbone ≈ 27.5 M (ImageNet's 28.3 M less its 1000-class head and 2 of 3 input channels)
    assert 27.0e6 < swin < 28.0e6


# --- time branch folding --------------------------------------------------------------------


def test_fold_places_frames_and_regroup_restores_time_order():
    frames, mels, chunks, patch = 32, 8, 4, 2
    t = torch.arange(frames).view(1, 1, frames, 1).expand(1, 1, frames, mels)
    f = torch.arange(mels).view(1, 1, 1, mels).expand(1, 1, frames, mels)
    x = (100 * t + f).float()
    image = fold_spectrogram(x, chunks)
    cols = frames // chunks
    assert image.shape == (1, 1, chunks * mels, cols)
    row = torch.arange(chunks * mels).view(-1, 1)
    col = torch.arange(cols).view(1, -1)
    expected = 100 * ((row // mels) * cols + col) + row % mels  # (k·F+f, j) ↔ frame k·cols+j, bin f
    assert torch.equal(image[0, 0], expected.float())
    # patch tokens of the folded image, regrouped, equal the patches of the unfolded (freq, time) map
    tokens = F.avg_pool2d(image, patch).flatten(2).transpose(1, 2)
    grid = (chunks * mels // patch, cols // patch)
    regrouped = regroup_tokens(tokens, grid, chunks)
    assert torch.equal(regrouped, F.avg_pool2d(x.transpose(2, 3), patch))


def test_shifted_windows_keep_wrapped_regions_apart():
    torch.manual_seed(0)
    x = torch.randn(1, 64, 8)
    bump = torch.zeros_like(x)
    bump[0, 0] = 3 * torch.randn(8)  # token at grid (0, 0); not constant, which LayerNorm would erase

    def reach(shift: int) -> torch.Tensor:
        block = SwinBlock(8, 2, (8, 8), window=4, shift=shift, mlp_ratio=2.0, drop_path=0.0).eval()
        with torch.no_grad():
            return ((block(x + bump) - block(x)).abs().amax(-1) > 1e-6).view(8, 8)

    plain = torch.zeros(8, 8, dtype=torch.bool)
    plain[:4, :4] = True  # its own 4×4 window
    assert torch.equal(reach(0), plain)
    # rolled by -2, token (0, 0) sits in the bottom-right window beside tokens from rows/cols 6–7;
    # the mask keeps it to the tokens that came from its own corner (rows and cols 0–1)
    shifted = torch.zeros(8, 8, dtype=torch.bool)
    shifted[:2, :2] = True
    assert torch.equal(reach(2), shifted)


# --- branch attention ----------------------------------------------------------------------


def test_branch_attention_follows_the_released_formula():
    torch.manual_seed(0)
    att = BranchAttention(channels=16)
    with torch.no_grad():
        att.bn.running_mean.uniform_(-0.5, 0.5)
        att.bn.running_var.uniform_(0.5, 2.0)
        att.bn.weight.uniform_(0.5, 1.5)
        att.bn.bias.uniform_(-0.2, 0.2)
    att.eval()
    freq, time = torch.randn(3, 16, 2, 5), torch.randn(3, 16, 2, 5)
    with torch.no_grad():
        fused, alpha = att.fuse(freq, time)
        s = (freq + time).mean(dim=(2, 3))
        bn = att.bn
        # a length-1 sequence with padding 1: only the centre tap (index 1) of each kernel meets data
        z = torch.relu(
            (s @ att.squeeze.weight[:, :, 1].T + att.squeeze.bias - bn.running_mean)
            / torch.sqrt(bn.running_var + bn.eps) * bn.weight
            + bn.bias
        )
        lf = z @ att.freq_logits.weight[:, :, 1].T + att.freq_logits.bias
        lt = z @ att.time_logits.weight[:, :, 1].T + att.time_logits.bias
        a_f = torch.exp(lf) / (torch.exp(lf) + torch.exp(lt))
    assert alpha.shape == (3, 2, 16)
    assert torch.allclose(alpha.sum(dim=1), torch.ones(3, 16))
    assert torch.allclose(alpha[:, 0], a_f, atol=1e-6)
    expected = a_f[..., None, None] * freq + (1 - a_f)[..., None, None] * time
    assert torch.allclose(fused, expected, atol=1e-6)


@pytest.mark.parametrize("silenced", ["time", "freq"])
def test_a_silent_branch_leaves_alpha_times_the_other(silenced):
    model = _small().eval()
    with torch.no_grad():
        if silenced == "time":  # the 3×3 conv to the fused width outputs exactly zero
            model.time_branch.to_fused.weight.zero_()
            model.time_branch.to_fused.bias.zero_()
        else:  # the closing LayerNorm outputs exactly zero
            model.frequency_branch.norm.weight.zero_()
            model.frequency_branch.norm.bias.zero_()
        out = model.branch_outputs(torch.randn(2, 1, 128, 64))
    silent, other, idx = (out.time, out.freq, 0) if silenced == "time" else (out.freq, out.time, 1)
    assert torch.count_nonzero(silent) == 0 and torch.count_nonzero(other) > 0
    alpha = out.weights[:, idx]
    assert torch.allclose(out.weights.sum(dim=1), torch.ones_like(alpha))
    assert ((alpha > 0) & (alpha < 1)).all()
    assert torch.allclose(out.fused, alpha[..., None, None] * other)
    assert not torch.allclose(out.fused, other)


# --- geometry from the config --------------------------------------------------------------


@pytest.mark.parametrize("frames", [128, 400])
def test_small_preset_takes_any_length(frames):
    model = _small(n_frames=frames).eval()
    with torch.no_grad():
        out = model.branch_outputs(torch.randn(2, 1, frames, 64))
    assert out.freq.shape == out.time.shape == (2, 64, 2, 6)  # 192 frames × 64 mels, shrunk 32×
    assert out.class_map.shape == (2, K, 3)


def test_128_mel_bins_fold_into_one_chunk():
    model = _small(n_mels=128, target_frames=256).eval()
    assert model.geometry.chunks == 1 and model.geometry.image == (128, 256)
    with torch.no_grad():
        out = model.branch_outputs(torch.randn(2, 1, 100, 128))
    assert out.freq.shape == out.time.shape == (2, 64, 4, 8)
    assert out.logits.shape == (2, K)


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"n_mels": 60}, "n_mels"),  # 60 is not a multiple of patch·2³ = 32
        ({"swin_patch": 2}, "must match"),  # time branch map twice the frequency branch's
        ({"swin_heads": [3, 2, 4]}, "not divisible by its 3 heads"),
        ({"target_frames": 16}, "too small"),
        ({"fold_chunks": 3}, "fold_chunks"),
        ({"blocks": [1, 1, 1]}, "same length"),
    ],
)
def test_impossible_geometries_are_config_errors(overrides, words):
    with pytest.raises(ConfigError, match=words):
        _small(**{"target_frames": 256, **overrides})  # 256 frames: a 128×128 image in 2 chunks


@pytest.mark.parametrize("pool, reduce", [("mean", torch.mean), ("max", torch.amax)])
def test_logits_pool_the_class_map_over_time(pool, reduce):
    model = _small(time_pool=pool).eval()
    with torch.no_grad():
        out = model.branch_outputs(torch.randn(3, 1, 128, 64))
    assert torch.equal(out.logits, reduce(out.class_map, dim=2))
    assert not torch.equal(out.logits, (torch.amax if pool == "mean" else torch.mean)(out.class_map, dim=2))


def test_the_paper_preset_averages_over_time_and_small_takes_the_max():
    assert resolve_config("mrinet", {"preset": "paper"}).time_pool == "mean"
    assert resolve_config("mrinet", {"preset": "small"}).time_pool == "max"
    with pytest.raises(ConfigError, match="time_pool"):
        _small(time_pool="median")


def test_wrong_mel_count_at_forward_is_a_clear_error():
    model = _small()
    with pytest.raises(ValueError, match=r"\(batch, 1, frames, 64\)"):
        model(torch.randn(2, 1, 128, 128))


# --- weights --------------------------------------------------------------------------------


def test_pretrained_missing_file_is_an_error(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(PretrainedNotFoundError, match="nope.pt"):
        _small(pretrained=str(missing))
    with pytest.raises(PretrainedNotFoundError, match="nope.pt"):
        _small(time_pretrained=str(missing))
    _small(pretrained="none", time_pretrained=None)  # explicit random init is fine


def test_pretrained_loads_every_weight(tmp_path):
    source = _small().eval()
    with torch.no_grad():  # move the BN statistics off their defaults, so buffers are checked too
        source.frequency_branch.stem[1].running_mean.fill_(0.3)
    path = tmp_path / "mrinet.pt"
    torch.save({"state_dict": source.state_dict()}, path)
    torch.manual_seed(99)
    loaded = create_model(
        "mrinet",
        {"preset": "small", "num_classes": K, "n_frames": 128, "n_mels": 64, "pretrained": str(path)},
    ).eval()
    x = torch.randn(2, 1, 128, 64)
    with torch.no_grad():
        assert torch.equal(source(x), loaded(x))


def test_pretrained_from_another_config_is_refused(tmp_path):
    path = tmp_path / "mrinet.pt"
    torch.save(_small().state_dict(), path)
    with pytest.raises(PretrainedError, match="shape mismatch"):
        _small(num_classes=3, pretrained=str(path))
    torch.save([1, 2, 3], path)
    with pytest.raises(PretrainedError, match="expected a state dict"):
        _small(pretrained=str(path))


def _donor_swin_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(5)
    donor = _small().time_branch.swin
    with torch.no_grad():
        for p in donor.parameters():
            p.normal_()
    return {k: v.clone() for k, v in donor.state_dict().items()}


def test_time_pretrained_loads_swin_and_bn0_from_an_htsat_checkpoint(tmp_path, caplog):
    swin = _donor_swin_state()
    ckpt = {f"sed_model.{k}": v for k, v in swin.items()}
    bn0 = {"weight": torch.rand(64) + 0.5, "bias": torch.randn(64), "running_mean": torch.randn(64),
           "running_var": torch.rand(64) + 0.5}
    ckpt.update({f"sed_model.bn0.{k}": v for k, v in bn0.items()})
    ckpt["sed_model.tscam_conv.weight"] = torch.ones(527, 768, 2, 3)  # HTS-AT's head: not used
    ckpt["sed_model.logmel_extractor.melW"] = torch.ones(1025, 64)
    path = tmp_path / "htsat.ckpt"
    torch.save({"state_dict": ckpt, "epoch": 3}, path)
    model = _small(time_pretrained=str(path))
    reference = _small()  # same seed, no loading
    for name, p in model.time_branch.swin.state_dict().items():
        assert torch.equal(p, swin[name]), name
    for name, value in bn0.items():
        assert torch.equal(getattr(model.bn0, name), value), name
    for p, q in zip(model.frequency_branch.parameters(), reference.frequency_branch.parameters()):
        assert torch.equal(p, q)
    # non-strict as released: a tensor the checkpoint lacks keeps its init, and the log says so
    del ckpt["sed_model.layers.0.blocks.0.attn.qkv.weight"]
    torch.save(ckpt, path)
    with caplog.at_level("WARNING", logger="lungpipe.models.pretrained"):
        partial = _small(time_pretrained=str(path))
    assert "time_branch.swin.layers.0.blocks.0.attn.qkv.weight" in caplog.text
    assert torch.equal(partial.time_branch.swin.layers[0].blocks[0].attn.qkv.weight,
                       reference.time_branch.swin.layers[0].blocks[0].attn.qkv.weight)
    assert torch.equal(partial.time_branch.swin.norm.weight, swin["norm.weight"])


def test_time_pretrained_averages_an_imagenet_swin_patch_embedding(tmp_path):
    swin = _donor_swin_state()
    rgb = torch.randn(swin["patch_embed.proj.weight"].shape[0], 3, 8, 8)
    imagenet = {**swin, "patch_embed.proj.weight": rgb, "head.weight": torch.ones(1000, 128),
                "head.bias": torch.ones(1000)}
    # a 7×7-window checkpoint (Swin-T on ImageNet): its 13² bias tables are resized to 15²
    table_key = "layers.0.blocks.0.attn.relative_position_bias_table"
    imagenet[table_key] = torch.randn(13 * 13, swin[table_key].shape[1])
    path = tmp_path / "swin_tiny_patch4_window7_224.pth"
    torch.save({"model": imagenet}, path)
    model = _small(time_pretrained=str(path))
    loaded = model.time_branch.swin.state_dict()
    assert torch.allclose(loaded["patch_embed.proj.weight"], rgb.mean(dim=1, keepdim=True))
    assert loaded[table_key].shape == swin[table_key].shape
    centre = loaded[table_key].T.reshape(-1, 15, 15)[:, 7, 7]
    assert torch.allclose(centre, imagenet[table_key].T.reshape(-1, 13, 13)[:, 6, 6], atol=1e-5)
    assert torch.equal(loaded["layers.1.blocks.0.mlp.fc1.weight"], swin["layers.1.blocks.0.mlp.fc1.weight"])


def test_time_pretrained_that_loads_nothing_is_an_error(tmp_path):
    path = tmp_path / "htsat.ckpt"
    torch.save({"conv.weight": torch.ones(2)}, path)
    with pytest.raises(PretrainedError, match="no Swin weights"):
        _small(time_pretrained=str(path))
    swin = _donor_swin_state()
    torch.save({f"sed_model.{k}": torch.ones(3) for k in swin if k.startswith("layers.")} |
               {"sed_model.patch_embed.proj.weight": torch.ones(5, 1, 3, 3)}, path)
    with pytest.raises(PretrainedError, match="shape mismatches"):
        _small(time_pretrained=str(path))


# --- the released network's details ---------------------------------------------------------


def test_every_frequency_branch_conv_has_a_bias_and_the_stem_pads_5_3():
    model = _meta_model("paper")
    convs = [m for m in model.frequency_branch.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 1 + 5 * 36 + 3  # stem, five per interlaced block, three transitions
    assert all(c.bias is not None for c in convs)
    stem = model.frequency_branch.stem[0]
    assert (stem.kernel_size, stem.stride, stem.padding) == ((7, 7), (2, 2), (5, 3))
    shortcut = model.frequency_branch.stages[0][0].shortcut  # pre-activated: BN, ReLU, 1×1 conv
    assert [type(m) for m in shortcut] == [torch.nn.BatchNorm2d, torch.nn.ReLU, torch.nn.Conv2d]


def test_transitions_normalise_each_stream_with_its_own_batch_statistics():
    model = _small().train()
    seen: list[tuple[int, float]] = []
    bn = model.frequency_branch.transitions[0][0]
    bn.register_forward_hook(lambda m, inp, out: seen.append((inp[0].shape[0], float(out.detach().mean()))))
    model(torch.randn(3, 1, 128, 64))
    # called once per stream, each on the batch of 3 alone, each output centred by its own mean
    assert [n for n, _ in seen] == [3, 3]
    assert all(abs(mean - bn.bias.mean().item()) < 1e-5 for _, mean in seen)


def test_time_axis_is_upsampled_bicubically_with_aligned_corners():
    model = _small(n_frames=200, target_frames=256, time_resize="bicubic_up", mel_batchnorm=False).eval()
    x = torch.randn(2, 1, 200, 64)
    expected = F.interpolate(x, size=(256, 64), mode="bicubic", align_corners=True)
    assert torch.allclose(model.prepare(x), expected)
    assert torch.allclose(model.prepare(x)[:, :, [0, -1]], x[:, :, [0, -1]], atol=1e-6)  # corners kept
    with pytest.raises(ValueError, match="300 frames, more than its target_frames 256"):
        model(torch.randn(1, 1, 300, 64))
    with pytest.raises(ConfigError, match="only upsamples"):
        _small(n_frames=300, target_frames=256, time_resize="bicubic_up")


def test_paper_preset_is_the_released_recipe():
    cfg = resolve_config("mrinet", {"preset": "paper"})
    assert (cfg.n_mels, cfg.target_frames, cfg.time_resize) == (64, 1024, "bicubic_up")
    assert (cfg.specaug_time_stripes, cfg.specaug_time_width, cfg.specaug_freq_stripes, cfg.specaug_freq_width) \
        == (2, 64, 2, 8)
    assert (cfg.loss, cfg.focal_gamma, cfg.focal_alpha) == ("focal", 2.0, 0.5)


def test_in_model_specaugment_zeroes_stripes_in_training_only():
    from lungpipe.models.mrinet.augment import drop_stripes

    torch.manual_seed(0)
    x = torch.ones(4000, 1, 100, 64)
    out = drop_stripes(x, 2, 64, 2, 8)
    assert set(out.unique().tolist()) <= {0.0, 1.0}  # zero fill
    time_zeroed = (out == 0).all(dim=3)[:, 0]  # (B, frames) whole frames zeroed by time stripes
    freq_zeroed = (out == 0).all(dim=2)[:, 0]  # (B, mels)
    assert time_zeroed.sum(1).max() <= 2 * 63 and freq_zeroed.sum(1).max() <= 2 * 7
    # one stripe alone: the widest of many draws is 63 frames / 7 bins, never 64 / 8
    one = drop_stripes(torch.ones(4000, 1, 100, 64), 1, 64, 1, 8)
    assert (one == 0).all(dim=3)[:, 0].sum(1).max() == 63
    assert (one == 0).all(dim=2)[:, 0].sum(1).max() == 7
    model = _small(specaug_time_stripes=2, specaug_freq_stripes=2, mel_batchnorm=False, n_frames=256,
                   target_frames=256)
    x = torch.randn(8, 1, 256, 64)
    assert torch.equal(model.eval().prepare(x), x)
    assert (model.train().prepare(x) == 0).any()


def test_focal_loss_on_a_known_batch():
    from lungpipe.models.mrinet.loss import focal_loss

    logits = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    y = torch.tensor([0, 2])
    p = logits.softmax(-1)[torch.arange(2), y]
    expected = (0.5 * (1 - p) ** 2 * -torch.log(p)).mean()
    assert torch.allclose(focal_loss(logits, y, 2.0, 0.5), expected)
    assert torch.allclose(focal_loss(logits, y, 0.0, 1.0), F.cross_entropy(logits, y))


def test_training_loss_is_focal_unless_asked_for_the_criterion():
    x, y = torch.randn(4, 1, 128, 64), torch.tensor([0, 1, 2, 3])

    def refuse(logits, target):
        raise AssertionError("the focal-loss model must not call the engine's criterion")

    model = _small(loss="focal").eval()
    out = model.training_loss(x, y, refuse)
    from lungpipe.models.mrinet.loss import focal_loss

    assert torch.allclose(out.loss, focal_loss(out.logits, y, 2.0, 0.5)) and "focal" in out.parts
    plain = _small(loss="criterion").eval().training_loss(x, y, F.cross_entropy)
    assert torch.allclose(plain.loss, F.cross_entropy(plain.logits, y))
