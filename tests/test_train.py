"""Training stage: outputs, determinism, closed-form and parameter-free models, NaN handling."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
import torch

from seqcomp.artifacts import load_model
from seqcomp.errors import SeqcompError
from seqcomp.io import read_json
from seqcomp.models import MODELS
from seqcomp.tracking import Run, resolve_uri
from seqcomp.tracking.replay import Replayer
from seqcomp.train.stage import run_train
from seqcomp.train.sgd import epoch_line

SETTINGS = {"max_epochs": 3, "patience": 2, "batch_size": 32, "lr": 0.01, "weight_decay": 0.0, "lr_decay": 1.0, "grad_clip": 1.0,
            "loss": "mse", "limit_train_batches": 3, "accelerator": "cpu", "precision": "auto"}


def spec(model: str, seed: int = 0, **train) -> dict:
    return {"experiment": "seqcomp/t", "dataset": "tiny", "model": model, "kind": model, "params": {},
            "train": {**SETTINGS, **train}, "lookback": 24, "horizon": 8, "seed": seed}


def run_for(tmp_path: Path, s: dict) -> Run:
    return Run.start(tmp_path / "journal", s["experiment"], "t", f"train/{s['model']}", {})


def replayed(tmp_path: Path, run: Run):  # noqa: ANN201 - (MLflow client, the run as the store holds it)
    """Replay the test's journals into a SQLite store; the store's record of ``run``."""
    replayer = Replayer(tmp_path / "journal", resolve_uri(f"sqlite:///{tmp_path}/mlflow.db"))
    assert replayer.replay() == []
    exp = replayer.client.get_experiment_by_name("seqcomp/t").experiment_id
    (record,) = replayer.client.search_runs([exp], f"tags.`seqcomp.journal` = '{run.path.stem}'")
    return replayer.client, record


def test_sgd_model_writes_outputs_and_logs_epochs(tiny_data: Path, tmp_path: Path) -> None:
    s = spec("dlinear")
    run = run_for(tmp_path, s)
    summary = run_train(s, tiny_data, tmp_path / "out", run)
    assert summary["method"] == "sgd" and summary["epochs"] >= 1
    history = pl.read_csv(tmp_path / "out" / "history.csv")
    assert {"epoch", "train/loss", "val/mse", "val/mae"} <= set(history.columns)
    # the saved model is the best checkpoint: its val MSE is the best epoch's
    assert summary["best_val_mse"] == pytest.approx(history["val/mse"].min(), rel=1e-4)
    c, record = replayed(tmp_path, run)
    assert [m.step for m in c.get_metric_history(record.info.run_id, "val/mse")] == history["epoch"].to_list()
    assert record.info.status == "FINISHED"
    assert read_json(tmp_path / "out" / "run.json")["job"] == run.job
    assert isinstance(load_model(tmp_path / "out" / "model.pt"), torch.nn.Module)


def test_a_models_aux_loss_is_added_to_the_training_loss(tiny_data: Path, tmp_path: Path) -> None:
    """The hook for training-only loss terms (a mixture of experts' load balancing): any
    submodule's ``aux_loss()`` after its forward; models without one train as before."""
    from seqcomp.train.module import auxiliary_loss

    class Aux(torch.nn.Module):
        def __init__(self, value: float | None):
            super().__init__()
            self.value = value

        def aux_loss(self) -> torch.Tensor | None:
            return None if self.value is None else torch.tensor(self.value)

    assert auxiliary_loss(torch.nn.Linear(2, 2)) is None
    assert auxiliary_loss(torch.nn.Sequential(Aux(None), torch.nn.Linear(2, 2))) is None
    assert auxiliary_loss(torch.nn.Sequential(Aux(0.5), torch.nn.Sequential(Aux(0.25)))).item() == 0.75
    s = spec("moe_transformer")
    s["params"] = {"d_model": 8, "n_heads": 2, "n_layers": 1, "d_ff": 16}
    summary = run_train(s, tiny_data, tmp_path / "out", run_for(tmp_path, s))
    assert summary["method"] == "sgd" and summary["epochs"] >= 1


def test_each_epoch_logs_one_line_and_lightning_stays_quiet(tiny_data: Path, tmp_path: Path, caplog, recwarn) -> None:  # noqa: ANN001
    s = spec("dlinear", patience=3)
    with caplog.at_level(logging.INFO, logger="seqcomp"):
        run_train(s, tiny_data, tmp_path / "out", run_for(tmp_path, s))
    lines = [r.getMessage() for r in caplog.records if r.name == "seqcomp.train"]
    assert lines[0].startswith("fitting dlinear:") and "train windows" in lines[0]
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/3", "2/3", "3/3"]
    assert all("train/loss" in line and "val/mse" in line and line.endswith(" s") for line in epochs)
    noisy = [str(w.message) for w in recwarn if "lightning" in w.filename]
    assert not [m for m in noisy if any(n in m for n in ("exists and is not empty", "logging interval", "srun"))], noisy


def test_epoch_line_format() -> None:
    line = epoch_line({"epoch": 0, "train/loss": 0.51234, "val/mse": 0.4, "train/lr": 0.01}, 20, 1.234)
    assert line == "epoch 1/20  train/loss 0.5123  val/mse 0.4  1.2 s"


def test_lr_decay_multiplies_the_rate_every_epoch(tiny_data: Path, tmp_path: Path) -> None:
    s = spec("dlinear", lr_decay=0.5, patience=3)
    run_train(s, tiny_data, tmp_path / "out", run_for(tmp_path, s))
    lrs = pl.read_csv(tmp_path / "out" / "history.csv")["train/lr"].to_list()
    assert lrs == pytest.approx([0.01, 0.005, 0.0025], rel=1e-6)


def test_same_seed_same_model(tiny_data: Path, tmp_path: Path) -> None:
    outs = []
    for name in ("a", "b"):
        s = spec("dlinear", seed=5)
        run_train(s, tiny_data, tmp_path / name, run_for(tmp_path, s))
        outs.append(torch.load(tmp_path / name / "model.pt", weights_only=True)["state_dict"])
    assert all(torch.equal(outs[0][k], outs[1][k]) for k in outs[0])


def test_closed_form_and_parameter_free_models_skip_sgd(tiny_data: Path, tmp_path: Path) -> None:
    for model, method in (("linear", "closed form"), ("naive", "no trainable parameters")):
        s = spec(model)
        summary = run_train(s, tiny_data, tmp_path / model, run_for(tmp_path, s))
        assert summary["method"] == method and summary["epochs"] == 0
    assert read_json(tmp_path / "linear" / "run.json")["best_val_mse"] < read_json(tmp_path / "naive" / "run.json")["best_val_mse"]


@dataclass
class _NoConfig:
    pass


class Exploding(torch.nn.Module):
    Config = _NoConfig

    def __init__(self, shape, cfg) -> None:  # noqa: ANN001
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.horizon = shape.horizon

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, -1:, :].expand(-1, self.horizon, -1) * self.w / 0.0


