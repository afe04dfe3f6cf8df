"""Data-parallel training under a real ``torchrun`` on the CPU (gloo, 2 processes).

The global batch is the same for any number of processes (``train.batch_size`` is split over the
ranks), and a ``DistributedSampler`` deals rank r the positions r, r+2, ... of the epoch's
permutation, so one step of 2 ranks x 8 samples covers the same 16 samples as one step of 1 rank
x 16: with an unweighted mean loss, no BatchNorm and DDP's gradient averaging the two runs are the
same computation up to float32 summation order. Tolerance: 1e-5 relative (measured: < 1e-6).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from servers import free_port

from lungpipe.training.distributed import DistributedPlacement, EvalShard, unshard
from lungpipe.training.launch import DistributedConfig, per_rank_batch, torchrun_command, under_torchrun
from lungpipe.util.typed_config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "ddp_worker.py"
RTOL = 1e-5


def worker_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "WORLD_SIZE", "RANK")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return env


def torchrun(nproc: int, *args: str) -> list[str]:
    cfg = DistributedConfig(nproc_per_node=nproc, rdzv_endpoint=f"127.0.0.1:{free_port()}")
    return torchrun_command(cfg, str(WORKER), list(args))


def run_worker(nproc: int, out: Path, *args: str) -> dict:
    proc = subprocess.run(torchrun(nproc, "--out", str(out), *args), env=worker_env(), capture_output=True,
                          text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((out / "result.json").read_text())


def weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "weights.pt", weights_only=True)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("two_ranks")
    run_worker(2, out)
    return out


def test_two_processes_give_the_loss_curve_and_weights_of_one_process(two_ranks, tmp_path):
    one = run_worker(1, tmp_path)
    two = json.loads((two_ranks / "result.json").read_text())
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert len(one["train_loss"]) == 3
    np.testing.assert_allclose(two["train_loss"], one["train_loss"], rtol=RTOL)
    assert one["train_loss"][-1] < 0.5 * one["train_loss"][0]  # it learned, so the curves say something
    w1, w2 = weights(tmp_path), weights(two_ranks)
    assert w1.keys() == w2.keys()
    for key in w1:
        scale = float(w1[key].abs().max())
        assert float((w1[key] - w2[key]).abs().max()) <= RTOL * scale, key


def test_validation_is_gathered_from_both_ranks_in_dataset_order(two_ranks):
    result = json.loads((two_ranks / "result.json").read_text())
    gathered, local = np.array(result["gathered_val"]), np.array(result["local_val"])
    assert gathered.shape == (13, 4)  # 7 + 6 rows: nothing repeated, nothing lost
    np.testing.assert_allclose(gathered, local, atol=1e-6)


def test_a_killed_two_process_run_resumes_from_last_pt_to_the_same_weights(two_ranks, tmp_path):
    out, checkpoints = tmp_path / "out", tmp_path / "checkpoints"
    out.mkdir()
    cmd = torchrun(2, "--out", str(out), "--checkpoints", str(checkpoints), "--pause-after-epoch", "0")
    proc = subprocess.Popen(cmd, env=worker_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not (out / "paused").exists():
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "epoch 0 never finished"
            time.sleep(0.5)
        assert (checkpoints / "last.pt").exists()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun ...
        for pid_file in out.glob("pid.rank*"):  # ... and both ranks, which torchrun starts in sessions of their own
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
        proc.wait(timeout=60)
    assert not (out / "result.json").exists()
    resumed = run_worker(2, out, "--checkpoints", str(checkpoints))
    assert resumed["resumed_from_epoch"] == 1
    uninterrupted = json.loads((two_ranks / "result.json").read_text())
    np.testing.assert_allclose(resumed["train_loss"], uninterrupted["train_loss"], rtol=1e-6)
    w_resumed, w_full = weights(out), weights(two_ranks)
    for key in w_full:
        torch.testing.assert_close(w_resumed[key], w_full[key], rtol=1e-6, atol=0)


def test_unshard_interleaves_ranks_and_cuts_the_padding():
    n, world = 7, 3
    shards = [torch.tensor(list(EvalShard(n, r, world)) + [-1] * (3 - len(EvalShard(n, r, world))))
              for r in range(world)]
    assert [len(EvalShard(n, r, world)) for r in range(world)] == [3, 2, 2]
    assert unshard(shards, n).tolist() == list(range(n))


def test_distributed_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="train.distributed.nproc_per_node"):
        DistributedConfig(nproc_per_node=0)
    with pytest.raises(ConfigError, match="train.distributed.node_rank"):
        DistributedConfig(nnodes=2, node_rank=2, rdzv_endpoint="10.0.0.1:29400")
    with pytest.raises(ConfigError, match="rdzv_endpoint is needed"):
        DistributedConfig(nnodes=2)
    with pytest.raises(ConfigError, match="host:port"):
        DistributedConfig(rdzv_endpoint="10.0.0.1")
    with pytest.raises(ConfigError, match="train.distributed.backend"):
        DistributedConfig(backend="mpi")


def test_the_global_batch_splits_evenly_over_the_ranks_or_the_error_names_the_key():
    assert per_rank_batch(64, 2) == 32
    with pytest.raises(ConfigError, match="mrinet: train.batch_size 30 .* multiple of 4"):
        per_rank_batch(30, 4, "mrinet: train.batch_size")


def test_sync_batchnorm_on_cpu_ranks_is_a_config_error_naming_the_key():
    from tiny_training import TinyNet, quiet_cfg

    placement = DistributedPlacement(torch.device("cpu"), rank=0, world_size=2)
    with pytest.raises(ConfigError, match="train.sync_batchnorm needs CUDA"):
        placement.prepare(TinyNet(), quiet_cfg(sync_batchnorm=True))


def test_torchrun_command_for_one_and_for_several_machines():
    one = torchrun_command(DistributedConfig(nproc_per_node=2), "stages/train.py", ["cnn6"])
    assert one[1:] == ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", "stages/train.py", "cnn6"]
    assert not DistributedConfig().launches and DistributedConfig(nproc_per_node=2).launches
    multi = DistributedConfig(nproc_per_node=4, nnodes=2, node_rank=1, rdzv_endpoint="10.0.0.1:29400")
    assert multi.world_size == 8
    cmd = torchrun_command(multi, "stages/train.py", ["mrinet", "--fold", "official"])
    assert cmd[cmd.index("--nnodes") + 1] == "2" and cmd[cmd.index("--node_rank") + 1] == "1"
    assert cmd[cmd.index("--rdzv_endpoint") + 1] == "10.0.0.1:29400" and "--standalone" not in cmd


def test_under_torchrun_reads_the_variables_torchrun_sets(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not under_torchrun()
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert under_torchrun()


def test_the_train_stage_launches_torchrun_and_rank_0_alone_writes(tmp_path):
    """``train.distributed.nproc_per_node: 2``: the real stage re-launches itself under torchrun;
    one model, one predictions file (test rows in order, gathered from both ranks) and one MLflow run."""
    import shutil

    import mlflow
    import pandas as pd
    import yaml
    from featuredir import write_feature_dir

    from lungpipe.inference.model_file import load_model
    from lungpipe.training.data import SpectrogramDataset
    from lungpipe.training.probabilities import predict_proba

    shutil.copytree(ROOT / "stages", tmp_path / "stages")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["arch"] = {"cnn6": params["arch"]["cnn6"]}
    params["train"].update(architectures=["cnn6"], seeds=[0], use_tuned=False,
                           distributed={"nproc_per_node": 2, "rdzv_endpoint": f"127.0.0.1:{free_port()}"})
    params["train"]["defaults"].update(batch_size=8, threads=1, log_every=1)
    params["arch"]["cnn6"]["train"] = {"epochs": 2, "early_stopping_patience": 0}
    params["evaluate"]["n_boot"] = 10
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    features = write_feature_dir(tmp_path / "data/features" / params["arch"]["cnn6"]["frontend"], n_train=48,
                                 n_test=21, n_frames=32, n_mels=16)
    from mlflow_store import fresh_db

    env = {**worker_env(), "MLFLOW_TRACKING_URI": fresh_db(tmp_path / "mlflow.db")}  # an existing, empty store
    proc = subprocess.run([sys.executable, str(tmp_path / "stages/train.py"), "cnn6"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "launching 2 processes" in proc.stderr
    out = tmp_path / "models/cnn6/official/seed0"
    assert json.loads((out / "config.json").read_text())["distributed"] == {"world_size": 2}
    assert len(json.loads((out / "history.json").read_text())) == 2
    test_index = pd.read_csv(features / "test.csv")
    preds = pd.read_csv(out / "predictions.csv")
    assert preds["cycle"].tolist() == test_index["cycle"].tolist()  # 21 rows over 2 ranks, back in order
    prob_cols = [c for c in preds.columns if c.startswith("prob")]
    expected = predict_proba(load_model(out / "model.pt"),
                             SpectrogramDataset(np.load(features / "test.npy"), test_index["label"].to_numpy()))
    np.testing.assert_allclose(preds[prob_cols].to_numpy(), expected, atol=1e-5)
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(experiment_names=[f"lungpipe-{params['data']['source']}"])
    assert len(runs) == 1  # rank 0 alone logs
