"""Size sweeps: methods grouped by their settings, the Pareto front, each method at 10x and the
+1%-at-10x target table, on synthetic result rows (no pipeline run)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from seqcomp.summary.core import aggregate
from seqcomp.summary.stage import evaluations, pass_reports, run_summary
from seqcomp.summary.sweep import (
    at_ratio, group_profile, method_label, pareto_rows, pass_counts, points, sweep_markdown, sweeping_methods,
    target_table,
)

GPTQ = {"scale_dtype": "float8_e4m3", "keep_dtype": "float16"}


def test_a_method_is_its_kind_and_settings_less_the_size_ones() -> None:
    w2, w4 = method_label("gptq_weight_sim", {"bits": 2, **GPTQ}), method_label("gptq_weight_sim", {**GPTQ, "bits": 4})
    assert w2 == w4 == "gptq_weight_sim (keep_dtype=float16, scale_dtype=float8_e4m3)"
    every = method_label("gptq_weight_sim", {"bits": 2, **GPTQ, "groups": ["recurrent", "linear"]})
    assert every != w2 and "groups=recurrent/linear" in every
    assert method_label("vq_sim", {"codebook_size": 16, "dim": 2}) == method_label("vq_sim", {}) == "vq_sim"
    # a nested pass: its size keys do not count either, its other settings do
    tune = {"epochs": 3, "base": {"kind": "rtn_weight_sim", "bits": 3, "keep_dtype": "float16"}}
    same = method_label("pv_tune_sim", {**tune, "base": {**tune["base"], "bits": 2}})
    other = method_label("pv_tune_sim", {**tune, "base": {**tune["base"], "keep_dtype": "float32"}})
    assert method_label("pv_tune_sim", tune) == same != other
    assert same.startswith("pv_tune_sim (base=rtn_weight_sim#") and same.endswith(", epochs=3)")
    assert method_label("pv_tune_sim", {**tune, "base": {**tune["base"], "kind": "gptq_weight_sim"}}) != same


def row(model: str, pass_: str, method: str, ratio: float, change: float, fp32_bytes: int = 40_000,
        profile: str | None = None) -> dict:
    return {"dataset": "d", "lookback": 96, "horizon": 96, "model": model, "pass": pass_, "pass_kind": "k",
            "method": method, "compression_ratio": ratio, "size_bytes": int(fp32_bytes / ratio),
            "mse": 0.4 * (1 + change / 100), "mse_change_pct": change, "group_profile": profile}


def test_the_pareto_front_keeps_exactly_the_non_dominated_passes() -> None:
    pts = points(pl.DataFrame([row("m", "a", "A", 4, 0.1), row("m", "b", "A", 8, 0.5), row("m", "c", "B", 6, 0.9),
                               row("m", "d", "B", 12, 3.0), row("m", "e", "B", 10, 4.0)]))
    front = pareto_rows(pts)
    # c is larger than b and worse; e is larger than d and worse
    assert front["pass"].to_list() == ["d", "b", "a"]


def test_each_method_at_10x_is_its_best_measured_pass_at_or_above_10x() -> None:
    pts = points(pl.DataFrame([row("m", "a2", "A", 16, 5.0), row("m", "a3", "A", 10.5, 0.8), row("m", "a4", "A", 8, 0.1),
                               row("m", "b4", "B", 9.9, 0.0)]))
    tenx = at_ratio(pts)
    assert tenx.select("method", "pass").rows() == [("A", "a3")]  # B never gets to 10x: no row


def test_the_target_table_counts_per_pass_and_says_what_bounds_the_misses() -> None:
    rows = []
    for i in range(12):
        model = f"m{i:02d}"
        hits = i < 9  # pass "good" reaches the target on 9 of 12 models
        rows += [row(model, "good", "A", 11 if hits else 10.5, 0.5 if hits else 2.0, profile=f"recurrent {i}%"),
                 row(model, "fair", "A", 12, 0.9 if i < 5 else 1.5),
                 row(model, "safe", "B", 6, 0.2)]
    pts = points(pl.DataFrame(rows))
    counts = pass_counts(pts)
    assert counts.select("pass", "models_reached").rows()[:2] == [("good", 9), ("fair", 5)]
    table = target_table(pts)
    assert table.height == 12 and table["config"].unique().to_list() == ["good"]
    assert table["reached"].sum() == 9
    missed = table.filter(~pl.col("reached"))
    assert missed["bounded_by"].to_list() == ["recurrent 9%", "recurrent 10%", "recurrent 11%"]
    assert table.filter(pl.col("reached"))["bounded_by"].is_null().all()
    # the smallest pass within +1%: fair (12x) where it is within, else good (11x), else safe (6x)
    assert table.select("model", "best_within").rows()[0] == ("m00", "fair")
    assert table.filter(pl.col("model") == "m07")["best_within"][0] == "good"
    assert table.filter(pl.col("model") == "m10")["best_within"][0] == "safe"
    md = sweep_markdown(pl.DataFrame(rows), "t")
    assert "**reached**: the best single pass configuration, `good`, is within +1% at >= 10x on 9 of 12" in md
    assert "| m10 | safe | 6.0x | 10.5x | +2.00% | False | recurrent 10% |" in md


def test_no_section_without_a_method_at_two_sizes() -> None:
    table = pl.DataFrame([row("m", "a", "A", 4, 0.1), row("m", "b", "B", 8, 0.5)])
    assert sweeping_methods(points(table)) == [] and sweep_markdown(table, "t") == ""


def test_group_profile_reads_shares_sensitivity_and_bounds_from_a_report() -> None:
    report = {"size": {"bytes": 1000}, "size_by_group": {"linear": 600, "recurrent": 300, "other": 100},
              "group_summary": {"linear": {"output_rel_err": 0.002}, "recurrent": {"output_rel_err": 0.05}},
              "bounds": {"recurrent": "min 6 bits"}}
    assert group_profile(report) == ('linear 60% (out err 0.2%), recurrent 30% (out err 5%), other 10%; '
                                     'bounds: {"recurrent":"min 6 bits"}')
    assert group_profile({"size": {"bytes": 10}}) is None  # written before sizes per group were recorded


def write(path: Path, content: dict) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))
    return str(path)


def test_the_summary_joins_each_pass_to_its_report_and_writes_the_sweep(tmp_path: Path) -> None:
    metrics, reports = [], []
    passes = {"fp32": ("fp32", {}, 1.0, 1.0), "w2": ("rtn_weight_sim", {"bits": 2, **GPTQ}, 14.0, 1.3),
              "w4": ("rtn_weight_sim", {"bits": 4, **GPTQ}, 7.0, 1.002), "w3": ("rtn_weight_sim", {"bits": 3}, 9.0, 1.01)}
    for model in ("lstm", "s4"):
        for name, (kind, params, ratio, factor) in passes.items():
            job = f"d/{model}/L24-H8/seed0/{name}"
            metrics.append(write(tmp_path / "evaluate" / job / "metrics.json", {
                "dataset": "d", "model": model, "kind": model, "lookback": 24, "horizon": 8, "seed": 0, "pass": name,
                "pass_kind": kind, "mse": 0.5 * factor, "mae": 0.4, "simulated": kind != "fp32",
                "size_bytes": int(4000 / ratio), "file_bytes": 1, "fp32_bytes": 4000, "compression_ratio": ratio,
                "quantized_fraction": 1.0, "latency": {"b1": {"median_ms": 1.0}}}))
            reports.append(write(tmp_path / "compress" / job / "report.json", {
                "pass": kind, "pass_name": name, "pass_params": params, "pass_wall_s": 2.5,
                "size": {"bytes": int(4000 / ratio)}, "size_by_group": {"linear": int(4000 / ratio)}}))
    frame = evaluations([json.loads(Path(p).read_text()) for p in metrics], [], reports)
    assert frame.filter(pl.col("pass") == "w2")["method"].to_list() == [method_label("rtn_weight_sim", GPTQ)] * 2
    assert pass_reports(reports).height == 8 and aggregate(frame)["pass_wall_s"].drop_nulls().to_list() == [2.5] * 8
    run_summary(metrics, [], reports, tmp_path / "summary", tmp_path / "plots")
    compression = (tmp_path / "summary" / "compression.md").read_text()
    assert "| kernels | pass_wall_s |" in compression and "| w4 | 1 | 0.501 | 0.2 | 571 | 7 | 4.571 | simulated | 2.5 |" in compression
    sweep = (tmp_path / "summary" / "sweep.md").read_text()
    assert "**not reached**" in sweep and "| lstm | w4 | 7.0x |" in sweep
    assert (tmp_path / "plots" / "size_accuracy.png").stat().st_size > 5000


@pytest.mark.parametrize("missing", ["method", "group_profile"])
def test_rows_without_report_settings_are_their_own_method(missing: str) -> None:
    table = pl.DataFrame([row("m", "a", "A", 4, 0.1), row("m", "b", "A", 8, 0.5)]).with_columns(
        pl.lit(None, pl.Utf8).alias(missing))
    pts = points(table)
    assert (pts["method"].to_list() == ["a", "b"]) if missing == "method" else (pts["method"].to_list() == ["A", "A"])
    assert target_table(pts).height == 1


def test_where_no_pass_reaches_the_target_the_closest_configuration_is_shown() -> None:
    rows = [row(m, "tiny", "A", 14, 5.0) for m in ("a", "b")] + [row(m, "fair", "A", 8, 0.5) for m in ("a", "b")]
    table = target_table(points(pl.DataFrame(rows)))
    assert set(table["config"]) == {"fair"} and not table["reached"].any()  # within +1% on both, not the larger
    assert "**not reached**: no pass reaches it on any model; the closest, `fair`" in sweep_markdown(pl.DataFrame(rows), "t")
