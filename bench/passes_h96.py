"""Named compression passes of a config, run on trained models: test-MSE change and stored-size ratio.

Why a benchmark and not the workflow: to put a few passes on a few models already trained
(e.g. models added after the pass grid ran) without retraining what the workflow would
consider outdated. What is the same as the compress and evaluate stages: the pass specs (from
the config files, merged as Snakemake merges them), the calibration windows
(``calibration_windows``, seeded, train split), the labeled val windows for passes that choose
on them, phases for cycle models, ``compress``, ``stored_size`` and the scores on every test
window. What differs: no MLflow record, no latency.

    python bench/passes_h96.py --config config/etth1.yaml config/etth1_compress.yaml \\
        --data results/etth1/data/etth1 --passes int8_dynamic w4_gptq_sim \\
        --models results/etth1/train/etth1/smamba/L96-H96/seed0/model.pt ... \\
        --out bench/results/passes_h96.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
import yaml


def stage_windows(series: Any, net: torch.nn.Module, lookback: int, horizon: int, calibration: int, seed: int) -> dict:
    """The windows the compress and evaluate stages give a trained model: every test window, a
    seeded sample of ``calibration`` train windows, the labeled val windows (for passes that
    choose on them); each with the phase column when ``net`` forecasts around a cycle. Shared
    by the bench scripts that score passes on trained models."""
    from seqcomp.compress.stage import calibration_windows
    from seqcomp.models.cycle import cycle_of

    cycle = cycle_of(net)
    return {
        "test": series.windows("test", lookback, horizon, cycle),
        "calib": calibration_windows(series, lookback, horizon, calibration, seed, cycle),
        "validation": series.windows("val", lookback, horizon, cycle).tensors(),
        "task": series.task,
    }


def score_pass(kind: str, params: dict[str, Any], net: torch.nn.Module, windows: dict, fp32_mse: float) -> dict:
    """One pass on ``net`` as the stages run it: test MSE, its change vs fp32 (%), the stored
    form's sizes (``stored_size``) and the pass's report."""
    from seqcomp.compress import compress, stored_size
    from seqcomp.evaluate.metrics import scores

    model, stored, report = compress(kind, params, net, windows["calib"], validation=windows["validation"])
    mse = scores(model, windows["test"], windows["task"])["mse"]
    return {"mse": mse, "dmse_pct": 100 * (mse / fp32_mse - 1), "size": stored_size(stored), "report": report}


def run(configs: list[Path], data: Path, passes: list[str], models: list[Path], seed: int) -> list[dict]:
    from snakemake.utils import update_config

    from seqcomp.artifacts import load_model
    from seqcomp.compress import fp32_model_bytes
    from seqcomp.config import load_config
    from seqcomp.data.windows import PreparedSeries
    from seqcomp.evaluate.metrics import scores
    from seqcomp.jobs import pass_spec

    merged: dict[str, Any] = {}
    for path in configs:
        update_config(merged, yaml.safe_load(path.read_text()))
    cfg = load_config(merged)
    series = PreparedSeries.load(data)
    rows = []
    for path in models:
        net = load_model(path)
        shape = torch.load(path, map_location="cpu", weights_only=True)["shape"]
        windows = stage_windows(series, net, shape["lookback"], shape["horizon"], cfg["calibration"]["windows"], seed)
        fp32_mse, fp32_bytes = scores(net, windows["test"], "forecast")["mse"], fp32_model_bytes(net)
        name = path.parts[-4] if len(path.parts) >= 4 else path.stem  # .../<model>/L..-H../seedN/model.pt
        for passname in passes:
            spec = pass_spec(cfg, passname)
            got = score_pass(spec["pass_kind"], spec["pass_params"], net, windows, fp32_mse)
            size = got["size"]["bytes"]
            rows.append({"model": name, "pass": passname, "mse": got["mse"], "fp32_mse": fp32_mse,
                         "dmse_pct": got["dmse_pct"], "bytes": size, "ratio": fp32_bytes / size if size else None})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    """Markdown: a row per pass, 'MSE change xratio' per model."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    got = {(r["pass"], r["model"]): r for r in rows}
    lines = ["| pass | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    for passname in dict.fromkeys(r["pass"] for r in rows):
        cells = []
        for m in models:
            r = got.get((passname, m))
            cells.append("-" if r is None else f"{r['dmse_pct']:+.2f}% ×{r['ratio']:.1f}" if r["ratio"] else f"{r['dmse_pct']:+.2f}%")
        lines.append(f"| {passname} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", nargs="+", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--passes", nargs="+", required=True)
    parser.add_argument("--models", nargs="+", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0, help="the models' training seed: it seeds the calibration sample")
    parser.add_argument("--out", type=Path, required=True, help="jsonl; the markdown table goes next to it (.md)")
    args = parser.parse_args()
    rows = run(args.config, args.data, args.passes, args.models, args.seed)
    args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args.out.with_suffix(".md").write_text(table(rows) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
