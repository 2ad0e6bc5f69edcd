"""Data-parallel fits (seqcomp.train.ddp): how the windows are split over the processes, and a
2-process fit on CPU (gloo) against a 1-process fit of the same global batch."""

from __future__ import annotations

import copy
import signal
import time
from pathlib import Path

import pytest
import torch

from seqcomp import jobs
from seqcomp.data.windows import PreparedSeries, job_windows
from seqcomp.errors import ConfigError
from seqcomp.train.core import build_job_model
from seqcomp.train.ddp import local_batch_size, train_shard, val_shard
from seqcomp.train.sgd import EpochShuffle, fit_sgd
from seqcomp.train.stage import run_train
from test_jobs import CFG
from test_train import run_for, spec, training_child_in_second_epoch


@pytest.mark.parametrize(("n", "batch", "world"), [(209, 32, 2), (100, 12, 3), (64, 16, 4), (7, 4, 2)])
def test_the_ranks_run_the_batches_of_one_process(n: int, batch: int, world: int) -> None:
    """Rank r's k-th batch of batch/N windows and the other ranks' k-th batches are together the
    k-th batch one process draws from the same permutation (the last one without its n % N
    leftover windows); the ranks' windows are disjoint and every rank has as many batches."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(3)).tolist()
    local = batch // world
    shards = [train_shard(perm, r, world) for r in range(world)]
    assert len({len(s) for s in shards}) == 1 and sum(map(len, shards)) == n - n % world
    assert len(set().union(*map(set, shards))) == n - n % world
    usable = n - n % world
    for k in range(0, len(shards[0]), local):
        together = sorted(i for s in shards for i in s[k:k + local])
        assert together == sorted(perm[k * world:min((k + local) * world, usable)])


def test_epoch_shuffle_shards_the_same_permutation_each_epoch_anew() -> None:
    one, two = EpochShuffle(50, seed=4), [EpochShuffle(50, seed=4, rank=r, world=2) for r in range(2)]
    for epoch in (0, 1):
        for s in (one, *two):
            s.set_epoch(epoch)
        assert sorted(list(two[0]) + list(two[1])) == sorted(one) and len(two[0]) == len(list(two[0])) == 25
        assert list(two[0]) == list(one)[0::2]
    assert list(one) != [*iter(EpochShuffle(50, seed=4))]  # epoch 1 is not epoch 0's order


@pytest.mark.parametrize(("n", "world"), [(73, 2), (10, 3), (5, 5)])
def test_val_shards_cover_every_window_once(n: int, world: int) -> None:
    shards = [list(val_shard(n, r, world)) for r in range(world)]
    assert sum(shards, []) == list(range(n)) and all(shards)


def test_the_global_batch_must_split_evenly() -> None:
    assert local_batch_size({"batch_size": 32, "devices": 4}) == 8
    assert local_batch_size({"batch_size": 32}) == 32  # no devices key: one process
    with pytest.raises(ConfigError, match=r"models.x.train.batch_size 30 is not divisible by models.x.train.devices 4"):
        local_batch_size({"batch_size": 30, "devices": 4}, where="models.x.train")


def test_a_job_asks_for_a_core_and_a_gpu_per_process() -> None:
    cfg = copy.deepcopy(CFG)
    cfg["train"].update(accelerator="auto", devices=2)
    assert {m: (jobs.train_processes(cfg, m), jobs.train_gpus(cfg, m)) for m in ("linear", "lstm")} == {
        "linear": (1, 0), "lstm": (2, 2)}  # a closed-form fit runs in one process, on the CPU
    cfg["train"]["accelerator"] = "cpu"
    assert (jobs.train_processes(cfg, "lstm"), jobs.train_gpus(cfg, "lstm")) == (2, 0)


def fit(data: Path, out: Path, devices: int) -> tuple[list[dict], dict, dict[str, torch.Tensor]]:
    series = PreparedSeries.load(data)
    # dlinear: no dropout, whose masks differ between one batch of 32 and two of 16. 4 batches
    # of the 209 train windows per epoch: full ones, the same windows for 1 and 2 processes.
    s = spec("dlinear", max_epochs=2, patience=2, limit_train_batches=4, devices=devices)
    net = build_job_model(series, s)
    train, val = (job_windows(series, s, split) for split in ("train", "val"))
    rows, info = fit_sgd(net, train, val, s, s["train"], out)
    return rows, info, {k: v.clone() for k, v in net.state_dict().items()}


def test_two_processes_fit_as_one_does_with_the_same_global_batch(tiny_data: Path, tmp_path: Path) -> None:
    """Two gloo processes (16 windows each) against one process (32 windows): the same losses,
    validation means and weights after 8 steps. Not bit for bit: the gradient is the mean of two
    half-batch means, summed by gloo, against one mean over 32 windows, and the validation
    sums add two partial sums: float32 rounding in another order, about 1e-7 relative per step
    (measured: at most 2e-7 here); 1e-5 leaves room for other CPUs' kernels, and is far below
    what a wrong split shows (a shard or a window twice: differences of 1e-2 and more)."""
    one, info_one, weights_one = fit(tiny_data, tmp_path / "one", devices=1)
    start = time.perf_counter()
    two, info_two, weights_two = fit(tiny_data, tmp_path / "two", devices=2)
    print(f"2-process fit: {time.perf_counter() - start:.1f} s; "  # for the record (pytest -s), not asserted
          f"train/loss {[r['train/loss'] for r in one]} (1) {[r['train/loss'] for r in two]} (2)")
    assert (info_one["devices"], info_two["devices"]) == (1, 2) and len(one) == len(two) == 2
    for a, b in zip(one, two):
        assert a.keys() == b.keys()
        for key in ("train/loss", "val/mse", "val/mae"):
            assert b[key] == pytest.approx(a[key], rel=1e-5), (a["epoch"], key)
    assert one[1]["train/loss"] < one[0]["train/loss"]  # it trained: the comparison is not of two idle fits
    for name, w in weights_one.items():
        torch.testing.assert_close(weights_two[name], w, rtol=1e-5, atol=1e-6)
    assert (tmp_path / "two" / "checkpoints" / "best.ckpt").is_file()  # written by rank 0, read back by it
    assert not torch.distributed.is_initialized()  # left: a next fit in this process would reuse its dead peers


def test_sigterm_stops_both_processes_and_the_rerun_resumes(tiny_data: Path, tmp_path: Path) -> None:
    """SIGTERM to the job's process (rank 0) mid-fit: Lightning tells rank 1 at the next batch,
    both stop, the job exits 143 saying so, rank 1 is gone, last.ckpt is kept; a rerun with 2
    processes resumes from it (rank 1 loads it too) and finishes the epochs."""
    s = spec("tsmixer", seed=2, max_epochs=4, patience=10, batch_size=64, limit_train_batches=None, devices=2)
    child, out = training_child_in_second_epoch(s, tiny_data, tmp_path)
    workers = [int(p) for p in Path(f"/proc/{child.pid}/task/{child.pid}/children").read_text().split()]
    child.send_signal(signal.SIGTERM)
    stderr = child.communicate(timeout=60)[1]
    assert child.returncode == 128 + signal.SIGTERM, stderr
    assert "stopped by SIGTERM" in stderr and "Traceback" not in stderr, stderr
    # rank 1 and multiprocessing's resource tracker, which ends when it sees its parent's pipe close
    deadline = time.time() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert workers and not any(Path(f"/proc/{pid}").exists() for pid in workers), "a process outlived the job"
    assert (out / "checkpoints" / "last.ckpt").is_file() and not (out / "model.pt").exists()
    resumed = run_train(s, tiny_data, out, run_for(tmp_path, s))
    assert resumed["resumed_from"] == str(out / "checkpoints" / "last.ckpt") and resumed["epochs"] == 4
    assert resumed["devices"] == 2
