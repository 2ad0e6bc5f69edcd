"""The SGD fit: Lightning with early stopping, resumable checkpoints, one log line per epoch.

Imported only when a model has trainable parameters and no closed form: importing Lightning
takes seconds, which a closed-form or parameter-free model's job does not pay.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import zipfile
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from seqcomp.errors import SeqcompError
from seqcomp.io import read_json, write_json
from seqcomp.tracking import quiet_loggers
from seqcomp.train.ddp import local_batch_size, ranks, train_shard, val_shard, world_size
from seqcomp.train.module import Forecaster

log = logging.getLogger("seqcomp.train")

# Lightning's messages that say nothing about this job, or advise on things we chose on purpose:
# its `srun` hint (a Slurm job step runs one process: no srun needed), its own deprecation
# notices (not ours to act on), the step-logging interval (we log per epoch only) and its
# advice to sync validation metrics that a DDP fit has already reduced over its ranks.
QUIET_LIGHTNING = (
    r"The `srun` command is available",
    r".*is deprecated",
    r"The number of training batches .* is smaller than the logging interval",
    r"It is recommended to use `self.log\('val/",  # the same value on every rank (Forecaster.on_validation_epoch_end)
)

def resolve_device(settings: dict[str, Any]) -> tuple[str, str]:
    """(accelerator, precision) for Lightning: bf16 mixed precision on CUDA, fp32 on CPU; a DDP
    fit on CUDA needs a GPU per process (``train.devices``)."""
    if settings["accelerator"] == "gpu" and not torch.cuda.is_available():
        raise SeqcompError("train.accelerator is 'gpu' but no CUDA device is visible; use 'auto' or 'cpu'")
    cuda = torch.cuda.is_available() and settings["accelerator"] in ("auto", "gpu")
    accelerator = "gpu" if cuda else "cpu"
    if cuda and world_size(settings) > torch.cuda.device_count():
        raise SeqcompError(f"train.devices is {world_size(settings)} but {torch.cuda.device_count()} CUDA device(s) "
                           "are visible: DDP runs one process per GPU; lower train.devices or ask for more GPUs")
    precision = settings["precision"]
    if precision == "auto":
        precision = "bf16-mixed" if cuda else "32-true"
    return accelerator, precision


class _History(L.Callback):
    """Collects epoch-level metrics for history.csv, hands each row to ``on_epoch`` (tracking)
    and writes one line per epoch to the job's log, so a long grid shows where each job stands.

    Its rows are saved in Lightning checkpoints, so a resumed run keeps the epochs it ran
    before it was killed.
    """

    def __init__(self, on_epoch: Callable[[dict], None] | None = None) -> None:
        self.on_epoch = on_epoch
        self.rows: list[dict[str, float]] = []
        self.samples_this_process = 0  # for throughput: a resumed run only times what it ran
        self.epoch_start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self.samples_this_process += batch[0].shape[0]

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict["rows"])

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Runs after the epoch's validation, so train and val metrics of one epoch share a row.
        row = {"epoch": trainer.current_epoch}
        row.update({k: float(v) for k, v in trainer.callback_metrics.items() if "/" in k})
        self.rows.append(row)
        log.info("%s", epoch_line(row, trainer.max_epochs, time.perf_counter() - self.epoch_start))
        if self.on_epoch is not None:
            self.on_epoch(row)


def epoch_line(row: dict[str, float], max_epochs: int, seconds: float) -> str:
    """``epoch 3/20  train/loss 0.4123  val/mse 0.3981  val/mae 0.4012  1.9 s`` (epochs counted from 1)."""
    metrics = "  ".join(f"{k} {v:.4g}" for k, v in sorted(row.items()) if k != "epoch" and k != "train/lr")
    return f"epoch {int(row['epoch']) + 1}/{max_epochs}  {metrics}  {seconds:.1f} s"


class EpochShuffle(torch.utils.data.Sampler):
    """Shuffles with a permutation seeded by (seed, epoch). Lightning calls ``set_epoch`` before
    each epoch, so a run resumed at epoch k draws the same batches as an uninterrupted one
    (Lightning checkpoints do not hold RNG state). Under DDP each of the ``world`` ranks draws
    the same permutation and takes its own disjoint part of it (:func:`seqcomp.train.ddp.train_shard`)."""

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1):
        self.n, self.seed, self.epoch, self.rank, self.world = n, seed, 0, rank, world

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n // self.world

    def __iter__(self):  # noqa: ANN204
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(train_shard(torch.randperm(self.n, generator=gen).tolist(), self.rank, self.world))


class _EpochSeed(L.Callback):
    """Reseeds torch's global RNG (dropout) from (seed, epoch) at each epoch start, for the same reason."""

    def __init__(self, seed: int):
        self.seed = seed

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Under DDP each rank its own dropout masks (rank 0: the same stream as one process).
        torch.manual_seed(self.seed * 100_003 + trainer.current_epoch + 1_000_003 * trainer.global_rank)


