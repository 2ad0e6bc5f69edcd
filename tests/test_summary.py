"""Summary stage: tables join each pass to its fp32 baseline; every figure draws what it claims."""

from __future__ import annotations

import json
import random
from pathlib import Path

import matplotlib.pyplot as plt
import polars as pl
import pytest

from seqcomp.summary import FRAMES, PLOTS, Plot, plots
from seqcomp.summary.core import aggregate, forecast_examples, step_errors, to_html, to_markdown
from seqcomp.names import parse_job_path
from seqcomp.summary.stage import layer_sensitivity, load_histories, load_metrics, run_summary

HORIZON, LOOKBACK = 8, 24
# model -> (fp32 mse, fp32 bytes); naive has no weights
MODELS = {"lstm": (0.5, 40_000), "dlinear": (0.6, 4_000), "naive": (1.5, 0)}
# pass -> (kind, mse factor, size factor, latency factor, simulated)
PASSES = {"fp32": ("fp32", 1.0, 1.0, 1.0, False), "int8_dynamic": ("int8_dynamic", 1.01, 0.25, 0.5, False),
          "w4_rtn_sim": ("rtn_weight_sim", 1.05, 0.14, 1.0, True)}


def metrics_row(model: str, pass_: str, seed: int) -> dict:
    mse, size = MODELS[model]
    kind, f_mse, f_size, f_ms, simulated = PASSES[pass_]
    size = int(size * f_size)
    steps = [mse * f_mse * (0.5 + i / HORIZON) for i in range(HORIZON)]
    return {
        "dataset": "d", "model": model, "kind": model, "lookback": LOOKBACK, "horizon": HORIZON, "seed": seed,
        "pass": pass_, "pass_kind": kind, "mse": mse * f_mse + seed * 0.01, "mae": 0.4, "n_windows": 10,
        "simulated": simulated, "size_bytes": size, "file_bytes": size + 500, "fp32_bytes": MODELS[model][1],
        "compression_ratio": MODELS[model][1] / size if size else None,
        "quantized_fraction": 0.0 if kind == "fp32" else 1.0, "mse_per_step": steps,
        "latency": {"b1": {"median_ms": 2.0 * f_ms}, "b32": {"median_ms": 20.0 * f_ms}},
        "examples": {"channel": "OT", "windows": [0, 5, 9], "context": [[0.1 * i for i in range(LOOKBACK)]] * 3,
                     "truth": [[1.0] * HORIZON] * 3, "forecast": [[0.9] * HORIZON] * 3},
    }


def fake_metrics(tmp_path: Path) -> list[str]:
    paths = []
    for seed in (0, 1):
        for model in MODELS:
            for pass_ in PASSES:
                path = tmp_path / "evaluate" / "d" / model / f"L{LOOKBACK}-H{HORIZON}" / f"seed{seed}" / pass_ / "metrics.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(metrics_row(model, pass_, seed)))
                paths.append(str(path))
    return paths


def fake_history(tmp_path: Path) -> list[str]:
    path = tmp_path / "train" / "d" / "lstm" / f"L{LOOKBACK}-H{HORIZON}" / "seed0" / "history.csv"
    path.parent.mkdir(parents=True)
    pl.DataFrame({"epoch": [0, 1], "train/loss": [1.0, 0.8], "val/mse": [0.9, 0.7]}).write_csv(path)
    path.with_name("run.json").write_text(json.dumps({"best_val_mse": 0.7}))
    return [str(path)]


def fake_report(tmp_path: Path, sensitivity: bool) -> list[str]:
    layers = [{"name": f"layers.{i}.weight", "action": "int4", "numel": 64} for i in range(3)]
    if sensitivity:
        for i, layer in enumerate(layers):
            layer["sensitivity"] = {"2": 10.0 ** -i, "4": 10.0 ** (-i - 2), "8": 10.0 ** (-i - 4)}
    path = tmp_path / "compress" / "d" / "lstm" / f"L{LOOKBACK}-H{HORIZON}" / "seed0" / "mixed" / "report.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pass_name": "mixed", "layers": layers, "sensitivity_metric": "val MSE increase"}))
    return [str(path)]


@pytest.fixture
def frame(tmp_path: Path) -> pl.DataFrame:
    return load_metrics(fake_metrics(tmp_path))


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def legend_is_outside(fig: plt.Figure) -> bool:
    fig.canvas.draw()
    right = max(ax.get_window_extent().x1 for ax in fig.axes if ax.get_visible())
    return all(leg.get_window_extent().x0 >= right for leg in fig.legends) and bool(fig.legends)


