"""Pre-training stage: one model on a corpus of prepared series, channel-independent, each
window scaled by its own lookback.

Every channel of every corpus dataset is a series; a sample is one window of one series
(lookback = the context, horizon = the pre-training horizon), cut from the series' train split
(its val split gives the early-stopping windows), with starts ``stride`` steps apart. Each
window is scaled by the mean and standard deviation of its lookback, the target with the same
two numbers (Chronos and Moirai scale per window; the data stage's per-series scaling is not
enough when a corpus mixes levels and trends): every series weighs the same in the loss,
whatever its scale. The model is built for one channel; transfer (seqcomp.train.transfer)
applies it to each channel of a target.

Writes model.pt (loadable as any trained model), history.csv and run.json (the corpus, its
window counts, the fit's samples per second), and tracks the run like a training job.
"""

from __future__ import annotations

import bisect
import logging
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from seqcomp.artifacts import save_model
from seqcomp.data.split import window_starts
from seqcomp.data.windows import PreparedSeries
from seqcomp.errors import SeqcompError
from seqcomp.io import atomic_path, write_json
from seqcomp.models import SeriesShape, build_model
from seqcomp.scores import scores
from seqcomp.tracking import Run, tracked
from seqcomp.train.core import discard_checkpoints, seed_everything

log = logging.getLogger("seqcomp.train")

# A lookback with a smaller standard deviation than this (a flat stretch) is scaled by it instead:
# its target then keeps its own level of change rather than being blown up by 1/0.
MIN_SCALE = 1e-3


class CorpusWindows(Dataset):
    """Windows of every channel of several prepared series: item i is (x (L, 1), y (H, 1)),
    both scaled by x's mean and standard deviation."""

    def __init__(self, series: list[torch.Tensor], starts: list[range], lookback: int, horizon: int):
        # one (T,) tensor and its window starts per corpus channel
        self.series, self.starts, self.lookback, self.horizon = series, starts, lookback, horizon
        self.offsets = [0]
        for s in starts:
            self.offsets.append(self.offsets[-1] + len(s))

    def __len__(self) -> int:
        return self.offsets[-1]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        k = bisect.bisect_right(self.offsets, i) - 1
        s = self.starts[k][i - self.offsets[k]]
        x = self.series[k][s - self.lookback : s]
        y = self.series[k][s : s + self.horizon]
        mean, std = x.mean(), x.std(unbiased=False).clamp_min(MIN_SCALE)
        return ((x - mean) / std)[:, None], ((y - mean) / std)[:, None]

    @property
    def points(self) -> int:
        """Points of the series the windows are cut from."""
        return sum(len(s) for s in self.series)


def corpus_windows(corpus: list[PreparedSeries], split: str, lookback: int, horizon: int,
                   stride: int) -> CorpusWindows:
    """``split``'s windows of every channel of ``corpus``, starts ``stride`` steps apart."""
    series, starts = [], []
    for prepared in corpus:
        every = window_starts(prepared.borders, split, lookback, horizon)[::stride]
        for c in range(prepared.channels):
            series.append(prepared.values[:, c].contiguous())
            starts.append(every)
    return CorpusWindows(series, starts, lookback, horizon)


def evenly(windows: Dataset, limit: int) -> Dataset:
    """At most ``limit`` of ``windows``, evenly spaced over them (over every series): the val
    windows early stopping scores each epoch."""
    if len(windows) <= limit:
        return windows
    return Subset(windows, torch.linspace(0, len(windows) - 1, limit).round().long().tolist())


def run_pretrain(spec: dict[str, Any], data_dirs: list[str | Path], out_dir: str | Path, run: Run,
                 threads: int = 1) -> dict[str, Any]:
    """Pre-train the model of ``spec`` on the prepared corpus datasets in ``data_dirs``."""
    from seqcomp.train.sgd import fit_sgd

    torch.set_num_threads(threads)
    out_dir = Path(out_dir)
    corpus = [PreparedSeries.load(d) for d in data_dirs]
    lookback, horizon = spec["lookback"], spec["horizon"]
    train = corpus_windows(corpus, "train", lookback, horizon, spec["stride"])
    val = evenly(corpus_windows(corpus, "val", lookback, horizon, spec["stride"]), spec["max_val_windows"])
    if len(train) == 0 or len(val) == 0:  # the config check refuses this; a changed corpus file may not be
        raise SeqcompError(f"corpus {spec['corpus']}: {len(train)} train and {len(val)} val windows of "
                           f"{lookback} + {horizon} steps; every series must be longer")
    seed_everything(spec["seed"])
    shape = SeriesShape(lookback, horizon, 1)
    net = build_model(spec["kind"], spec["params"], shape, where=f"models.{spec['model']}")
    n_params = sum(p.numel() for p in net.parameters())
    log.info("pre-training %s on %s: %d series, %d points, %d train windows, %d val windows",
             spec["model"], ", ".join(spec["corpus"]), len(train.series), train.points, len(train), len(val))
    with tracked(run):
        run.log_params({"n_params": n_params, **spec})
        run.log_dict(spec, "job_spec.json")
        try:
            rows, info = fit_sgd(net, train, val, spec, spec["train"], out_dir, "forecast", on_epoch=lambda row:
                                 run.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"])))
        finally:
            discard_checkpoints(out_dir)
        val_scores = scores(net.eval(), val, "forecast")
        summary = {"job": run.job, "model": spec["model"], "kind": spec["kind"], "n_params": n_params,
                   "corpus": spec["corpus"], "corpus_series": len(train.series), "corpus_points": train.points,
                   "n_train_windows": len(train), "n_val_windows": len(val), **info,
                   "best_val_mse": val_scores["mse"], "best_val_mae": val_scores["mae"]}
        run.log_metrics({"best_val/mse": val_scores["mse"], "best_val/mae": val_scores["mae"]})
        save_model(net, spec["kind"], spec["params"], shape, out_dir / "model.pt")
        import polars as pl

        with atomic_path(out_dir / "history.csv") as tmp:
            pl.DataFrame(rows).write_csv(tmp)
        for name in ("model.pt", "history.csv"):
            run.log_artifact(out_dir / name)
        write_json(out_dir / "run.json", summary)
    return summary
