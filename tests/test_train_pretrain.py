"""Pre-training: the channel-independent corpus windows, their per-window scaling, the stage's
outputs, and transfer jobs started from its checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from seqcomp.data.stage import run_data
from seqcomp.data.windows import PreparedSeries
from seqcomp.io import read_json
from seqcomp.tracking import Run
from seqcomp.train.pretrain import MIN_SCALE, corpus_windows, evenly, run_pretrain
from seqcomp.train.stage import run_train

TTM = {"revin": True, "patch_len": 8, "d_model": 16, "levels": 1, "n_layers": 1, "decoder_d_model": 8,
       "decoder_layers": 1}
SETTINGS = {"max_epochs": 2, "patience": 1, "batch_size": 16, "lr": 0.01, "weight_decay": 0.0, "lr_decay": 1.0,
            "grad_clip": 1.0, "loss": "mse", "limit_train_batches": 3, "accelerator": "cpu", "precision": "auto"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("corpus") / "data"
    run_data({"kind": "kernel_synth", "n_series": 4, "length": 160, "seed": 0, "split": {"ratios": [0.7, 0.2, 0.1]}},
             out, name="corpus")
    return out


def pretrain_spec(**changes) -> dict:
    return {"experiment": "seqcomp/t", "model": "ttm", "kind": "ttm", "params": TTM, "train": SETTINGS,
            "lookback": 32, "horizon": 8, "seed": 0, "corpus": ["corpus"], "stride": 1, "max_val_windows": 50,
            **changes}


def test_every_channel_is_a_series_and_each_window_is_scaled_by_its_lookback(corpus: Path) -> None:
    prepared = PreparedSeries.load(corpus)
    windows = corpus_windows([prepared, prepared], "train", 32, 8, stride=2)
    per_series = len(range(32, prepared.borders[0] - 8 + 1, 2))
    assert len(windows) == 2 * prepared.channels * per_series and len(windows.series) == 2 * prepared.channels
    x, y = windows[per_series + 3]  # the second series' fourth window
    assert x.shape == (32, 1) and y.shape == (8, 1)
    raw = prepared.values[:, 1]
    start = 32 + 3 * 2
    lookback = raw[start - 32 : start]
    scale = lookback.std(unbiased=False).clamp_min(MIN_SCALE)
    torch.testing.assert_close(y[:, 0], (raw[start : start + 8] - lookback.mean()) / scale)
    assert abs(x.mean().item()) < 1e-5 and abs(x.std(unbiased=False).item() - 1) < 1e-4
    kept = evenly(windows, 7)
    assert len(kept) == 7 and kept[0][0].equal(windows[0][0]) and kept[6][0].equal(windows[len(windows) - 1][0])


def pretrained(corpus: Path, out: Path) -> dict:
    return run_pretrain(pretrain_spec(), [corpus], out, Run.start(out.parent / "journal", "seqcomp/t", "p",
                                                                  "pretrain/ttm/32", {}))


def test_pretraining_writes_a_model_its_history_and_what_it_saw(corpus: Path, tmp_path: Path) -> None:
    summary = pretrained(corpus, tmp_path / "pre")
    run = read_json(tmp_path / "pre" / "run.json")
    assert run == summary and run["corpus"] == ["corpus"] and run["corpus_series"] == 4
    assert run["n_val_windows"] == 50 and run["n_train_windows"] == 4 * len(range(32, 112 - 8 + 1))
    assert run["train_samples_per_s"] > 0 and run["best_val_mse"] > 0
    payload = torch.load(tmp_path / "pre" / "model.pt", weights_only=True)
    assert payload["shape"] == {"lookback": 32, "horizon": 8, "channels": 1}
    assert not (tmp_path / "pre" / "checkpoints").exists()


def transfer_spec(regime: str, tune: str | None = None, fraction: float | None = None) -> dict:
    return {"experiment": "seqcomp/t", "dataset": "tiny", "model": f"ttm_{regime}", "kind": "ttm", "params": TTM,
            "train": SETTINGS, "lookback": 32, "horizon": 8, "seed": 0,
            "transfer": {"pretrained": "ttm", "regime": regime, "fraction": fraction,
                         "windows": "first" if fraction else None, "tune": tune, "pretrain_horizon": 8,
                         "corpus": ["corpus"], "context": 32, "overlap": False}}


def test_transfer_jobs_start_from_the_checkpoint(corpus: Path, tiny_data: Path, tmp_path: Path) -> None:
    pretrained(corpus, tmp_path / "pre")
    ckpt = tmp_path / "pre" / "model.pt"
    pre_state = torch.load(ckpt, weights_only=True)["state_dict"]

    def run(spec: dict, name: str, source: Path | None = ckpt) -> dict:
        return run_train(spec, tiny_data, tmp_path / name, Run.start(tmp_path / "journal", "seqcomp/t", name,
                                                                     f"train/{name}", {}), pretrained=source)

    zero = run(transfer_spec("zero_shot"), "zs")
    assert zero["epochs"] == 0 and zero["method"].startswith("zero-shot") and zero["transfer"]["regime"] == "zero_shot"
    saved = torch.load(tmp_path / "zs" / "model.pt", weights_only=True)["state_dict"]
    assert saved["net.embed.weight"].equal(pre_state["net.embed.weight"])
    assert saved["weight"].shape == (3,) and saved["weight"].eq(pre_state["weight"]).all()  # RevIN over 3 channels

    head = run(transfer_spec("few_shot", tune="head", fraction=0.5), "head")
    assert head["method"] == "sgd" and head["tuned_modules"] == ["adapter", "decoder", "head"]
    assert head["best_val_mse"] == min(head["pretrained_val_mse"], head["fine_tuned_val_mse"])
    tuned = torch.load(tmp_path / "head" / "model.pt", weights_only=True)["state_dict"]
    assert tuned["net.embed.weight"].equal(pre_state["net.embed.weight"])  # the backbone stays as pre-trained
    if not head["kept_pretrained_weights"]:
        assert not tuned["net.head.2.weight"].equal(pre_state["net.head.2.weight"])

    scratch = run(transfer_spec("scratch", fraction=0.5), "scratch", source=None)
    assert "pretrained_from" not in scratch and scratch["method"] == "sgd"
    with pytest.raises(Exception, match="needs --pretrained"):
        run(transfer_spec("full"), "full", source=None)