def visible_axes(fig: plt.Figure) -> list[plt.Axes]:
    return [ax for ax in fig.axes if ax.get_visible()]


def test_metrics_join_their_fp32_baseline(frame: pl.DataFrame) -> None:
    int8 = frame.filter((pl.col("pass") == "int8_dynamic") & (pl.col("model") == "lstm") & (pl.col("seed") == 0))
    assert int8["mse_change_pct"][0] == pytest.approx(1.0)
    assert int8["speedup_b1"][0] == pytest.approx(2.0)
    assert int8["bits_per_weight"][0] == pytest.approx(8.0)
    simulated = frame.filter(pl.col("pass") == "w4_rtn_sim")
    assert simulated["speedup_b1"].is_null().all(), "a simulated pass must not claim a speed-up"
    table = aggregate(frame)
    assert table.height == 9 and set(table["seeds"]) == {2}
    lstm_fp32 = table.filter((pl.col("model") == "lstm") & (pl.col("pass") == "fp32"))
    assert lstm_fp32["mse"][0] == pytest.approx(0.505) and lstm_fp32["mse_std"][0] > 0
    assert table.filter(pl.col("model") == "naive")["bits_per_weight"].is_null().all()


def test_summary_writes_tables_and_every_plot(tmp_path: Path) -> None:
    run_summary(fake_metrics(tmp_path), fake_history(tmp_path), fake_report(tmp_path, True),
              tmp_path / "summary", tmp_path / "plots")
    md = (tmp_path / "summary" / "results.md").read_text()
    assert md.count("\n| d |") == 9 and "mse_std" in md
    assert (tmp_path / "summary" / "results.html").read_text().count("<tr><td>d</td>") == 9
    assert pl.read_csv(tmp_path / "summary" / "results.csv").height == 18
    for name in PLOTS:
        assert (tmp_path / "plots" / f"{name}.png").stat().st_size > 5000, name
    headline = (tmp_path / "summary" / "headline.md").read_text()
    assert "paired t-test" in headline and "| d | lstm |" in headline
    assert (tmp_path / "summary" / "transfer.md").read_text() == ""  # no pre-trained model: no page section
    assert (tmp_path / "summary" / "experts.md").read_text() == ""  # no MoE model's report: no page section
    joined = pl.read_csv(tmp_path / "summary" / "results.csv").filter(pl.col("val_mse").is_not_null())
    assert set(joined["model"]) == {"lstm"} and set(joined["lookback"]) == {LOOKBACK} and set(joined["val_mse"]) == {0.7}


def test_every_registered_plot_names_a_frame_and_a_function() -> None:
    import importlib

    for name, plot in PLOTS.items():
        module, _, attr = plot.function.partition(":")
        assert plot.frame in FRAMES and callable(getattr(importlib.import_module(module), attr)), name


def extra_figure(frame: pl.DataFrame) -> plt.Figure:
    """A plot added the way a user adds one: a function here, one line in the registry."""
    fig, ax = plt.subplots()
    ax.bar(frame["model"].to_list(), frame["mse"].to_list())
    return fig


def test_a_registered_plot_is_drawn_and_logged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(PLOTS, "extra", Plot(f"{__name__}:extra_figure", "evaluations", "Extra", "MSE per model"))
    run_summary(fake_metrics(tmp_path), [], [], tmp_path / "summary", tmp_path / "plots")
    assert (tmp_path / "plots" / "extra.png").stat().st_size > 5000
    assert {"published.md", "compression.md", "provenance.json"} <= {p.name for p in (tmp_path / "summary").iterdir()}


class RecordedRun:
    """Stands in for seqcomp.tracking.Run: records how the run was ended."""

    def __init__(self) -> None:
        self.status: str | None = None

    def finish(self, status: str = "FINISHED") -> None:
        self.status = status


def test_a_crashed_summary_ends_its_run_failed(tmp_path: Path) -> None:
    run = RecordedRun()
    with pytest.raises(FileNotFoundError):
        run_summary([str(tmp_path / "missing" / "metrics.json")], [], [], tmp_path / "summary", tmp_path / "plots",
                    run=run)  # type: ignore[arg-type]
    assert run.status == "FAILED"


def test_job_keys_are_parsed_from_paths(tmp_path: Path) -> None:
    h = load_histories(fake_history(tmp_path))
    assert h["model"].to_list() == ["lstm", "lstm"] and h["lookback"][0] == LOOKBACK
    assert parse_job_path("r/compress/d/m/L9-H3/seed2/p/report.json", "compress") == {
        "dataset": "d", "model": "m", "lookback": 9, "horizon": 3, "seed": 2}
    with pytest.raises(ValueError, match="not a train/"):
        parse_job_path("elsewhere/history.csv", "train")


