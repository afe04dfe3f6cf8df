"""The data stages give the same bytes on every machine (issue 14 item 1).

In a fresh process (as the stages run), a small synthetic ICBHI set (and small ESC-50 / KAUH-shaped
sets) is regenerated, its manifest built and its features computed with the preprocess stage's
pinned numerics; every file's SHA-256 is compared with the listing committed in
``tests/data/synth_small.sha256``. The same listing must also come out when numpy's CPU-specific
SIMD loops are switched off, OpenBLAS is told to use another CPU's kernels and another number of
threads and preprocess workers is used: the things that made ``data/raw`` and the features differ
between machines.

After a deliberate change to the synthesiser, rewrite the listing with
``PYTHONPATH=$PWD python tests/test_synth_reproducible.py`` and commit it with the change.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from lungpipe.data import portable as pm

REPO = Path(__file__).resolve().parents[1]
LISTING = REPO / "tests" / "data" / "synth_small.sha256"


def write_small_sets(out: Path, workers: int = 1) -> None:
    """Raw sets, the ICBHI set's manifest and its features (call before torch is imported)."""
    from lungpipe.features.numerics import pin_portable_numerics

    pin_portable_numerics()
    from lungpipe.data.icbhi import build_manifest
    from lungpipe.data.synth import SynthConfig, write_synthetic_icbhi
    from lungpipe.data.synth_datasets import write_synthetic_esc50, write_synthetic_kauh
    from lungpipe.util.atomic import write_csv

    cfg = SynthConfig(seed=3, n_patients=6, recordings_per_patient=(1, 2), cycles_per_recording=(2, 4),
                      cycle_duration_s=(1.0, 2.0))
    write_synthetic_icbhi(out / "icbhi", cfg, workers=1)
    write_synthetic_esc50(out / "esc50", n_classes=2, n_per_class=2, n_folds=2, sample_rate=8000,
                          duration_s=0.5, seed=1)
    write_synthetic_kauh(out / "kauh", {"N": 1, "Asthma": 1}, filters="B", sample_rate=4000, duration_s=0.5,
                         seed=2)
    from lungpipe.features import CycleConfig, FrontendConfig, PreprocessConfig, preprocess

    manifest = build_manifest(out / "icbhi").cycles
    write_csv(out / "manifest.csv", manifest)
    cfg = PreprocessConfig(cycle=CycleConfig(max_len_s=2.0), frontend=FrontendConfig(n_mels=32), workers=workers)
    preprocess(manifest, out / "icbhi", out / "features", cfg, progress=False)


def sha256_listing(root: Path) -> str:
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(root).as_posix()}"
             for p in sorted(root.rglob("*")) if p.is_file()]
    return "\n".join(lines) + "\n"


def _generate_in_subprocess(tmp: Path, env_extra: dict[str, str], workers: int = 1) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           **env_extra}
    code = ("import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]);"
            "import tests.test_synth_reproducible as t; t.write_small_sets(Path(sys.argv[2]), int(sys.argv[3]))")
    subprocess.run([sys.executable, "-c", code, str(REPO), str(tmp), str(workers)], env=env, check=True, cwd=REPO)
    return sha256_listing(tmp)


def _differences(expected: str, got: str) -> list[str]:
    want = dict(line.split("  ", 1)[::-1] for line in expected.splitlines())
    have = dict(line.split("  ", 1)[::-1] for line in got.splitlines())
    return sorted(name for name in want.keys() | have.keys() if want.get(name) != have.get(name))


def test_small_synthetic_sets_match_the_committed_sha256_listing(tmp_path: Path):
    got = _generate_in_subprocess(tmp_path, {})
    expected = LISTING.read_text(encoding="utf-8")
    assert len(expected.splitlines()) >= 15 and "features/train.npy" in expected
    assert got == expected, f"files differing from {LISTING.name}: {_differences(expected, got)}"


def _dispatched_cpu_features() -> list[str]:
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    return [f for f in __cpu_dispatch__ if __cpu_features__.get(f)]


