"""`lungpipe bench train`: figures come from real training steps and a real data loader."""

from __future__ import annotations

import re

from featuredir import write_feature_dir
from typer.testing import CliRunner

from lungpipe.cli import app
from lungpipe.training.bench import bench_loader, bench_model


def test_bench_model_times_the_engine_and_the_plain_loop_on_real_steps():
    r = bench_model("cnn6", "small", batch_size=4, n_frames=64, n_mels=32, steps=2, warmup=1)
    assert r.samples_per_s > 0 and r.parameters > 1000 and r.device == "cpu"
    assert r.plain is not None and r.plain.samples_per_s > 0
    assert r.ratio == r.engine.samples_per_s / r.plain.samples_per_s
    for loop in (r.engine, r.plain):
        assert 0.0 < loop.data_wait_share < 1.0 and loop.peak_memory_mb > 0


def test_cli_prints_both_loops_their_ratio_and_the_loader_rate(tmp_path):
    feats = write_feature_dir(tmp_path / "f", n_train=40, n_test=8)
    out = CliRunner().invoke(app, ["bench", "train", "--arch", "cnn6", "--preset", "small", "--batch-size", "4",
                                   "--n-frames", "64", "--n-mels", "32", "--steps", "1", "--no-isolated",
                                   "--features", str(feats), "--workers", "0"])
    assert out.exit_code == 0, out.output
    assert "cnn6" in out.output and "data loader alone" in out.output
    line = next(ln for ln in out.output.splitlines() if ln.startswith("cnn6"))
    assert "engine / plain" in out.output and re.search(r" \d+\.\d\dx ", line)  # the ratio column
    assert bench_loader(feats, 8, 0) > 0


def test_isolated_bench_reports_its_own_peak_not_the_callers():
    import resource

    import numpy as np

    from lungpipe.training.bench import bench_model_isolated, paper_input

    ballast = np.ones(400 * 2**20 // 8)  # 400 MB touched in this process only
    caller_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    r = bench_model_isolated("cnn6", "small", batch_size=2, n_frames=64, n_mels=32, steps=1, warmup=0, plain=False)
    assert r.samples_per_s > 0 and r.arch == "cnn6" and r.plain is None
    assert r.peak_memory_mb < caller_peak_mb - 200, (r.peak_memory_mb, caller_peak_mb)
    assert ballast[-1] == 1.0
    assert paper_input("mrinet") == (1024, 64) and paper_input("ast") == (798, 128)