def test_markdown_and_html_tables() -> None:
    table = pl.DataFrame({"a": [1.23456789, None], "b": ["x", "<y>"]})
    md = to_markdown(table)
    assert "| 1.235 | x |" in md and "|  | <y> |" in md
    page = to_html(table, "t & u")
    assert "<td>1.235</td>" in page and "&lt;y&gt;" in page and "<title>t &amp; u</title>" in page


@pytest.mark.parametrize("n", [1, 2, 25])
def test_pareto_front_is_exactly_the_non_dominated_points(n: int) -> None:
    rng = random.Random(n)
    sizes = [rng.choice([1.0, 2.0, 4.0, 8.0]) for _ in range(n)]
    errors = [rng.choice([0.1, 0.2, 0.3]) for _ in range(n)]
    front = plots.pareto_front(sizes, errors)

    def dominated(i: int) -> bool:
        return any(sizes[j] <= sizes[i] and errors[j] <= errors[i] and (sizes[j], errors[j]) != (sizes[i], errors[i])
                   for j in range(n))

    assert {(sizes[i], errors[i]) for i in front} == {(sizes[i], errors[i]) for i in range(n) if not dominated(i)}
    assert [sizes[i] for i in front] == sorted(sizes[i] for i in front)


def test_pareto_figure(frame: pl.DataFrame) -> None:
    fig = plots.pareto_figure(frame)
    (ax,) = visible_axes(fig)
    assert ax.get_xscale() == "log" and "size" in ax.get_xlabel() and "MSE" in ax.get_ylabel()
    assert len(ax.collections) == 6  # 2 models with weights x 3 passes; naive is a reference level
    (front,) = [line for line in ax.lines if line.get_label() == "front"]
    xs, ys = front.get_data()
    means = plots.seed_means(frame).filter(pl.col("size_bytes") > 0)
    for x, y in zip(xs, ys):  # every front point is a real point that no other point dominates
        assert means.filter((pl.col("size_bytes") == x) & (pl.col("mse") == y)).height == 1
        assert means.filter((pl.col("size_bytes") <= x) & (pl.col("mse") < y)).is_empty()
    assert "naive" in ax.get_title() and "above the chart" in ax.get_title()  # MSE 1.5 is off the chart
    assert any(t.get_text().endswith("KiB") for t in ax.get_xticklabels())
    assert legend_is_outside(fig)
    assert "no test MSE" in plots.pareto_figure(frame.clear()).axes[0].texts[0].get_text()


def test_bits_figure(frame: pl.DataFrame) -> None:
    fig = plots.bits_figure(frame)
    axes = visible_axes(fig)
    assert [ax.get_title().splitlines()[-1] for ax in axes] == ["int8_dynamic", "rtn_weight_sim (simulated)"]
    for ax in axes:
        assert ax.get_xscale() == "log" and "bits per weight" in ax.get_xlabel() and "%" in ax.get_ylabel()
        lines = [line for line in ax.lines if len(line.get_xdata()) > 1]  # axhline(0) has 2 points too
        assert len(lines) == 3  # lstm, dlinear, and the zero line; naive has no bits
    assert legend_is_outside(fig)


def test_bits_figure_without_compression_says_so(frame: pl.DataFrame) -> None:
    fig = plots.bits_figure(frame.filter(pl.col("pass") == "fp32"))
    assert "nothing to compare" in fig.axes[0].texts[0].get_text()


def test_per_step_figure(tmp_path: Path) -> None:
    rows = [json.loads(Path(p).read_text()) for p in fake_metrics(tmp_path)]
    fig = plots.per_step_figure(step_errors(rows))
    (ax,) = visible_axes(fig)
    assert len(ax.lines) == 3 and all(len(line.get_xdata()) == HORIZON for line in ax.lines)
    assert "lead time" in ax.get_xlabel() and "MSE" in ax.get_ylabel()
    assert "clipped" in ax.get_title()  # naive's 1.5 would flatten lstm and dlinear
    assert legend_is_outside(fig)


def test_training_curves_figure(tmp_path: Path) -> None:
    fig = plots.training_curves_figure(load_histories(fake_history(tmp_path)))
    (ax,) = visible_axes(fig)
    assert len(ax.lines) == 1 and ax.get_xlabel() == "epoch" and "MSE" in ax.get_ylabel()
    assert legend_is_outside(fig)
    assert "no training history" in plots.training_curves_figure(pl.DataFrame()).axes[0].texts[0].get_text()