def test_bytes_do_not_depend_on_cpu_dispatch_or_blas_kernel(tmp_path: Path):
    """The cause of the irreproducible data/raw: numpy picks SIMD loops (float32 sin/exp) by CPU,
    OpenBLAS a dot kernel by CPU. With both forced to other choices (and 2 preprocess workers)
    the bytes stay the same."""
    expected = LISTING.read_text(encoding="utf-8")
    env = {"OPENBLAS_CORETYPE": "Sandybridge", "OPENBLAS_NUM_THREADS": "3"}
    features = _dispatched_cpu_features()
    if features:  # a machine with nothing above numpy's baseline has no SIMD choice to switch off
        env["NPY_DISABLE_CPU_FEATURES"] = " ".join(features)
    got = _generate_in_subprocess(tmp_path, env, workers=2)
    assert got == expected, f"{env}: files differ: {_differences(expected, got)}"


def test_splitmix64_matches_the_reference_stream():
    """SplitMix64 (Steele, Lea, Flood 2014) from state 0: the reference implementation's first
    three outputs."""
    words = pm._splitmix64(np.arange(3, dtype=np.uint64), np.uint64(0))
    assert [int(w) for w in words] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]


def test_portable_rng_draws_have_the_documented_distributions():
    rng = pm.PortableRng("test", 0)
    u = rng.uniform(2.0, 4.0, 200_000)
    assert 2.0 <= u.min() and u.max() < 4.0 and abs(u.mean() - 3.0) < 0.01
    counts = np.bincount(rng.choice(4, 200_000, p=[0.1, 0.2, 0.3, 0.4]), minlength=4) / 200_000
    assert np.allclose(counts, [0.1, 0.2, 0.3, 0.4], atol=0.005)
    ints = rng.integers(3, 7, 100_000)
    assert set(np.unique(ints)) == {3, 4, 5, 6}
    z = rng.normal(1.0, 2.0, 100_000)
    assert abs(z.mean() - 1.0) < 0.03 and abs(z.std() - 2.0) < 0.03
    assert sorted(rng.permutation(10)) == list(range(10))
    # the same key gives the same stream, another key another one
    assert pm.PortableRng("a", 1).random(5).tolist() == pm.PortableRng("a", 1).random(5).tolist()
    assert pm.PortableRng("a", 1).random(5).tolist() != pm.PortableRng("a", 2).random(5).tolist()


def test_portable_functions_agree_with_libm():
    x = np.linspace(-3e4, 3e4, 600_001)
    assert np.abs(pm.sin(x) - np.sin(x)).max() < 1e-12
    assert np.abs(pm.cos(x) - np.cos(x)).max() < 1e-12
    y = np.linspace(-60.0, 10.0, 70_001)
    assert np.abs(pm.exp(y) / np.exp(y) - 1.0).max() < 1e-14
    assert np.abs(pm.hann(101) - np.hanning(101)).max() < 1e-14
    assert pm.sequential_sum(np.array([1e16, 1.0, -1e16])) == 0.0  # left to right: (1e16 + 1) - 1e16
    assert np.allclose(pm.moving_average(np.arange(6.0), 3), [1 / 3, 1, 2, 3, 4, 3])


def test_encode_wav_rounds_to_pcm_and_round_trips(tmp_path: Path):
    samples = np.array([0.0, 0.5, -1.0, 1.0, 1.2, -0.25])
    path = tmp_path / "x16.wav"
    path.write_bytes(pm.encode_wav(samples, 8000, "PCM_16"))
    data, sr = sf.read(path, dtype="int16")
    assert sr == 8000 and data.tolist() == [0, 16384, -32767, 32767, 32767, -8192]  # rint(x * 32767)
    path = tmp_path / "x24.wav"
    path.write_bytes(pm.encode_wav(samples, 4000, "PCM_24"))
    data, _ = sf.read(path, dtype="int32")
    assert (data >> 8).tolist() == [0, 4194304, -8388607, 8388607, 8388607, -2097152]
    assert sf.info(path).subtype == "PCM_24"


if __name__ == "__main__":  # rewrite the committed listing after a deliberate synthesiser change
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        write_small_sets(Path(tmp))  # run as a script: a fresh process, torch not yet loaded
        LISTING.parent.mkdir(parents=True, exist_ok=True)
        LISTING.write_text(sha256_listing(Path(tmp)), encoding="utf-8")
    print(f"wrote {LISTING}")
