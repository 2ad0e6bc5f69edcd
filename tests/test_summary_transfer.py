"""The transfer table: numbers (mean, std over seeds, averages over horizons) and the statements
under it are computed from the metrics, the regime from each row's ``transfer`` record."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from conftest import ROOT
from seqcomp.models import MODELS
from seqcomp.summary.published import load_published
from seqcomp.summary.transfer import (
    REPEAT, SCRATCH_FULL, average_stat, column_of, horizon_stat, pretrain_record, transfer_groups, transfer_markdown,
)

HORIZONS = (96, 192)


def transfer(regime: str, fraction: float | None = None, windows: str | None = None, tune: str | None = None,
             overlap: bool = False) -> dict:
    return {"pretrained": "ttm", "regime": regime, "fraction": fraction, "windows": windows, "tune": tune,
            "context": 512, "pretrain_horizon": 720, "corpus": ["synth"], "overlap": overlap}


def row(model: str, horizon: int, seed: int, mse: float, t: dict | None = None, kind: str | None = None,
        lookback: int = 512, pass_kind: str = "fp32") -> dict:
    r = {"dataset": "etth1", "model": model, "kind": kind or model, "lookback": lookback, "horizon": horizon,
         "seed": seed, "pass": pass_kind, "pass_kind": pass_kind, "mse": mse, "mae": mse / 2, "latency": {}}
    return {**r, "transfer": t} if t else r


# MSE per (variant, horizon, seed): the name is only a label, the meaning is in `transfer`
ZERO = {96: [0.50, 0.52], 192: [0.60, 0.62]}
FEW = {96: [0.40, 0.44, 0.42], 192: [0.50, 0.50, 0.50]}
SCRATCH5 = {96: [0.70, 0.72, 0.74], 192: [0.80, 0.80, 0.80]}
REPEAT_MSE = {96: 0.55, 192: 0.58}  # zero-shot beats it at 96, not at 192


def fabricated(overlap: bool = False) -> list[dict]:
    rows = []
    for h in HORIZONS:
        rows += [row("ttm_zs", h, s, v, transfer("zero_shot", overlap=overlap)) for s, v in enumerate(ZERO[h])]
        rows += [row("ttm_fs5_first_whole", h, s, v, transfer("few_shot", 0.05, "first", "whole"))
                 for s, v in enumerate(FEW[h])]
        rows += [row("ttm_scratch5_first", h, s, v, transfer("scratch", 0.05, "first")) for s, v in enumerate(SCRATCH5[h])]
        rows.append(row("naive", h, 0, REPEAT_MSE[h]))
        rows.append(row("ttm", h, 0, 0.45))  # the architecture from scratch on the full data, at L = context
        rows.append(row("ttm", h, 0, 9.0, lookback=96))  # another lookback: not the reference
        rows.append(row("ttm_zs", h, 0, 9.0, transfer("zero_shot"), pass_kind="int8"))  # a compression pass: not fp32
    rows.append(row("naive", 336, 0, 1.0))  # a horizon no variant ran: not in the table
    rows.append(row("lstm", 96, 0, 0.3))  # an unrelated model
    return rows


def test_cells_are_mean_and_std_over_seeds_per_regime() -> None:
    (group,) = transfer_groups(fabricated())
    assert (group.dataset, group.pretrained, group.context, group.horizons) == ("etth1", "ttm", 512, [96, 192])
    few = column_of(transfer("few_shot", 0.05, "first", "whole"))
    assert few.label == "5% few-shot (first, whole)"
    stat = horizon_stat(group, few, 96, "mse")
    assert stat.mean == pytest.approx(0.42) and stat.std == pytest.approx(statistics.stdev([0.40, 0.44, 0.42]))
    assert stat.n == 3
    assert horizon_stat(group, few, 96, "mae").mean == pytest.approx(0.21)
    rep = horizon_stat(group, REPEAT, 96, "mse")
    assert rep.mean == 0.55 and rep.std is None and rep.n == 1  # one seed: no std
    assert horizon_stat(group, SCRATCH_FULL, 192, "mse").mean == 0.45  # L96 and the int8 pass left out
    assert horizon_stat(group, REPEAT, 336, "mse") is None
    # avg: per seed over the horizons, then over seeds
    avg = average_stat(group, few, "mse")
    per_seed = [(a + b) / 2 for a, b in zip(FEW[96], FEW[192])]
    assert avg.mean == pytest.approx(statistics.fmean(per_seed)) and avg.std == pytest.approx(statistics.stdev(per_seed))
    assert avg.horizons == (96, 192)


def test_the_markdown_table_and_statements() -> None:
    text = transfer_markdown(fabricated(), [], [], "etth1")
    assert text.startswith("# etth1: pre-trained forecasters")
    header = next(line for line in text.splitlines() if line.startswith("| pre-trained model"))
    assert header.split(" | ")[2:] == ["zero-shot", "5% few-shot (first, whole)", "scratch on 5% (first)",
                                       "scratch, full data", "Repeat |"]
    assert "| ttm (L512) | 96 | 0.5100 ± 0.0141 (n=2) | 0.4200 ± 0.0200 (n=3) |" in text
    assert "zero-shot beats Repeat on every horizon (test MSE): **no (fails at H 192: 0.6100 vs 0.5800)**" in text
    few, scratch = statistics.fmean([0.42, 0.50]), statistics.fmean([0.72, 0.80])
    assert (f"5% few-shot (first, whole) vs scratch on the same 5%: avg MSE {few:.4f} vs {scratch:.4f} over H 96/192 "
            f"(Δ {(few / scratch - 1) * 100:+.1f}%): pre-training helps.") in text
    assert "overlaps" not in text


def test_zero_shot_beating_repeat_everywhere_says_yes() -> None:
    rows = [r for r in fabricated() if not (r["model"] == "naive")]
    rows += [row("naive", h, 0, 1.3) for h in HORIZONS]
    assert "zero-shot beats Repeat on every horizon (test MSE): **yes**." in transfer_markdown(rows, [], [], "t")


def test_few_shot_worse_than_scratch_is_said() -> None:
    rows = [{**r, "mse": r["mse"] + 1} if r["model"] == "ttm_fs5_first_whole" else r for r in fabricated()]
    assert "pre-training does not help here." in transfer_markdown(rows, [], [], "t")


def test_an_overlapping_corpus_is_said() -> None:
    text = transfer_markdown(fabricated(overlap=True), [], [], "t")
    assert "**The pre-training corpus of ttm (L512) overlaps etth1**" in text


def test_no_transfer_variant_no_text() -> None:
    rows = [r for r in fabricated() if "transfer" not in r]
    assert transfer_markdown(rows, load_published(ROOT / "config" / "published" / "ett.yaml"), [], "t") == ""


def test_the_gap_to_published_values() -> None:
    published = [r for r in load_published(ROOT / "config" / "published" / "ett.yaml") if r["model"] == "ttm"]
    text = transfer_markdown(fabricated(), published, [], "t")
    # zero-shot published at 96/192/336/720: we ran 96 and 192 only
    zs = (statistics.fmean(ZERO[96]) + statistics.fmean(ZERO[192])) / 2
    assert ("zero-shot vs published TTM (ttm-research-r2) zero-shot (`ttm_r2_benchmark`, published at L 512; ours at "
            f"L512): avg MSE over H 96/192 {zs:.4f} vs 0.3750 ({(zs / 0.375 - 1) * 100:+.1f}%) (ours lacks H 336/720); "
            "H 96 0.5100 vs 0.364 (+40.1%)") in text
    assert "H 336 not run vs 0.404" in text
    # the 5% row goes beside our 5% few-shot column
    assert "5% few-shot (first, whole) vs published TTM (ttm-research-r2) few-shot 5%" in text
    assert "## Published sources" in text and "`ttm_r2_benchmark`" in text


def test_the_pretraining_jobs_table() -> None:
    run = {"model": "ttm", "kind": "ttm", "n_params": 800_000, "corpus": ["synth", "ks"], "corpus_points": 123456,
           "n_train_windows": 1000, "n_val_windows": 100, "epochs": 3, "fit_wall_s": 12.5,
           "train_samples_per_s": 240.0, "best_val_mse": 0.31}
    record = pretrain_record("results/p/pretrain/ttm/L512/run.json", run)
    assert record["context"] == 512
    text = transfer_markdown([], [], [record], "t")  # pre-training alone is still reported
    assert "| ttm | 512 | synth, ks | 123456 | 800000 | 1000 | 100 | 3 | 12.5 | 240 | 0.31 |" in text


def test_published_transfer_rows_load_against_the_schema() -> None:
    rows = load_published(ROOT / "config" / "published" / "ett.yaml")
    transfer_rows = [r for r in rows if r["regime"]]
    assert {r["model"] for r in transfer_rows} <= set(MODELS.names())  # ttm, moe_transformer: registry models
    assert all(r["fraction"] is not None for r in transfer_rows if r["regime"] == "few_shot")
    zs = {r["horizon"]: r["value"] for r in transfer_rows if r["model"] == "ttm" and r["regime"] == "zero_shot"}
    assert zs["avg"] == 0.394 and statistics.fmean(zs[h] for h in ("96", "192", "336", "720")) == pytest.approx(0.394, abs=6e-4)
    fs = {r["horizon"]: r["value"] for r in transfer_rows if r["model"] == "ttm" and r["regime"] == "few_shot"}
    assert fs["avg"] == 0.383 and "720" not in fs  # over 96-336 only, as published


def test_a_published_average_alone_is_set_beside_ours_over_our_horizons() -> None:
    rows = [{**r, "transfer": {**r["transfer"], "pretrained": "moe_transformer"}} if "transfer" in r else r
            for r in fabricated()]
    published = [r for r in load_published(ROOT / "config" / "published" / "ett.yaml") if r["model"] == "moe_transformer"]
    text = transfer_markdown(rows, published, [], "t")
    zs = (statistics.fmean(ZERO[96]) + statistics.fmean(ZERO[192])) / 2
    assert (f"avg MSE {zs:.4f} over our H 96/192 vs 0.4 over the paper's horizons ({(zs / 0.4 - 1) * 100:+.1f}%)") in text
    assert "scratch, full data" not in text  # no plain moe_transformer was run


def test_a_published_row_may_name_the_pretrained_models_kind() -> None:
    """Our MoE entry is called ``moe``; the published Time-MoE row names the registry kind."""
    rows = [{**r, "kind": "moe_transformer", "transfer": {**r["transfer"], "pretrained": "moe"}} if "transfer" in r else r
            for r in fabricated()]
    published = [r for r in load_published(ROOT / "config" / "published" / "ett.yaml") if r["model"] == "moe_transformer"]
    assert "vs 0.4 over the paper's horizons" in transfer_markdown(rows, published, [], "t")
    assert "vs 0.4 over" not in transfer_markdown([{**r, "kind": "ttm"} for r in rows], published, [], "t")


def test_the_summary_stage_writes_transfer_md(tmp_path: Path) -> None:
    """run_summary reads the regime from metrics.json and the pre-training jobs from run.json."""
    import json

    from test_summary import LOOKBACK, fake_metrics
    from seqcomp.summary.stage import run_summary

    paths = fake_metrics(tmp_path)
    for path in map(Path, paths):  # the lstm rows stand for the zero-shot variant of a pre-trained dlinear
        m = json.loads(path.read_text())
        if m["model"] == "lstm":
            t = {**transfer("zero_shot"), "pretrained": "dlinear", "context": LOOKBACK}
            path.write_text(json.dumps({**m, "transfer": t}))
    run = tmp_path / "pretrain" / "dlinear" / f"L{LOOKBACK}" / "run.json"
    run.parent.mkdir(parents=True)
    run.write_text(json.dumps({"model": "dlinear", "kind": "dlinear", "n_params": 10, "corpus": ["synth"],
                               "corpus_points": 5000, "n_train_windows": 40, "n_val_windows": 8, "epochs": 2,
                               "fit_wall_s": 1.5, "train_samples_per_s": 50.0, "best_val_mse": 0.4}))
    run_summary(paths, [], [], tmp_path / "summary", tmp_path / "plots", pretrain_runs=[str(run)])
    text = (tmp_path / "summary" / "transfer.md").read_text()
    assert f"| dlinear (L{LOOKBACK}) | avg | 0.5050 ± 0.0071 (n=2) | 0.6050 ± 0.0071 (n=2) | 1.5050 ± 0.0071 (n=2) |" in text
    assert "zero-shot beats Repeat on every horizon (test MSE): **yes**." in text
    assert f"| dlinear | {LOOKBACK} | synth | 5000 | 10 | 40 | 8 | 2 | 1.5 | 50 | 0.4 |" in text
