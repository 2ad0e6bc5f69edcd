"""Summary stage shell: reads the jobs' files, writes the tables and plots, logs them to MLflow.

The tables and frames themselves are built in ``core.py`` (no files, no MLflow); the figures
are the plot registry's (``seqcomp.summary.PLOTS``).
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import polars as pl

from seqcomp.io import atomic_path, read_json
from seqcomp.summary import PLOTS
from seqcomp.summary.compare import compare_published, compression_markdown, compression_table, published_markdown
from seqcomp.summary.core import (
    RUN_KEYS, aggregate, forecast_examples, headline_markdown, metrics_frame, step_errors, to_html, to_markdown,
    with_baseline,
)
from seqcomp.publish.record import summary_record
from seqcomp.summary.published import load_published, trained_on_target
from seqcomp.summary.experts import experts_markdown
from seqcomp.summary.sweep import report_row, sweep_markdown
from seqcomp.summary.transfer import pretrain_record, transfer_markdown
from seqcomp.names import INT_FIELDS, job_key, parse_job_path
from seqcomp.tracking import Run, current_runs, tracked

TABLES = ("results.csv", "results.md", "headline.md", "published.md", "transfer.md", "compression.md", "experts.md",
          "sweep.md", "results.html")


def load_metrics(paths: list[str]) -> pl.DataFrame:
    """One row per metrics.json, with the fp32 baseline joined in."""
    return with_baseline(metrics_frame([read_json(p) for p in paths]))


def layer_sensitivity(paths: list[str]) -> pl.DataFrame:
    """Long frame of ``layers[i]["sensitivity"]`` ({bits: value}) from compress report.json files.

    Only per-bit-width sensitivities make this curve (mixed precision's); a pass whose layers
    carry other measures under that key (the allocator's {"output": ..., "loss": ...} of the
    chosen format) has its own report table."""
    out = []
    for path in paths:
        report = read_json(path)
        keys = {**parse_job_path(path, "compress"), "pass": report["pass_name"]}
        metric = report.get("sensitivity_metric", "sensitivity (as measured by the pass)")
        for layer in report.get("layers", []):
            for bits, value in (layer.get("sensitivity") or {}).items():
                if not str(bits).isdigit():
                    continue
                out.append({**keys, "layer": layer["name"], "bits": int(bits), "sensitivity": float(value), "metric": metric})
    return pl.DataFrame(out)


def expert_entries(paths: list[str]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(job keys with ``pass``, the report's ``experts`` entry) of each compress report.json that
    has one (a mixture-of-experts model's; experts.md). Not the identity pass's (``fp32``): its
    experts are the fp32 model's, whose routing every other pass's entry carries too."""
    out = []
    for path in paths:
        report = read_json(path)
        if report.get("experts") and report["pass"] != "fp32":
            out.append(({**parse_job_path(path, "compress"), "pass": report["pass_name"]}, report["experts"]))
    return out


def pass_reports(paths: list[str]) -> pl.DataFrame:
    """One row per compress report.json: its job keys, pass, method, the pass's wall time and
    group profile (sweep.report_row), to join to the evaluations."""
    rows = [{**parse_job_path(path, "compress"), **report_row(read_json(path))} for path in paths]
    schema = {**{k: (pl.Int64 if k in INT_FIELDS else pl.Utf8) for k in RUN_KEYS}, "pass": pl.Utf8, "method": pl.Utf8,
              "pass_wall_s": pl.Float64, "group_profile": pl.Utf8}
    return pl.DataFrame(rows, schema=schema)


def load_histories(paths: list[str]) -> pl.DataFrame:
    frames = []
    for path in paths:
        keys = parse_job_path(path, "train")
        frames.append(pl.read_csv(path).with_columns(**{k: pl.lit(v) for k, v in keys.items()}))
    return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()


def validation_scores(histories: list[str]) -> pl.DataFrame:
    """Best validation MSE of every training job, from the run.json beside its history.csv."""
    rows = [{**parse_job_path(h, "train"), "val_mse": read_json(Path(h).with_name("run.json")).get("best_val_mse")}
            for h in histories]
    return pl.DataFrame(rows, schema={**{k: (pl.Int64 if k in INT_FIELDS else pl.Utf8)
                                         for k in RUN_KEYS}, "val_mse": pl.Float64})


def run_summary(
    metrics: list[str],
    histories: list[str],
    reports: list[str],
    out_dir: Path,
    plots_dir: Path,
    title: str = "seqcomp",
    run: Run | None = None,
    published: Path | None = None,
    config_files: list[str] | None = None,
    benchmarks: list[str] | None = None,
    cores: int | None = None,
    pretrain_runs: list[str] | None = None,
) -> pl.DataFrame:
    """Write the tables (TABLES), every registered plot and provenance.json; return the table
    of means over seeds.

    ``published``: a published-results file to compare with (published.md lists nothing without
    it). ``benchmarks``: the Snakemake benchmark files of the train/compress/evaluate jobs behind
    ``metrics``; ``cores``: the cores Snakemake ran them on (provenance.json's yardstick).
    ``pretrain_runs``: the pre-training jobs' run.json files (transfer.md's pre-training table). With
    ``run``, the outputs are also logged to that MLflow run, which ends FAILED if any step raises
    (a crashed job must not leave it RUNNING).
    """
    with tracked(run) if run is not None else nullcontext():
        rows = [read_json(p) for p in metrics]
        frame = evaluations(rows, histories, reports)
        values = load_published(published) if published is not None else []
        pretrained = [pretrain_record(p, read_json(p)) for p in pretrain_runs or []]
        transfer = transfer_markdown(rows, values, pretrained, title)
        experts = experts_markdown(expert_entries(reports), title)
        table = _write_tables(frame, trained_on_target(values), out_dir, title, data_notes(histories), transfer,
                              experts)
        _write_plots(rows, frame, histories, reports, plots_dir)
        runs = current_runs(run.journal_dir) if run is not None else None
        with atomic_path(out_dir / "provenance.json") as tmp:
            prov = summary_record(config_files or [], runs, job_keys_of(rows), benchmarks or [], cores)
            tmp.write_text(json.dumps(prov, indent=2) + "\n")
        if run is not None:
            run.log_params({"config": title, "evaluations": len(metrics)})
            for name in (*TABLES, "provenance.json"):
                run.log_artifact(out_dir / name, "summary")
            for name in PLOTS:
                run.log_artifact(plots_dir / f"{name}.png", "plots")
    return table


def job_keys_of(rows: list[dict[str, Any]]) -> set[str]:
    """The tracking job keys (``seqcomp.names.job_key``) of the train, compress and evaluate
    jobs behind the evaluations ``rows`` (metrics.json contents)."""
    return {job_key(stage, row) for row in rows for stage in ("train", "compress", "evaluate")}


def data_notes(histories: list[str]) -> str:
    """A note under results.md's table naming the datasets whose gaps were filled (``gaps: fill``)
    and how many rows that inserted, from the training jobs' run.json; empty when none was."""
    inserted = {}
    for h in histories:
        run = read_json(Path(h).with_name("run.json"))
        if run.get("inserted_rows"):
            inserted[parse_job_path(h, "train")["dataset"]] = run["inserted_rows"]
    if not inserted:
        return ""
    counts = ", ".join(f"{name} {n} row{'s' * (n != 1)}" for name, n in sorted(inserted.items()))
    return f"\nRows inserted at the series' gaps (gaps: fill), values forward-filled: {counts}.\n"


def evaluations(rows: list[dict[str, Any]], histories: list[str], reports: list[str] | None = None) -> pl.DataFrame:
    """Every evaluation, one row per metrics.json content, with its fp32 baseline and (given
    the training jobs' history.csv files) the validation MSE of its training job, and (given
    the compress reports) its pass's method, wall time and group profile."""
    frame = with_baseline(metrics_frame(rows))
    if histories:
        frame = frame.join(validation_scores(histories), on=RUN_KEYS, how="left")
    if reports:
        frame = frame.join(pass_reports(reports), on=[*RUN_KEYS, "pass"], how="left")
    return frame


def _write_tables(frame: pl.DataFrame, values: list[dict[str, Any]], out_dir: Path, title: str,
                  notes: str = "", transfer: str = "", experts: str = "") -> pl.DataFrame:
    table = aggregate(frame)
    heading = f"{title}: test metrics (mean over seeds)"
    scored = frame.filter(pl.col("mse").is_not_null())  # classification rows have accuracy, no MSE
    fp32 = scored.filter(pl.col("pass_kind") == "fp32")
    shown = table.drop("method", "group_profile", strict=False)  # sweep.md's; too wide for every row
    written = {"results.csv": lambda tmp: frame.write_csv(tmp),
               "results.md": lambda tmp: tmp.write_text(f"# {heading}\n\n" + to_markdown(shown) + notes),
               "headline.md": lambda tmp: tmp.write_text(headline_markdown(scored, title)),
               "published.md": lambda tmp: tmp.write_text(
                   published_markdown(compare_published(fp32, values), values, title)),
               "transfer.md": lambda tmp: tmp.write_text(transfer),
               "compression.md": lambda tmp: tmp.write_text(compression_markdown(compression_table(table), title)),
               "experts.md": lambda tmp: tmp.write_text(experts),
               "sweep.md": lambda tmp: tmp.write_text(sweep_markdown(table, title)),
               "results.html": lambda tmp: tmp.write_text(to_html(shown, heading))}
    for name in TABLES:
        with atomic_path(out_dir / name) as tmp:
            written[name](tmp)
    return table


def _write_plots(rows: list[dict[str, Any]], frame: pl.DataFrame, histories: list[str], reports: list[str],
                 plots_dir: Path) -> None:
    from seqcomp.summary.plots import plt

    frames = {  # built on demand: a config's plots may not need them all
        "evaluations": lambda: frame.filter(pl.col("mse").is_not_null()),
        "all_evaluations": lambda: frame,
        "steps": lambda: step_errors(rows),
        "histories": lambda: load_histories(histories),
        "examples": lambda: forecast_examples(rows),
        "layers": lambda: layer_sensitivity(reports),
    }
    for name, plot in PLOTS.items():
        fig = plot.draw(frames[plot.frame]())
        with atomic_path(plots_dir / f"{name}.png") as tmp:
            fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
        plt.close(fig)  # figures are held by pyplot until closed
