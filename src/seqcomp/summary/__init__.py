"""Summary stage: every evaluation in one table (CSV, markdown, HTML), the comparisons with
published results and between passes, the plots, and an MLflow run holding them.

``core.py`` builds the tables (no files, no MLflow), ``plots.py`` draws, ``stage.py`` reads the
jobs' files and writes. This module holds only the plot registry, so that the workflow can
list the summary's outputs without importing polars or matplotlib.

Adding a plot: write a function that takes one of the summary's frames (``FRAMES``) and returns
a matplotlib Figure, and add one line to ``PLOTS``. The summary rule's outputs, the Snakemake
report and the generated pages follow the registry; a caption file
``workflow/report/<name>.rst`` is optional (the registry's title stands in for it).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

# The frames a figure function may take (built in stage.py from the jobs' files):
FRAMES = {
    "evaluations": "one row per evaluation with an MSE (forecasting), fp32 baseline joined (core.with_baseline)",
    "all_evaluations": "the same with the classification rows (accuracy, no MSE)",
    "steps": "test MSE per forecast step, one row per (run, pass, step) (core.step_errors)",
    "histories": "training history.csv rows of every training job, with its job keys",
    "examples": "the evaluate stage's example windows, truth and forecast per step (core.forecast_examples)",
    "layers": "per-layer sensitivity from the compress reports (stage.layer_sensitivity)",
}
TRADE_OFFS = "Compression trade-offs"
QUALITY = "Forecast quality"


@dataclass(frozen=True)
class Plot:
    """One figure of the summary: ``function`` ("module:attr") takes the frame named ``frame``."""

    function: str
    frame: str
    category: str  # its section in the Snakemake report and the generated page
    title: str

    def draw(self, frame: Any) -> Any:
        module, _, attr = self.function.partition(":")
        return getattr(importlib.import_module(module), attr)(frame)


_P = "seqcomp.summary.plots:"
# name -> plot; the file is results/<name>/plots/<name>.png
PLOTS = {
    "pareto": Plot(_P + "pareto_figure", "evaluations", TRADE_OFFS, "Test MSE against stored size, Pareto front"),
    "error_vs_bits": Plot(_P + "bits_figure", "evaluations", TRADE_OFFS, "Test MSE against stored bits per weight"),
    "error_per_step": Plot(_P + "per_step_figure", "steps", QUALITY, "Test MSE at each forecast step (fp32)"),
    "training_curves": Plot(_P + "training_curves_figure", "histories", QUALITY, "Training and validation curves"),
    "forecasts": Plot(_P + "forecast_figure", "examples", QUALITY, "Example test windows: truth and forecast"),
    "latency": Plot(_P + "latency_figure", "all_evaluations", TRADE_OFFS, "CPU latency per forward call"),
    "sensitivity": Plot(_P + "sensitivity_figure", "layers", TRADE_OFFS, "Per-layer sensitivity to quantization"),
    "size_accuracy": Plot(_P + "size_accuracy_figure", "evaluations", TRADE_OFFS,
                          "Size-accuracy curves per model: test MSE change against stored-size ratio, one line per method"),
}