def test_nan_loss_fails_clearly_and_marks_the_run(tiny_data: Path, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setitem(MODELS._entries, "exploding", f"{__name__}:Exploding")
    s = spec("exploding")
    run = run_for(tmp_path, s)
    with pytest.raises(SeqcompError, match="training loss became"):
        run_train(s, tiny_data, tmp_path / "out", run)
    assert not (tmp_path / "out" / "model.pt").exists()
    assert replayed(tmp_path, run)[1].info.status == "FAILED"


CHILD = """
import json, sys, time
import seqcomp.train.module as module
from seqcomp.tracking import Run
from seqcomp.train.stage import run_train

step = module.Forecaster.training_step
def slow_step(self, batch, i):  # slow enough that the parent can kill it mid-training
    time.sleep(0.05)
    return step(self, batch, i)
module.Forecaster.training_step = slow_step
spec, data, out, journal = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
run_train(spec, data, out, Run.start(journal, spec["experiment"], "t", "train/kill", {}))
"""


def test_killed_training_resumes_to_the_same_result(tiny_data: Path, tmp_path: Path) -> None:
    s = spec("tsmixer", seed=2, max_epochs=5, patience=10, limit_train_batches=None)
    uninterrupted = run_train(s, tiny_data, tmp_path / "a", run_for(tmp_path, s))
    out = tmp_path / "b"
    child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(s), str(tiny_data), str(out), str(tmp_path / "journal")])
    deadline = time.time() + 120
    while not (out / "checkpoints" / "last.ckpt").exists() and child.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not (out / "model.pt").exists(), "the child finished before it could be killed"
    resumed = run_train(s, tiny_data, out, run_for(tmp_path, s))
    assert resumed["resumed_from"] and resumed["epochs"] == uninterrupted["epochs"]
    assert resumed["best_val_mse"] == pytest.approx(uninterrupted["best_val_mse"], rel=1e-5)
    a = torch.load(tmp_path / "a" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(out / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    hist_a, hist_b = pl.read_csv(tmp_path / "a" / "history.csv"), pl.read_csv(out / "history.csv")
    assert hist_a["epoch"].to_list() == hist_b["epoch"].to_list()
    assert hist_b["val/mse"].to_list() == pytest.approx(hist_a["val/mse"].to_list(), rel=1e-5)


TERM_CHILD = """
import sys, time
import seqcomp.train.module as module
from seqcomp.cli import main

step = module.Forecaster.training_step
def slow_step(self, batch, i):  # an epoch of a few seconds: SIGTERM lands mid-epoch
    time.sleep(0.2)
    return step(self, batch, i)
module.Forecaster.training_step = slow_step
sys.exit(main(sys.argv[1:]))
"""


def training_child_in_second_epoch(s: dict, data: Path, tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    """``python -m seqcomp train`` of ``s`` in a child process (TERM_CHILD), once it has written
    last.ckpt (its first epoch) and gone on into the next; and its output folder."""
    out = tmp_path / "out"
    args = ["train", "--spec", json.dumps(s), "--data", str(data), "--out", str(out),
            "--journal", str(tmp_path / "journal")]
    child = subprocess.Popen([sys.executable, "-c", TERM_CHILD, *args], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "checkpoints" / "last.ckpt").exists() and child.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.5)  # into the next epoch
    assert child.poll() is None, "the child finished before it could be stopped"
    return child, out


def test_sigterm_stops_training_at_once_and_the_rerun_resumes(tiny_data: Path, tmp_path: Path) -> None:
    """What Slurm sends at a time limit, a preemption or scancel (then SIGKILL after KillWait):
    the job stops within seconds, keeps last.ckpt (the last finished epoch, so the resumed run
    computes what an uninterrupted one would), marks its run FAILED and exits 143, which
    Snakemake and Slurm read as failed; the rerun resumes from last.ckpt."""
    s = spec("tsmixer", seed=2, max_epochs=5, patience=10, batch_size=64, limit_train_batches=None)
    child, out = training_child_in_second_epoch(s, tiny_data, tmp_path)
    sent = time.time()
    child.send_signal(signal.SIGTERM)
    stderr = child.communicate(timeout=60)[1]
    assert child.returncode == 128 + signal.SIGTERM, stderr
    # well inside Slurm's default KillWait (30 s), on a loaded CI machine too (alone: ~2 s, mostly exiting)
    assert time.time() - sent < 15, f"the job took {time.time() - sent:.1f} s to stop"
    assert "stopped by SIGTERM" in stderr and "Traceback" not in stderr, stderr
    assert (out / "checkpoints" / "last.ckpt").is_file() and not (out / "model.pt").exists()
    journal = next((tmp_path / "journal").rglob("*.jsonl")).read_text().splitlines()
    assert json.loads(journal[-1]) == {**json.loads(journal[-1]), "op": "finish", "status": "FAILED"}
    resumed = run_train(s, tiny_data, out, run_for(tmp_path, s))
    assert resumed["resumed_from"] == str(out / "checkpoints" / "last.ckpt") and resumed["epochs"] == 5


def test_under_slurm_lightning_does_not_requeue_behind_snakemake(tiny_data: Path, tmp_path: Path,
                                                                  monkeypatch) -> None:  # noqa: ANN001
    """In a Slurm job Lightning would requeue it itself (scontrol) on its requeue signal; Snakemake
    resubmits failed jobs itself, so that is off, and training runs as anywhere else."""
    from seqcomp.train.sgd import slurm_without_requeue

    assert slurm_without_requeue() == []
    for key, value in {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "rule_train", "SLURM_JOB_ID": "7",
                       "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}.items():
        monkeypatch.setenv(key, value)
    [environment] = slurm_without_requeue()
    assert environment.auto_requeue is False
    s = spec("dlinear", max_epochs=1)
    assert run_train(s, tiny_data, tmp_path / "out", run_for(tmp_path, s))["epochs"] == 1


def test_a_finished_run_leaves_no_checkpoint_to_resume(tiny_data: Path, tmp_path: Path) -> None:
    """A code change reruns the same spec: it must train again, not resume the old final epoch."""
    s = spec("dlinear", max_epochs=2)
    run_train(s, tiny_data, tmp_path / "out", run_for(tmp_path, s))
    assert not (tmp_path / "out" / "checkpoints").exists()
    again = run_train(s, tiny_data, tmp_path / "out", run_for(tmp_path, s))
    assert again["resumed_from"] is None and again["epochs"] == 2


def test_checkpoints_of_another_spec_are_not_resumed(tiny_data: Path, tmp_path: Path) -> None:
    s = spec("dlinear", max_epochs=2)
    run_train(s, tiny_data, tmp_path / "out", run_for(tmp_path, s))
    other = spec("dlinear", max_epochs=2, lr=0.002)
    assert run_train(other, tiny_data, tmp_path / "out", run_for(tmp_path, other))["resumed_from"] is None


def test_the_training_core_needs_no_tracking_and_leaves_no_files(tiny_data: Path, tmp_path: Path) -> None:
    from seqcomp.data.windows import PreparedSeries
    from seqcomp.train.core import build_job_model, train_job

    series, work = PreparedSeries.load(tiny_data), tmp_path / "work"
    s = spec("dlinear", max_epochs=2)
    seen: list[dict] = []
    result = train_job(build_job_model(series, s), series, s, work, on_epoch=seen.append)
    assert [row["epoch"] for row in seen] == [0, 1] and result.history == seen
    assert result.info["method"] == "sgd" and result.val["mse"] == pytest.approx(min(r["val/mse"] for r in seen), rel=1e-4)
    assert not work.exists() or not any(work.iterdir())  # the checkpoints are gone
    again = train_job(build_job_model(series, s), series, s, tmp_path / "again")
    assert all(torch.equal(a, b) for a, b in zip(result.net.state_dict().values(), again.net.state_dict().values()))
