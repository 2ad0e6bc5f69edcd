"""Compression stage shell: load the trained model and series, run the core, write the stored
form (model.pt) and its report (report.json), and track the run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from seqcomp.artifacts import load_model, save_torch
from seqcomp.compress.core import compress_job
from seqcomp.data.windows import PreparedSeries
from seqcomp.io import write_json
from seqcomp.tracking import Run, tracked


def run_compress(spec: dict[str, Any], model_path: Path, data_dir: Path, out_dir: Path, run: Run) -> dict:
    """Compress the trained model at ``model_path`` with ``spec['pass']`` into ``out_dir``."""
    net = load_model(model_path)
    series = PreparedSeries.load(data_dir)
    with tracked(run):
        run.log_params(spec)
        stored, report = compress_job(net, series, spec)
        save_torch(stored, out_dir / "model.pt")
        report.update({"file_bytes": (out_dir / "model.pt").stat().st_size, "job": run.job})
        run.log_metrics({"size_bytes": report["size"]["bytes"], "fp32_bytes": report["fp32_bytes"]})
        run.set_tags({"seqcomp.simulated": str(report["simulated"]).lower(), "seqcomp.pass_kind": spec["pass_kind"]})
        write_json(out_dir / "report.json", report)
        run.log_artifact(out_dir / "report.json")
    return report