def resumable_checkpoint(ckpt_dir: Path, spec: dict[str, Any]) -> str | None:
    """``last.ckpt`` of an interrupted run of the *same* job spec, else None (and no checkpoints).

    The spec is kept beside the folder, not in it: Lightning warns about a non-empty
    checkpoint folder on a fresh run. A cut-off ``last.ckpt`` (Lightning moves it from /tmp by
    copying, which a full disk stops half-way) is not a zip archive: it is not resumed from.
    """
    spec_file, last = resume_spec_file(ckpt_dir), ckpt_dir / "last.ckpt"
    if last.is_file() and zipfile.is_zipfile(last) and spec_file.is_file() and read_json(spec_file) == spec:
        return str(last)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    write_json(spec_file, spec)
    return None


def resume_spec_file(ckpt_dir: Path) -> Path:
    return ckpt_dir.with_name(ckpt_dir.name + ".spec.json")


def fit_sgd(net, train_ds, val_ds, spec, settings, out_dir, task: str = "forecast",  # noqa: ANN001
            on_epoch: Callable[[dict], None] | None = None) -> tuple[list[dict], dict]:
    """Lightning fit of ``net`` on the ``train_ds`` windows with early stopping on ``val_ds``;
    returns (history rows, timing info) and leaves the best weights in ``net``. ``on_epoch``
    gets each epoch's row as it ends (the pipeline logs it to its tracking run: MLflow sees the
    epochs as they come, with no Lightning logger). ``spec`` keys the resumable checkpoint and
    seeds the shuffling.

    With ``train.devices`` N > 1 this process is rank 0 of a DDP fit (:mod:`seqcomp.train.ddp`):
    only it returns, writes checkpoints and calls ``on_epoch``; the history holds the metrics
    of all ranks (train loss and validation means over every window)."""
    world = world_size(settings)
    if world > 1 and min(len(train_ds), len(val_ds)) < world:
        raise SeqcompError(f"train.devices is {world} but the job has {len(train_ds)} train and {len(val_ds)} val "
                           "windows: every process needs at least one of each; lower train.devices")
    accelerator, precision = resolve_device(settings)
    ckpt_dir = out_dir / "checkpoints"
    resume_from = resumable_checkpoint(ckpt_dir, spec)
    module = Forecaster(net, settings["lr"], settings["weight_decay"], settings["loss"], task=task,
                        lr_decay=settings["lr_decay"])
    threads = torch.get_num_threads()
    fit = RankFit(module, train_ds, val_ds, settings, spec["seed"], accelerator, precision, ckpt_dir, resume_from,
                  threads=max(1, threads // world))  # the job's threads shared by its processes
    history = _History(on_epoch)
    loaders = fit.loaders(rank=0)
    with ranks(world, fit_rank, fit), quiet_lightning():  # Lightning checks its environment (Slurm, devices) here
        trainer, checkpoint = fit.trainer(history)
        limit = settings["limit_train_batches"]
        log.info("fitting %s: %d train windows in %d batches%s, %d val windows, %s %s%s, up to %d epochs%s",
                 spec["model"], len(train_ds), len(loaders[0]), f" (at most {limit} per epoch)" if limit else "",
                 len(val_ds), accelerator, precision, f", {world} processes (DDP)" if world > 1 else "",
                 settings["max_epochs"], f", resumed from {resume_from}" if resume_from else "")
        torch.set_num_threads(fit.threads)
        start = time.perf_counter()
        try:
            stop_on_sigterm(trainer, lambda: trainer.fit(module, *loaders, ckpt_path=resume_from), checkpoint)
        finally:
            torch.set_num_threads(threads)
        wall = time.perf_counter() - start  # with the other ranks' start-up (imports: seconds), not their exit
    best = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)
    module.load_state_dict(best["state_dict"])
    seen = history.samples_this_process * world  # every rank runs as many windows as rank 0
    info = {
        "accelerator": accelerator,
        "precision": precision,
        "devices": world,
        "epochs": trainer.current_epoch,
        "resumed_from": resume_from,
        "fit_wall_s": wall,
        "train_samples_per_s": seen / wall if wall > 0 else None,
    }
    return history.rows, info


@dataclass
class RankFit:
    """What each rank's Trainer and loaders are built from: the same for every rank, so a
    spawned rank (ranks 1..N-1 of a DDP fit) gets it pickled and builds the same fit."""

    module: Forecaster
    train_ds: Dataset
    val_ds: Dataset
    settings: dict[str, Any]
    seed: int
    accelerator: str
    precision: str
    ckpt_dir: Path
    resume_from: str | None
    threads: int  # torch threads per process

    def loaders(self, rank: int) -> tuple[DataLoader, DataLoader]:
        """This rank's (train, val) loaders: ``batch_size`` / N windows of each global batch of its
        epoch permutation, and an N-th of the validation windows."""
        world = world_size(self.settings)
        batch = local_batch_size(self.settings)
        val = self.val_ds if world == 1 else Subset(self.val_ds, val_shard(len(self.val_ds), rank, world))
        return (
            # Own generator: each new loader iterator draws a base seed, which must not consume the
            # global RNG that dropout uses (it would shift masks between fresh and resumed runs).
            DataLoader(self.train_ds, batch_size=batch, sampler=EpochShuffle(len(self.train_ds), self.seed, rank, world),
                       generator=torch.Generator().manual_seed(self.seed)),
            DataLoader(val, batch_size=max(batch, 256), shuffle=False),
        )

    def trainer(self, history: _History) -> tuple[L.Trainer, Any]:
        """(Trainer, its ModelCheckpoint); ``history`` collects the epochs (rank 0's feeds the job)."""
        from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

        monitor = self.module.monitor
        checkpoint = ModelCheckpoint(dirpath=self.ckpt_dir, filename="best", monitor=monitor, mode="min", save_last=True)
        trainer = L.Trainer(
            **self._processes(),
            max_epochs=self.settings["max_epochs"],
            accelerator=self.accelerator,
            precision=self.precision,
            gradient_clip_val=self.settings["grad_clip"],
            limit_train_batches=self.settings["limit_train_batches"] or 1.0,
            callbacks=[
                EarlyStopping(monitor, patience=self.settings["patience"], mode="min"),
                checkpoint,
                history,
                _EpochSeed(self.seed),
            ],
            logger=False,
            deterministic=self.accelerator == "cpu",
            enable_progress_bar=sys.stderr.isatty(),  # a terminal gets Lightning's bar; a job log, one line per epoch
            enable_model_summary=False,  # the parameter count is in the start line and the run's params
            log_every_n_steps=1,  # every metric is logged per epoch; this only silences the interval warning
            num_sanity_val_steps=0,
            # Our samplers shard themselves (EpochShuffle, val_shard). Lightning's replacement would
            # wrap EpochShuffle in a DistributedSampler that reshuffles its output with its own seed
            # and never passes set_epoch on: the same order every epoch.
            use_distributed_sampler=False,
        )
        if world_size(self.settings) > 1:
            sigterm_on_rank0_only(trainer)
        return trainer, checkpoint

    def _processes(self) -> dict[str, Any]:
        """Trainer arguments for one process, or for this process's rank of a DDP fit whose ranks
        :func:`seqcomp.train.ddp.ranks` started (LightningEnvironment: processes created
        externally; not Slurm's, whose tasks would be the job's one ``srun`` task)."""
        world = world_size(self.settings)
        if world == 1:
            return {"devices": 1, "plugins": slurm_without_requeue()}
        from lightning.pytorch.plugins.environments import LightningEnvironment
        from lightning.pytorch.strategies import DDPStrategy

        backend = "nccl" if self.accelerator == "gpu" else "gloo"
        return {"devices": world, "strategy": DDPStrategy(process_group_backend=backend),
                "plugins": [LightningEnvironment()]}


def sigterm_on_rank0_only(trainer: L.Trainer) -> None:
    """A DDP fit's SIGTERM handling: rank 0 notes the signal, the other ranks ignore it, and
    Lightning's broadcast of rank 0's notice at the start of every batch stops all ranks at the
    same batch. Lightning 2.6.6's own handler also broadcasts from inside the signal handler,
    a collective the other ranks do not join at that moment: the job hung (both ranks, here,
    on gloo). Replaces the bound method the connector registers when fit starts."""
    connector = trainer._signal_connector

    def notice(signum: int, frame: Any) -> None:
        if trainer.global_rank == 0:
            connector.received_sigterm = True

    connector._sigterm_notifier_fn = notice


def fit_rank(fit: RankFit) -> None:
    """Rank 1..N-1 of a DDP fit (in a process :func:`seqcomp.train.ddp.ranks` spawned): the fit
    only; rank 0 writes the checkpoints and returns the weights. On SIGTERM (Slurm signals every
    process of the job) all ranks stop at the same batch, Lightning broadcasting rank 0's
    notice; rank 0 says so in the job's log (:func:`stop_on_sigterm`), this one exits 143."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    torch.set_num_threads(fit.threads)
    with quiet_lightning():
        trainer, _ = fit.trainer(_History())
        try:
            trainer.fit(fit.module, *fit.loaders(int(os.environ["LOCAL_RANK"])), ckpt_path=fit.resume_from)
        except SIGTERMException:
            raise SystemExit(128 + signal.SIGTERM) from None


def slurm_without_requeue() -> list:
    """Under Slurm, Lightning's Slurm environment without its auto-requeue: on its requeue signal
    it would ``scontrol requeue`` the job behind Snakemake, which resubmits a failed job itself
    (``retries``); an empty list elsewhere (Lightning detects no cluster)."""
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


def stop_on_sigterm(trainer: L.Trainer, fit: Callable[[], None], checkpoint: Any) -> None:
    """Run ``fit``; on SIGTERM (Slurm's time limit, preemption, scancel; SIGKILL follows after its
    KillWait) exit with status 143 as soon as the batch under way ends.

    Lightning notes the signal and stops the loop at the next batch; left to itself, it then
    ends the process with status 0, so Snakemake would look for outputs that are not there.
    ``last.ckpt`` (the last finished epoch: the epoch under way is dropped, so a resumed run
    computes what an uninterrupted one would) is kept, and a rerun of the job resumes from it.
    """
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    try:
        fit()
    except SIGTERMException:
        kept = f"{checkpoint.last_model_path} kept, a rerun resumes from it" if checkpoint.last_model_path \
            else "no epoch finished, a rerun starts over"
        log.warning("stopped by SIGTERM in epoch %d: %s", trainer.current_epoch + 1, kept)
        raise SystemExit(128 + signal.SIGTERM) from None


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's INFO lines (devices, tips, "fit stopped") and the warnings in QUIET_LIGHTNING
    off; every other warning still reaches the job's log."""
    with warnings.catch_warnings(), quiet_loggers("lightning.pytorch", "lightning.fabric", level=logging.WARNING):
        for pattern in QUIET_LIGHTNING:
            warnings.filterwarnings("ignore", message=pattern)
        yield
