"""`lungpipe bench train`: figures come from real training steps and a real data loader."""

from __future__ import annotations

from featuredir import write_feature_dir
from typer.testing import CliRunner

from lungpipe.bench_train import bench_loader, bench_model
from lungpipe.cli import app


def test_bench_model_times_real_steps():
    r = bench_model("cnn6", "small", batch_size=4, n_frames=64, n_mels=32, steps=1, warmup=1)
    assert r.samples_per_s > 0 and r.parameters > 1000 and r.device == "cpu"


def test_cli_prints_a_table_and_the_loader_rate(tmp_path):
    feats = write_feature_dir(tmp_path / "f", n_train=40, n_test=8)
    out = CliRunner().invoke(app, ["bench", "train", "--arch", "cnn6", "--preset", "small", "--batch-size", "4",
                                   "--n-frames", "64", "--n-mels", "32", "--steps", "1",
                                   "--features", str(feats), "--workers", "0"])
    assert out.exit_code == 0, out.output
    assert "cnn6" in out.output and "data loader alone" in out.output
    assert bench_loader(feats, 8, 0) > 0


def test_isolated_bench_reports_its_own_peak_not_the_callers():
    import resource

    import numpy as np

    from lungpipe.bench_train import bench_model_isolated, paper_input

    ballast = np.ones(400 * 2**20 // 8)  # 400 MB touched in this process only
    caller_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    r = bench_model_isolated("cnn6", "small", batch_size=2, n_frames=64, n_mels=32, steps=1, warmup=0)
    assert r.samples_per_s > 0 and r.arch == "cnn6"
    assert r.peak_memory_mb < caller_peak_mb - 200, (r.peak_memory_mb, caller_peak_mb)
    assert ballast[-1] == 1.0
    assert paper_input("mrinet") == (1024, 64) and paper_input("ast") == (798, 128)
