"""SpecAugment in both modes and mixup, measured on real draws."""

from __future__ import annotations

import math

import pytest
import torch

from lungpipe.training.augment import (
    RELEASE_APPLY_PROB,
    RELEASE_FREQ_MASK_FRAC,
    RELEASE_TIME_MASK_FRAC,
    AugmentConfig,
    max_mask_width,
    mixup,
    spec_augment,
)
from lungpipe.util.typed_config import ConfigError


def _changed(x, out):
    return (out != x).flatten(1).any(dim=1)


def test_release_mode_applies_the_whole_augmentation_with_probability_phi_1():
    assert RELEASE_APPLY_PROB == pytest.approx(0.8413, abs=1e-4)
    x = torch.randn(20000, 1, 16, 8)
    cfg = AugmentConfig(mode="release", freq_mask_frac=1.0, time_mask_frac=1.0)  # widths rarely all 0
    rate = _changed(x, spec_augment(x, cfg, torch.Generator().manual_seed(0))).float().mean().item()
    assert rate == pytest.approx(0.841, abs=0.01)
    lungpipe_rate = _changed(x, spec_augment(x, AugmentConfig(freq_mask_frac=1.0, time_mask_frac=1.0),
                                             torch.Generator().manual_seed(0))).float().mean().item()
    assert lungpipe_rate > 0.99  # the lungpipe mode masks every spectrogram


def _freq_widths(x, out):
    """Per sample: the number of mel bins masked over all frames (one frequency mask, no time mask)."""
    return ((out != x).all(dim=2)).sum(dim=-1).flatten()


def _time_widths(x, out):
    return ((out != x).all(dim=3)).sum(dim=-1).flatten()


def test_release_widths_are_integers_in_0_48_and_0_160_on_the_128x798_input():
    assert max_mask_width(RELEASE_FREQ_MASK_FRAC, 128) == 48 and max_mask_width(RELEASE_TIME_MASK_FRAC, 798) == 160
    assert max_mask_width(0.375, 128) == 48 and max_mask_width(0.2005, 798) == 160  # the paper profile's values
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4000, 1, 3, 128)
    out = spec_augment(x, AugmentConfig(mode="release", freq_masks=1, freq_mask_frac=RELEASE_FREQ_MASK_FRAC, time_masks=0), gen)
    widths = _freq_widths(x, out)
    assert set(widths.tolist()) == set(range(48))  # 0 included, 48 never
    x = torch.randn(3000, 1, 798, 2)
    out = spec_augment(x, AugmentConfig(mode="release", time_masks=1, time_mask_frac=RELEASE_TIME_MASK_FRAC, freq_masks=0), gen)
    assert set(_time_widths(x, out).tolist()) == set(range(160))


def test_lungpipe_widths_include_the_maximum_and_fractions_scale_with_the_axis():
    gen = torch.Generator().manual_seed(2)
    for n_mels, expected_max in ((64, 8), (128, 16)):  # one fraction, every frontend
        x = torch.randn(2000, 1, 3, n_mels)
        out = spec_augment(x, AugmentConfig(freq_masks=1, freq_mask_frac=0.125, time_masks=0), gen)
        assert set(_freq_widths(x, out).tolist()) == set(range(expected_max + 1))


def test_release_fills_time_masks_with_the_mean_taken_after_the_frequency_masks():
    n_t, n_f = 30, 12
    base = torch.arange(n_f, dtype=torch.float32).repeat(n_t, 1) ** 2  # mean changes when bins are masked
    x = base.expand(64, 1, n_t, n_f).clone()
    cfg = AugmentConfig(mode="release", freq_masks=1, freq_mask_frac=0.5, time_masks=1, time_mask_frac=0.5)
    out = spec_augment(x, cfg, torch.Generator().manual_seed(3))
    checked = 0
    for b in range(64):
        o = out[b, 0]
        rows = (o != base).all(dim=1)  # fully masked frames: the time masks
        cols = ((o != base) | rows[:, None]).all(dim=0) & ~rows.all()  # masked bins outside those frames
        if not rows.any() or not cols.any():
            continue
        m1 = base.mean()
        after_freq = base.clone()
        after_freq[:, cols] = m1
        m2 = after_freq.mean()
        assert not torch.isclose(m1, m2)
        assert torch.allclose(o[~rows][:, cols], m1)
        assert torch.allclose(o[rows], m2)
        checked += 1
    assert checked >= 10


def test_lungpipe_mode_fills_every_mask_with_the_spectrograms_own_mean_or_zero():
    x = torch.randn(8, 1, 40, 16) + torch.arange(8.0)[:, None, None, None]
    for fill in ("mean", "zero"):
        out = spec_augment(x, AugmentConfig(freq_mask_frac=0.25, time_mask_frac=0.2, fill=fill),
                           torch.Generator().manual_seed(4))
        changed = out != x
        assert changed.any()
        for b in range(8):
            want = x[b].mean() if fill == "mean" else torch.tensor(0.0)
            assert torch.allclose(out[b][changed[b]], want.expand(int(changed[b].sum())))
    assert torch.equal(spec_augment(x, AugmentConfig(freq_masks=0, time_masks=0)), x)


def test_bad_augment_values_are_config_errors_naming_the_key():
    with pytest.raises(ConfigError, match=r"AugmentConfig\.mode: must be one of lungpipe, release"):
        AugmentConfig(mode="patchmix")
    with pytest.raises(ConfigError, match=r"AugmentConfig\.time_mask_frac"):
        AugmentConfig(time_mask_frac=160)


def test_mixup_pairs_each_sample_with_a_permuted_partner_by_lam():
    torch.manual_seed(0)
    x = torch.randn(10, 1, 5, 4)
    y = torch.arange(10)
    mixed, y_a, y_b, lam = mixup(x, y, 0.4, torch.Generator().manual_seed(5))
    assert 0.0 < lam < 1.0 and torch.equal(y_a, y)
    assert sorted(y_b.tolist()) == list(range(10)) and not torch.equal(y_b, y)  # a permutation, not identity
    assert torch.allclose(mixed, lam * x + (1 - lam) * x[y_b])
    same, _, _, lam1 = mixup(x, y, 0.0, torch.Generator().manual_seed(5))
    assert lam1 == 1.0 and torch.equal(same, x)


def test_mixup_lam_follows_beta_alpha_alpha():
    torch.manual_seed(1)
    x, y = torch.zeros(2, 1, 1, 1), torch.arange(2)
    lams = torch.tensor([mixup(x, y, 0.4)[3] for _ in range(3000)])
    var = 1 / (4 * (2 * 0.4 + 1))  # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1))
    assert lams.mean().item() == pytest.approx(0.5, abs=0.03)
    assert lams.var().item() == pytest.approx(var, abs=0.015)
    assert math.isclose(var, 0.1389, abs_tol=1e-4)
