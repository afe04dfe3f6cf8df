"""ADD4RSC: the adaptive frequency filter, differential attention, the two bias losses, the model.

Values are derived by hand or by an independent computation in the test (explicit softmax maps,
explicit Fourier coefficients of sinusoids, closed-form KL divergences, parameter counts from the
layer sizes). The zoo contract (shapes, gradients, memorising, reload) is in test_model_zoo.py.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lungpipe.models import count_parameters, create_model, model_names, resolve_config
from lungpipe.models.add4rsc import ADD4RSC, PRESETS, AdaptiveDifferentialDenoiser, ADD4RSCConfig
from lungpipe.models.denoise import (
    AdaptiveFrequencyFilter,
    DifferentialDenoiseLayer,
    MultiHeadDifferentialAttention,
    jensen_shannon_divergence,
    label_smoothing_kl,
    lambda_init_for_depth,
)
from lungpipe.util.typed_config import ConfigError, from_dict, merge


class StandInBackbone(nn.Module):
    """A tiny CNN in place of AST/ResNet50; records the shape it was fed."""

    def __init__(self, num_classes: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(8, num_classes)
        self.seen: tuple[int, ...] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = tuple(x.shape)
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def _model(**overrides) -> ADD4RSC:
    torch.manual_seed(0)
    cfg = from_dict(ADD4RSCConfig, merge(PRESETS["small"], {"n_frames": 64, "n_mels": 32, **overrides}))
    return ADD4RSC(cfg, StandInBackbone(cfg.num_classes))


# ---------------------------------------------------------------- adaptive frequency filter


def test_aff_keeps_shape_and_is_identity_with_zero_weights():
    torch.manual_seed(0)
    aff = AdaptiveFrequencyFilter(16, num_blocks=4, shrink=0.01)
    x = torch.randn(3, 50, 16)
    assert aff(x).shape == (3, 50, 16)
    assert not torch.allclose(aff(x), x)  # the random initial filter does something
    with torch.no_grad():
        for p in aff.parameters():
            p.zero_()
    assert torch.equal(aff(x), x)


def test_aff_is_identity_when_shrinkage_removes_every_coefficient():
    torch.manual_seed(0)
    aff = AdaptiveFrequencyFilter(16, num_blocks=4, shrink=1e6)
    x = torch.randn(2, 33, 16)
    assert torch.equal(aff(x), x)


def _identity_then_negate(aff: AdaptiveFrequencyFilter) -> None:
    """Mask MLP: layer 1 = identity, layer 2 = −identity (real weights, no bias)."""
    eye = torch.eye(aff.block_size).expand(aff.num_blocks, -1, -1)
    with torch.no_grad():
        for p in aff.parameters():
            p.zero_()
        aff.w1[0] = eye
        aff.w2[0] = -eye


def test_aff_removes_the_cosine_and_keeps_the_sine():
    # Ortho rFFT of a·cos(2πkn/N) is a·√N/2 (real, > 0) at bin k; of b·sin(2πjn/N) it is −i·b·√N/2.
    # With the mask MLP "identity → ReLU → −identity", bin k becomes −(a√N/2) + shrinkage and cancels
    # the cosine through the residual, while ReLU(0)=ReLU(−b√N/2)=0 leaves the sine's bin untouched.
    # Left over: the shrinkage α at bin k, i.e. (2α/√N)·cos(2πkn/N) in time.
    n, k, j, alpha = 64, 5, 12, 0.01
    t = torch.arange(n, dtype=torch.float32)
    cosine = 1.5 * torch.cos(2 * math.pi * k * t / n)
    sine = 0.8 * torch.sin(2 * math.pi * j * t / n)
    x = (cosine + sine)[None, :, None].repeat(1, 1, 8)
    aff = AdaptiveFrequencyFilter(8, num_blocks=2, shrink=alpha)
    _identity_then_negate(aff)
    out = aff(x)
    expected = sine + (2 * alpha / math.sqrt(n)) * torch.cos(2 * math.pi * k * t / n)
    assert torch.allclose(out[0, :, 3], expected, atol=1e-5)
    # Negated input: the cosine's bin is now negative and passes, the sine's bin (+i·b√N/2) is
    # cancelled instead, leaving iα at bin j, i.e. −(2α/√N)·sin(2πjn/N): the mask follows content.
    expected = -cosine - (2 * alpha / math.sqrt(n)) * torch.sin(2 * math.pi * j * t / n)
    assert torch.allclose(aff(-x)[0, :, 3], expected, atol=1e-5)


def test_aff_with_zero_biases_creates_no_new_frequencies():
    # A per-bin operator maps an empty bin to MLP(0) = 0; a time-domain nonlinearity would not.
    torch.manual_seed(1)
    n = 48
    t = torch.arange(n, dtype=torch.float32)
    x = torch.randn(2, 1, 8) * torch.cos(2 * math.pi * 3 * t / n)[None, :, None]
    x = x + torch.randn(2, 1, 8) * torch.sin(2 * math.pi * 7 * t / n)[None, :, None]
    aff = AdaptiveFrequencyFilter(8, num_blocks=2, shrink=0.0)
    delta = torch.fft.rfft(aff(x) - x, dim=1, norm="ortho").abs()
    assert delta[:, [3, 7]].amax() > 1e-2
    others = [b for b in range(n // 2 + 1) if b not in (3, 7)]
    assert delta[:, others].amax() < 1e-5


# ---------------------------------------------------------------- differential attention


def test_lambda_init_at_the_paper_depth():
    assert lambda_init_for_depth(6) == pytest.approx(0.8 - 0.6 * math.exp(-1.8))
    assert lambda_init_for_depth(6) == pytest.approx(0.7008, abs=1e-4)
    assert lambda_init_for_depth(0) == pytest.approx(0.2)  # first layer (l = 1) of the DiffT paper
    paper = AdaptiveDifferentialDenoiser(256, 8, layers=1, depth=6)
    assert paper.layers[0].attn.lambda_init == pytest.approx(0.7008, abs=1e-4)


def _heads(t: torch.Tensor, num_heads: int) -> torch.Tensor:
    b, n, width = t.shape
    return t.view(b, n, num_heads, width // num_heads).transpose(1, 2)


def _explicit_diff_attention(attn: MultiHeadDifferentialAttention, x: torch.Tensor) -> torch.Tensor:
    """[softmax(Q1K1ᵀ/√h) − λ·softmax(Q2K2ᵀ/√h)]·V with the maps written out, then norm and W_O."""
    h, nh = attn.head_dim, attn.num_heads
    q = _heads(x @ attn.q_proj.weight.T, nh)
    k = _heads(x @ attn.k_proj.weight.T, nh)
    v = _heads(x @ attn.v_proj.weight.T, nh)
    a1 = torch.softmax(q[..., :h] @ k[..., :h].transpose(-1, -2) / math.sqrt(h), dim=-1)
    a2 = torch.softmax(q[..., h:] @ k[..., h:].transpose(-1, -2) / math.sqrt(h), dim=-1)
    lam = (
        torch.exp((attn.lambda_q1 * attn.lambda_k1).sum(-1))
        - torch.exp((attn.lambda_q2 * attn.lambda_k2).sum(-1))
        + attn.lambda_init
    )
    o = (a1 - lam.view(1, -1, 1, 1) * a2) @ v
    o = o / torch.sqrt(o.pow(2).mean(-1, keepdim=True) + 1e-5) * attn.head_norm.weight
    o = o * (1 - attn.lambda_init)
    b, _, n, _ = o.shape
    return o.transpose(1, 2).reshape(b, n, -1) @ attn.out_proj.weight.T


def test_differential_attention_with_lambda_zero_is_softmax_attention():
    torch.manual_seed(0)
    attn = MultiHeadDifferentialAttention(d_model=16, num_heads=2, lambda_init=0.0)
    with torch.no_grad():
        for p in (attn.lambda_q1, attn.lambda_k1, attn.lambda_q2, attn.lambda_k2):
            p.zero_()  # λ = e⁰ − e⁰ + 0 = 0
    assert torch.equal(attn.lambda_value(), torch.zeros(2))
    x = torch.randn(2, 10, 16)
    h = attn.head_dim
    q = _heads(x @ attn.q_proj.weight.T, 2)[..., :h]
    k = _heads(x @ attn.k_proj.weight.T, 2)[..., :h]
    v = _heads(x @ attn.v_proj.weight.T, 2)
    standard = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(h), dim=-1) @ v
    standard = standard / torch.sqrt(standard.pow(2).mean(-1, keepdim=True) + 1e-5)
    expected = standard.transpose(1, 2).reshape(2, 10, 32) @ attn.out_proj.weight.T
    assert torch.allclose(attn(x), expected, atol=1e-5)


def test_differential_attention_matches_the_two_map_formula():
    torch.manual_seed(0)
    attn = MultiHeadDifferentialAttention(d_model=24, num_heads=3, lambda_init=lambda_init_for_depth(2))
    with torch.no_grad():
        attn.lambda_q1.normal_(0, 0.5)  # move λ well away from λ_init
        attn.head_norm.weight.uniform_(0.5, 1.5)
    assert not torch.allclose(attn.lambda_value(), torch.full((3,), attn.lambda_init), atol=1e-2)
    x = torch.randn(2, 9, 24)
    assert torch.allclose(attn(x), _explicit_diff_attention(attn, x), atol=1e-5)


def test_denoise_layer_keeps_shape():
    layer = DifferentialDenoiseLayer(32, 4, lambda_init_for_depth(6))
    assert layer(torch.randn(2, 20, 32)).shape == (2, 20, 32)


# ---------------------------------------------------------------- bias losses


def test_label_smoothing_kl_by_hand():
    # Uniform logits: p = 1/4; t = (0.2/3, 0.2/3, 0.8, 0.2/3).
    off = 0.2 / 3
    uniform = 0.8 * math.log(0.8 / 0.25) + 3 * off * math.log(off / 0.25)
    # Logits (ln 4, 0, 0, 0): p = (4/7, 1/7, 1/7, 1/7), true class 0.
    skewed = 0.8 * math.log(0.8 / (4 / 7)) + 3 * off * math.log(off / (1 / 7))
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [math.log(4.0), 0.0, 0.0, 0.0]])
    target = torch.tensor([2, 0])
    assert label_smoothing_kl(logits[:1], target[:1]).item() == pytest.approx(uniform, rel=1e-5)
    assert label_smoothing_kl(logits[1:], target[1:]).item() == pytest.approx(skewed, rel=1e-5)
    assert label_smoothing_kl(logits, target).item() == pytest.approx((uniform + skewed) / 2, rel=1e-5)


def test_jensen_shannon_by_hand():
    a = torch.randn(5, 4)
    assert jensen_shannon_divergence(a, a.clone()).item() == 0.0
    # Disjoint one-hot distributions: JS = ln 2.
    one_hot = torch.tensor([[100.0, -100.0]])
    assert jensen_shannon_divergence(one_hot, -one_hot).item() == pytest.approx(math.log(2), rel=1e-6)


def test_label_smoothing_total_is_beta_aux_plus_one_minus_beta_ce():
    beta = 0.3
    model = _model(loss_beta=beta)
    x, y = torch.randn(6, 1, 64, 32), torch.tensor([0, 1, 2, 3, 1, 2])
    out = model.training_loss(x, y, F.cross_entropy)
    # Recompute the pieces: backbone logits, aux head on the mean of the AFF's first two tokens.
    tokens = model.to_tokens(x)
    filtered = model.denoiser.frequency_filter(tokens)
    denoised = filtered
    for layer in model.denoiser.layers:
        denoised = layer(denoised)
    logits = model.backbone(denoised.unsqueeze(1))
    aux = model.aux_head((filtered[:, 0] + filtered[:, 1]) / 2)
    target = torch.full((6, 4), 0.2 / 3)
    target[torch.arange(6), y] = 0.8
    kl = F.kl_div(F.log_softmax(aux, -1), target, reduction="batchmean")
    ce = F.cross_entropy(logits, y)
    assert torch.allclose(out.logits, logits, atol=1e-6)
    assert out.parts["ce"].item() == pytest.approx(ce.item(), rel=1e-5)
    assert out.parts["bias"].item() == pytest.approx(kl.item(), rel=1e-5)
    assert out.loss.item() == pytest.approx(beta * kl.item() + (1 - beta) * ce.item(), rel=1e-5)
    assert torch.equal(model(x), out.logits)  # forward = main logits, no aux


def test_view_consistency_bias_is_zero_for_identical_views_and_positive_otherwise():
    y = torch.tensor([0, 1, 2, 3])
    x = torch.randn(4, 1, 64, 32)
    same = _model(bias_loss="view_consistency", specaug_freq_masks=0, specaug_time_masks=0)
    assert same.aux_head is None
    out = same.training_loss(x, y, F.cross_entropy)
    assert out.parts["bias"].item() == 0.0
    assert out.loss.item() == pytest.approx(0.5 * F.cross_entropy(same(x), y).item(), rel=1e-6)

    torch.manual_seed(3)
    masked = _model(bias_loss="view_consistency")
    out = masked.training_loss(x, y, F.cross_entropy)
    assert out.parts["bias"].item() > 0.0
    out.loss.backward()
    assert all(p.grad is not None for p in masked.parameters())


def test_augmented_view_masks_with_the_mean_within_scaled_widths():
    model = _model(bias_loss="view_consistency", specaug_freq_masks=1, specaug_time_masks=0)
    torch.manual_seed(0)
    x = torch.randn(8, 1, 64, 32)
    aug = model.augmented_view(x)
    changed = (aug != x).any(dim=2)[:, 0]  # (B, mels): which mel columns were masked
    widths = changed.sum(dim=1)
    assert widths.max() > 0 and widths.max() <= round(32 * 48 / 128)
    for i in range(8):
        cols = changed[i].nonzero().flatten()
        if len(cols):
            assert torch.allclose(aug[i, 0][:, cols], x[i].mean().expand(64, len(cols)))


# ---------------------------------------------------------------- the model


def test_model_resizes_to_the_token_grid_and_feeds_the_backbone():
    model = _model(time_tokens=80, denoise_d_model=48, denoise_num_heads=4)
    x = torch.randn(2, 1, 64, 32)
    assert model.to_tokens(x).shape == (2, 80, 48)
    assert model(x).shape == (2, 4)
    assert model.backbone.seen == (2, 1, 80, 48)
    const = torch.full((1, 1, 64, 32), 2.5)
    assert torch.allclose(model.to_tokens(const), torch.full((1, 80, 48), 2.5))
    same = _model(n_mels=64, time_tokens=0)  # time tokens = n_frames, d_model 64 = n_mels → no resize at all
    x64 = torch.randn(2, 1, 64, 64)
    assert torch.equal(same.to_tokens(x64), x64[:, 0])


def test_paper_denoiser_parameter_count():
    d, heads, blocks, k = 256, 8, 8, 4
    bs = d // blocks
    aff = 2 * (2 * blocks * bs * bs) + 2 * (2 * blocks * bs)  # two complex block matrices + biases
    attention = 3 * d * 2 * d + 2 * d * d + 4 * heads * (d // heads) + 2 * (d // heads)
    swiglu = 2 * (d * 2 * d + 2 * d) + (2 * d * d + d)
    ddl = d + attention + d + swiglu  # two RMSNorm scales
    aux = d * k + k
    cfg = from_dict(ADD4RSCConfig, PRESETS["paper"])
    model = ADD4RSC(cfg, StandInBackbone(4))
    assert count_parameters(model.denoiser) == aff + ddl == 33_792 + 920_384
    assert count_parameters(model) - count_parameters(model.backbone) == aff + ddl + aux == 955_204


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="bias_loss"):
        _model(bias_loss="contrastive")
    with pytest.raises(ConfigError, match="divisible"):
        _model(denoise_d_model=30, denoise_num_heads=4)
    with pytest.raises(ConfigError, match="backbone"):
        _model(backbone={"preset": "small", "n_frames": 10})
    with pytest.raises(ValueError, match="batch, 1, frames, mels"):
        _model()(torch.randn(2, 64, 32))


def test_presets_resolve_through_the_registry():
    paper = resolve_config("add4rsc_ast", {"preset": "paper"})
    assert paper.token_shape == (1024, 256)
    assert (paper.denoise_num_heads, paper.loss_beta, paper.bias_loss) == (8, 0.5, "label_smoothing")
    small = resolve_config("add4rsc_resnet50", {"preset": "small", "n_frames": 128, "backbone": {"x": 1}})
    assert small.token_shape == (128, 64)  # every input frame is a time token, the 64 mels are the features
    assert small.backbone == {"preset": "small", "x": 1}


@pytest.mark.parametrize(
    "name,backbone,overrides",
    [
        # AST-base over the 1024×256 grid (16 × 64 patches) is ~0.2 TFLOP at 12 layers, seconds of
        # seconds on two CPU cores: the test keeps the paper geometry and width with one layer.
        ("add4rsc_ast", "ast", {"backbone": {"num_layers": 1}}),
        ("add4rsc_resnet50", "resnet50", {}),
    ],
)
def test_paper_preset_forward_at_batch_one(name, backbone, overrides):
    if backbone not in model_names():
        pytest.skip(f"backbone {backbone!r} is not registered")
    torch.manual_seed(0)
    model = create_model(name, {"preset": "paper", "pretrained": "none", **overrides}).eval()
    assert model.cfg.token_shape == (1024, 256)
    with torch.no_grad():
        out = model(torch.randn(1, 1, 798, 128))
    assert out.shape == (1, 4)
    assert torch.isfinite(out).all()
    if backbone == "ast":
        # the release's AST patches the resized 1024 × 256 input with stride 16 in both axes
        assert model.backbone.backbone.grid == (16, 64)


# ---------------------------------------------------------------- the release's settings


def test_add4rsc_ast_paper_backbone_has_1024_patches_of_stride_16():
    cfg = resolve_config("add4rsc_ast", {"preset": "paper"})
    assert cfg.pos_embed == "random" and cfg.backbone["frequency_stride"] == cfg.backbone["time_stride"] == 16
    with torch.device("meta"):
        model = create_model("add4rsc_ast", {"preset": "paper"})
    ast = model.backbone.backbone
    assert ast.grid == (16, 64)
    assert ast.ast.embeddings.position_embeddings.shape == (1, 2 + 1024, 768)
    # ADD4RSC with ResNet50 keeps the plain ResNet50 preset (no strides to set)
    assert resolve_config("add4rsc_resnet50", {"preset": "paper"}).backbone == {"preset": "paper"}


def test_ddl_initialisation_is_the_releases():
    torch.manual_seed(0)
    attn = MultiHeadDifferentialAttention(d_model=256, num_heads=8, lambda_init=0.7)
    # kaiming_uniform_ defaults: gain √2 (leaky_relu, a=0), fan_in = head width 32 → U(±√(6/32))
    bound = math.sqrt(6 / 32)
    for lam in (attn.lambda_q1, attn.lambda_k1, attn.lambda_q2, attn.lambda_k2):
        assert lam.abs().max() <= bound and lam.abs().max() > 0.9 * bound
        assert abs(lam.std().item() - bound / math.sqrt(3)) < 0.03  # uniform, not N(0, 0.1²)
    for proj, (fan_out, fan_in) in (
        (attn.q_proj, (512, 256)), (attn.k_proj, (512, 256)), (attn.v_proj, (512, 256)), (attn.out_proj, (256, 512))
    ):
        xavier = math.sqrt(6 / (fan_in + fan_out))
        assert proj.weight.shape == (fan_out, fan_in)
        assert proj.weight.abs().max() <= xavier and proj.weight.abs().max() > 0.95 * xavier


def test_main_loss_is_the_criterion_the_engine_passes():
    model = _model().eval()
    x, y = torch.randn(4, 1, 64, 32), torch.tensor([0, 1, 2, 3])
    weights = torch.tensor([1.0, 5.0, 0.2, 3.0])
    plain = model.training_loss(x, y, F.cross_entropy)
    weighted = model.training_loss(x, y, lambda logits, t: F.cross_entropy(logits, t, weight=weights))
    assert torch.allclose(plain.parts["ce"], F.cross_entropy(plain.logits, y))
    assert torch.allclose(weighted.parts["ce"], F.cross_entropy(weighted.logits, y, weight=weights))
    beta = model.cfg.loss_beta
    assert torch.allclose(plain.loss, beta * plain.parts["bias"] + (1 - beta) * plain.parts["ce"])


def test_pretrained_under_backbone_is_refused_with_the_key_to_use():
    with pytest.raises(ConfigError, match="model.pretrained instead of model.backbone.pretrained"):
        resolve_config("add4rsc_ast", {"preset": "small", "backbone": {"pretrained": "x.pt"}}).validate()
    with pytest.raises(ConfigError, match="pos_embed"):
        _model(pos_embed="learned")


def test_both_softmax_maps_go_through_sdpa(monkeypatch):
    calls = []
    real = F.scaled_dot_product_attention

    def counting(q, k, v, *args, **kwargs):
        calls.append(tuple(q.shape))
        return real(q, k, v, *args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
    torch.manual_seed(0)
    attn = MultiHeadDifferentialAttention(d_model=24, num_heads=3, lambda_init=0.5)
    x = torch.randn(2, 9, 24)
    out = attn(x)
    assert calls == [(2, 3, 9, 8), (2, 3, 9, 8)]  # Q1K1 and Q2K2, head width 8, per head
    assert torch.allclose(out, _explicit_diff_attention(attn, x), atol=1e-5)
