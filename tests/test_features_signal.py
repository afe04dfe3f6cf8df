"""Signal-level behaviour of the features code: reading, resampling, cutting, padding, fades,
and the batched Kaldi filterbank checked against torchaudio's reference implementation."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from lungpipe.features.audio import linear_fade, prepare_recording, read_audio, resample
from lungpipe.features.config import CycleConfig, FrontendConfig, NormConfig, PreprocessConfig, frontend_key
from lungpipe.features.cycles import cut_cycles, fix_length, sample_index
from lungpipe.features.frontend import compute_frontend, n_frames
from lungpipe.util.errors import DataError
from lungpipe.util.typed_config import ConfigError, from_dict


def _kaldi_reference(wave: torch.Tensor, window: str = "hanning") -> torch.Tensor:
    from torchaudio.compliance import kaldi

    return kaldi.fbank(wave[None], htk_compat=True, sample_frequency=16000, use_energy=False,
                       window_type=window, num_mel_bins=128, dither=0.0, frame_length=25, frame_shift=10)


# ----------------------------------------------------------------------------- reading


def test_read_audio_16_and_24_bit_scale_exactly(tmp_path):
    ints = np.array([0, 1, -1, 1000, -32768, 32767, 12345], dtype=np.int64)
    sf.write(tmp_path / "a16.wav", ints.astype(np.int16), 8000, subtype="PCM_16")
    ints24 = ints * 256 + 7  # use the low byte that 24-bit adds
    sf.write(tmp_path / "a24.wav", (ints24 * 256).astype(np.int32), 8000, subtype="PCM_24")
    w16, sr16 = read_audio(tmp_path / "a16.wav")
    w24, sr24 = read_audio(tmp_path / "a24.wav")
    assert (sr16, sr24) == (8000, 8000)
    assert w16.dtype == np.float32 and w24.dtype == np.float32
    np.testing.assert_array_equal(w16, ints / 32768.0)
    np.testing.assert_array_equal(w24, ints24 / 2.0**23)


def test_read_audio_mixes_channels_to_mono(tmp_path):
    stereo = np.stack([np.full(100, 0.5), np.full(100, -0.25)], axis=1)
    sf.write(tmp_path / "st.wav", stereo, 16000, subtype="FLOAT")
    wave, _ = read_audio(tmp_path / "st.wav")
    np.testing.assert_allclose(wave, 0.125)


def test_unreadable_file_raises_data_error_naming_it(tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00not really a wav")
    with pytest.raises(DataError, match="broken.wav"):
        read_audio(bad)
    with pytest.raises(DataError, match="missing.wav"):
        read_audio(tmp_path / "missing.wav")


# ----------------------------------------------------------------------------- resampling


def test_resample_keeps_a_1khz_tone_and_length():
    sr = 44100
    t = np.arange(2 * sr) / sr
    tone = torch.tensor(0.5 * np.sin(2 * np.pi * 1000.0 * t), dtype=torch.float32)
    out = resample(tone, sr, 16000)
    assert out.shape[-1] == math.ceil(2 * sr * 16000 / sr)
    spectrum = np.abs(np.fft.rfft(out.numpy() * np.hanning(out.shape[-1])))
    peak_hz = np.argmax(spectrum) * 16000 / out.shape[-1]
    assert abs(peak_hz - 1000.0) <= 16000 / out.shape[-1]
    assert out.abs().max() == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("orig", [44100, 22050, 11025, 4000, 48000])
def test_resample_matches_torchaudio_sinc_resampling(orig):
    g = torch.Generator().manual_seed(orig)
    wave = torch.rand(orig // 2, generator=g) * 2 - 1
    exact = torchaudio.functional.resample(wave.double(), orig, 16000)  # float64 reference
    ours = resample(wave, orig, 16000)
    assert ours.shape == exact.shape
    assert (ours.double() - exact).abs().max() < 1e-4


# ----------------------------------------------------------------------------- cycles


def test_sample_index_rounds_half_up():
    assert sample_index(0.036, 16000) == 576
    assert sample_index(1.5 / 16000, 16000) == 2
    assert sample_index(0.49 / 16000, 16000) == 0


def test_cut_at_known_offsets_from_a_16khz_ramp(tmp_path):
    ramp = (np.arange(48000) - 24000).astype(np.int16)  # sample i holds (i - 24000) / 32768
    sf.write(tmp_path / "ramp.wav", ramp, 16000, subtype="PCM_16")
    wave, sr = read_audio(tmp_path / "ramp.wav")
    cfg = CycleConfig(max_len_s=2.0, recording_fade_samples=0, pad_fade_samples=0, pad="zero")
    recording = prepare_recording(wave, sr, 16000, 0)
    cycles = cut_cycles(recording, [(0.5, 1.25), (0.1, 2.3)], cfg)
    first, last = sample_index(0.5, 16000), sample_index(1.25, 16000)  # 8000, 20000
    assert cycles.shape == (2, 32000)
    assert cycles[0, 0] * 32768 == first - 24000
    assert cycles[0, last - first - 1] * 32768 == last - 1 - 24000
    assert torch.all(cycles[0, last - first:] == 0)
    # a 2.2 s cycle is truncated to its first 2 s
    assert cycles[1, 0] * 32768 == 1600 - 24000
    assert cycles[1, -1] * 32768 == 1600 + 32000 - 1 - 24000


def test_repeat_padding_tiles_the_cycle_exactly():
    cycle = torch.arange(1, 8, dtype=torch.float32)
    out, padded = fix_length(cycle, 25, "repeat")
    assert padded
    np.testing.assert_array_equal(out.numpy(), np.resize(np.arange(1, 8), 25))


def test_zero_padding_and_truncation():
    cycle = torch.arange(1, 8, dtype=torch.float32)
    out, padded = fix_length(cycle, 10, "zero")
    assert padded and out.tolist() == [1, 2, 3, 4, 5, 6, 7, 0, 0, 0]
    out, padded = fix_length(cycle, 4, "repeat")
    assert not padded and out.tolist() == [1, 2, 3, 4]


def test_fades_are_linear_ramps():
    wave = torch.ones(100)
    linear_fade(wave, 11, 6)
    np.testing.assert_allclose(wave[:11].numpy(), np.linspace(0, 1, 11), atol=1e-7)
    np.testing.assert_allclose(wave[-6:].numpy(), np.linspace(1, 0, 6), atol=1e-7)
    assert torch.all(wave[11:-6] == 1)


def test_pad_fade_applies_only_to_padded_cycles():
    cfg = CycleConfig(sample_rate=1000, max_len_s=0.1, recording_fade_samples=0, pad_fade_samples=10)
    recording = torch.ones(1000)
    short, long = cut_cycles(recording, [(0.0, 0.03), (0.2, 0.5)], cfg)
    np.testing.assert_allclose(short[-10:].numpy(), np.linspace(1, 0, 10), atol=1e-7)
    assert torch.all(short[:-10] == 1)
    assert torch.all(long == 1)


def test_boundaries_truncate_as_the_release_does():
    """int(t·sr) like the patch-mix CL / ADD4RSC release, not rounding: 0.10007 s at 10 kHz is
    sample 1000 (1000.7), and 0.29 s at 100 Hz is sample 28 (0.29·100 = 28.999999999999996)."""
    recording = torch.arange(20000, dtype=torch.float32)
    cfg = CycleConfig(sample_rate=10000, max_len_s=0.3, recording_fade_samples=0, pad_fade_samples=0)
    assert cfg.boundary == "truncate"
    (cycle,) = cut_cycles(recording, [(0.10007, 0.30009)], cfg)
    assert cycle[0] == 1000 and cycle[1999] == 2999 and cycle[2000] == 1000  # 2000 samples, then repeated
    rounded = dataclasses.replace(cfg, boundary="round")
    (cycle,) = cut_cycles(recording, [(0.10007, 0.30009)], rounded)
    assert cycle[0] == 1001 and cycle[1999] == 3000 and cycle[2000] == 1001
    slow = CycleConfig(sample_rate=100, max_len_s=1.0, recording_fade_samples=0, pad_fade_samples=0, pad="zero")
    (cycle,) = cut_cycles(torch.arange(200, dtype=torch.float32), [(0.29, 0.5)], slow)
    assert cycle[0] == 28 and cycle[21] == 49 and cycle[22] == 0
    with pytest.raises(ConfigError, match="boundary"):
        CycleConfig(boundary="ceil")


def test_a_cycle_of_exactly_max_length_gets_the_pad_fade_out():
    """The release fades every cycle that is not longer than the fixed length (its repeat of
    ceil(n / len) = 1 copy changes nothing, the fade does); truncated cycles are not faded."""
    recording = torch.ones(1000)
    cfg = CycleConfig(sample_rate=1000, max_len_s=0.1, recording_fade_samples=0, pad_fade_samples=10)
    exact, longer = cut_cycles(recording, [(0.2, 0.3), (0.4, 0.55)], cfg)  # 100 and 150 samples
    np.testing.assert_allclose(exact[-10:].numpy(), np.linspace(1, 0, 10), atol=1e-7)
    assert torch.all(exact[:-10] == 1) and torch.all(longer == 1)
    off = dataclasses.replace(cfg, fade_full_length=False)
    exact, _ = cut_cycles(recording, [(0.2, 0.3), (0.4, 0.55)], off)
    assert torch.all(exact == 1)


def test_release_order_recording_fade_then_cut_then_pad_fade():
    """At 16 kHz: the recording's first 1000 samples ramp 0→1, a cycle starting at 0 keeps that
    ramp, and after repeat-padding to 8 s its last 1000 samples ramp down to 0."""
    wave = np.ones(16000 * 3, dtype=np.float32)
    recording = prepare_recording(wave, 16000, 16000, 1000)
    cfg = CycleConfig()  # 16 kHz, 8 s, repeat, 1000-sample fades: the release's numbers
    (cycle,) = cut_cycles(recording, [(0.0, 2.0)], cfg)
    ramp = np.linspace(0, 1, 1000)
    np.testing.assert_allclose(cycle[:1000].numpy(), ramp, atol=1e-7)
    np.testing.assert_allclose(cycle[32000:33000].numpy(), ramp, atol=1e-7)  # the first repeat
    assert torch.all(cycle[1000:32000] == 1)
    np.testing.assert_allclose(cycle[-1000:].numpy(), ramp[::-1], atol=1e-7)  # tiled ones × the fade-out


def test_cycle_past_the_end_raises_data_error():
    cfg = CycleConfig(sample_rate=1000, max_len_s=0.1, end_tolerance_s=0.01)
    recording = torch.ones(1000)  # 1 s
    clamped = cut_cycles(recording, [(0.9, 1.005)], cfg)  # 5 ms past: within tolerance
    assert clamped.shape == (1, 100)
    with pytest.raises(DataError, match=r"rec\.wav line 7.*ends past the recording"):
        cut_cycles(recording, [(0.5, 1.5)], cfg, where=["rec.wav line 7"])
    with pytest.raises(DataError, match="empty"):
        cut_cycles(recording, [(0.5, 0.5)], cfg)


# ----------------------------------------------------------------------------- frontends


def test_kaldi_fbank_of_8s_has_798_frames_and_matches_torchaudio():
    g = torch.Generator().manual_seed(0)
    t = torch.arange(128000) / 16000
    waves = torch.stack([
        0.3 * torch.sin(2 * math.pi * 440 * t) + 0.05 * torch.randn(128000, generator=g) + 0.1,
        0.2 * torch.randn(128000, generator=g),
    ])
    fe = FrontendConfig()
    out = compute_frontend(waves, fe, 16000)
    assert out.shape == (2, 798, 128) == (2, n_frames(fe, 128000, 16000), 128)
    for i in range(2):
        ref = _kaldi_reference(waves[i])
        diff = (out[i] - ref).abs()
        assert diff.max() < 5e-3 and diff.mean() < 1e-4


def test_kaldi_povey_window_matches_torchaudio():
    wave = torch.rand(16000, generator=torch.Generator().manual_seed(1)) - 0.5
    out = compute_frontend(wave[None], FrontendConfig(window="povey"), 16000)[0]
    assert (out - _kaldi_reference(wave, "povey")).abs().max() < 5e-3


def test_logmel_and_time_resize_shapes():
    waves = torch.rand(3, 16000) - 0.5
    logmel = compute_frontend(waves, FrontendConfig(kind="logmel", n_mels=64), 16000)
    assert logmel.shape == (3, 1 + 16000 // 160, 64)
    resized = compute_frontend(waves, FrontendConfig(n_mels=64, target_frames=256), 16000)
    assert resized.shape == (3, 256, 64)
    # a louder input has more energy in every frame
    quiet = compute_frontend(waves * 0.1, FrontendConfig(kind="logmel", n_mels=64), 16000)
    assert torch.all(logmel.mean(dim=2) > quiet.mean(dim=2))
    assert (logmel - quiet).mean() == pytest.approx(20.0, abs=0.1)  # 10·log10(100) dB


# ----------------------------------------------------------------------------- configs


def test_frontend_key_is_stable_and_tracks_every_setting_but_workers():
    base = PreprocessConfig()
    assert frontend_key(base) == frontend_key(PreprocessConfig(workers=7))
    assert frontend_key(base).startswith("kaldi_fbank128-16k-8s-repeat-trainstats-")
    others = {
        frontend_key(PreprocessConfig(cycle=CycleConfig(pad="zero"))),
        frontend_key(PreprocessConfig(frontend=FrontendConfig(target_frames=1024))),
        frontend_key(PreprocessConfig(norm=NormConfig(mode="audioset"))),
        frontend_key(PreprocessConfig(cycle=CycleConfig(pad_fade_samples=0))),
    }
    assert len(others) == 4 and frontend_key(base) not in others


def test_configs_build_from_params_and_reject_bad_values():
    cfg = from_dict(PreprocessConfig, {"cycle": {"max_len_s": 5}, "frontend": {"kind": "logmel", "n_mels": 64},
                                       "norm": {"mode": "audioset"}, "workers": 1})
    assert cfg.cycle.max_len_s == 5.0 and cfg.frontend.n_mels == 64 and cfg.norm.mode == "audioset"
    with pytest.raises(ConfigError, match="pad"):
        CycleConfig(pad="mirror")
    with pytest.raises(ConfigError, match="kind"):
        FrontendConfig(kind="mfcc")
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(PreprocessConfig, {"frontend": {"nmels": 64}})


def test_prepare_recording_accepts_both_channel_layouts_and_rejects_integers():
    mono = np.random.default_rng(0).uniform(-0.5, 0.5, 800).astype(np.float32)
    stereo_time_first = np.stack([mono, mono], axis=1)  # soundfile's (time, channels)
    a = prepare_recording(mono, 8000, 16000, 0)
    b = prepare_recording(stereo_time_first, 8000, 16000, 0)
    c = prepare_recording(torch.from_numpy(stereo_time_first.T.copy()), 8000, 16000, 0)
    assert a.shape == (1600,) and torch.equal(a, b) and torch.equal(a, c)
    with pytest.raises(ValueError, match="float samples"):
        prepare_recording((mono * 32767).astype(np.int16), 8000, 16000, 0)