def test_forecast_figure(tmp_path: Path) -> None:
    rows = [json.loads(Path(p).read_text()) for p in fake_metrics(tmp_path)]
    examples = forecast_examples(rows)
    assert examples.filter(pl.col("step") < 0)["forecast"].is_null().all()
    fig = plots.forecast_figure(examples)
    axes = visible_axes(fig)
    assert len(axes) == 3  # one per example window
    for ax in axes:
        assert len(ax.lines) == 2 + 3 + 1  # lookback, truth, 3 models, the forecast-start marker
        assert "OT" in ax.get_ylabel() and "time step" in ax.get_xlabel()
    assert legend_is_outside(fig)
    assert "no forecast examples" in plots.forecast_figure(pl.DataFrame()).axes[0].texts[0].get_text()


def test_latency_figure(frame: pl.DataFrame) -> None:
    fig = plots.latency_figure(frame)
    axes = visible_axes(fig)
    assert [ax.get_title().split()[-1] for ax in axes] == ["1", "32"]  # batch sizes in numeric order
    for ax in axes:
        assert ax.get_yscale() == "log" and "ms" in ax.get_ylabel()
        assert len(ax.patches) == 9  # 3 models x 3 passes
        assert sum(bool(p.get_hatch()) for p in ax.patches) == 3  # the simulated pass, for each model
    assert legend_is_outside(fig)


def test_sensitivity_figure(tmp_path: Path) -> None:
    fig = plots.sensitivity_figure(layer_sensitivity(fake_report(tmp_path, True)))
    (ax,) = visible_axes(fig)
    assert len(ax.lines) == 3 and ax.get_yscale() == "log"  # one line per bit width; values span 1e-6..1
    assert ax.get_ylabel().startswith("val MSE increase") and len(ax.get_xticklabels()) == 3
    assert legend_is_outside(fig)


def test_sensitivity_figure_skips_reports_without_it(tmp_path: Path) -> None:
    layers = layer_sensitivity(fake_report(tmp_path, False))
    assert layers.is_empty()
    path = Path(fake_report(tmp_path, False)[0])  # the allocator's per-layer measures are no bit-width curve
    report = json.loads(path.read_text())
    report["layers"][0]["sensitivity"] = {"output": 0.1, "loss": 0.2}
    path.write_text(json.dumps(report))
    assert layer_sensitivity([str(path)]).is_empty()
    assert "no pass" in plots.sensitivity_figure(layers).axes[0].texts[0].get_text()


def test_runs_frame_matches_the_metrics_files(frame: pl.DataFrame) -> None:
    """The notebook's frame from MLflow runs equals the summary's frame from metrics.json files."""
    pd = pytest.importorskip("pandas")
    from seqcomp.summary.runs import runs_frame

    records = []
    for row in frame.iter_rows(named=True):
        records.append({
            "run_id": f"{row['model']}-{row['pass']}-{row['seed']}", "status": "FINISHED",
            **{f"params.{k}": str(row[k]) for k in ("dataset", "model", "kind", "lookback", "horizon", "seed", "pass", "pass_kind")},
            "metrics.test/mse": row["mse"], "metrics.test/mae": row["mae"], "metrics.size_bytes": row["size_bytes"],
            "metrics.fp32_bytes": row["fp32_bytes"], "metrics.compression_ratio": row["compression_ratio"],
            "metrics.quantized_fraction": row["quantized_fraction"],
            "metrics.latency_ms/b1": row["latency_b1_ms"], "metrics.latency_ms/b32": row["latency_b32_ms"],
            "tags.seqcomp.stage": "evaluate", "tags.seqcomp.simulated": str(row["simulated"]).lower(),
            "tags.seqcomp.superseded": None,
        })
    stale = {**records[0], "run_id": "old", "tags.seqcomp.superseded": "true", "metrics.test/mse": 9.0}
    other = {**records[0], "run_id": "train", "tags.seqcomp.stage": "train"}
    runs = runs_frame(pd.DataFrame([*records, stale, other]))
    assert runs.height == frame.height
    cols = ["model", "pass", "seed", "mse", "size_bytes", "bits_per_weight", "mse_change_pct", "speedup_b1", "simulated"]
    assert runs.select(cols).equals(frame.select(cols))
    with pytest.raises(ValueError, match="not seqcomp evaluation runs"):
        runs_frame(pd.DataFrame([{"run_id": "x", "status": "FINISHED"}]))
