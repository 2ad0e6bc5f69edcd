"""Mixed precision vs uniform precision at the same stored bits: the Pareto points on trained models.

For every model and every budget b in --bits (uniform b-bit's exact stored bits on that model,
``uniform_bits: b``), with RTN and with GPTQ codes: test MSE change vs fp32 and stored bits per
quantized weight (codes + scales, counted by size.py on the stored form) of uniform b-bit and
of mixed_precision_sim. MP selects on the labeled val windows (its default), as the compress
stage does; the test split only scores. Calibration: a seeded sample of train windows, as the
stage's ``calibration_windows``. Everything goes through ``compress()`` and ``stored_size()``.

    PYTHONPATH=src python bench/mixed_precision_pareto.py --models-dir /work/models_h96 \\
        --data /work/data_etth1 --out bench/results/mixed_precision_pareto

writes <out>.json (after every model, so a partial run keeps what it did) and <out>.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from passes_h96 import score_pass, stage_windows  # bench/ is the script's directory
from seqcomp.artifacts import load_model
from seqcomp.data.windows import PreparedSeries
from seqcomp.evaluate.metrics import scores

MODELS = ("linear", "dlinear", "lstm", "transformer", "patchtst", "tsmixer", "mamba", "spacetime", "s4d")
UNIFORM = {"rtn": "rtn_weight_sim", "gptq": "gptq_weight_sim"}
ORDER = (float.__lt__, float.__eq__, float.__gt__)  # MP's test MSE vs uniform's: better, same, worse


def point(kind: str, params: dict[str, Any], net: torch.nn.Module, windows: dict[str, Any], fp32: float) -> dict:
    """Test MSE (and its change vs fp32), stored bits per quantized weight and bytes of one pass on ``net``."""
    got = score_pass(kind, params, net, windows, fp32)
    size, report = got["size"], got["report"]
    out = {
        "mse": got["mse"],
        "delta_pct": got["dmse_pct"],
        "bits": 8 * (size["weights_bytes"] + size["scales_bytes"]) / report["quantized_numel"],
        "bytes": size["bytes"],
    }
    if "selection" in report:
        out["chosen_by"] = report["achieved"]["chosen_by"]
        out["candidates"] = report["selection"]["candidates"]
    return out


def run_model(name: str, net: torch.nn.Module, windows: dict[str, Any], bits: list[int]) -> list:
    fp32 = scores(net, windows["test"], windows["task"])["mse"]
    rows = []
    for quantizer, uniform_kind in UNIFORM.items():
        for b in bits:
            start = time.perf_counter()
            uniform = point(uniform_kind, {"bits": b}, net, windows, fp32)
            mp = point("mixed_precision_sim", {"uniform_bits": b, "quantizer": quantizer}, net, windows, fp32)
            rows.append({
                "model": name, "quantizer": quantizer, "budget": f"uniform {b}-bit", "bits": b, "fp32_mse": fp32,
                "uniform": uniform, "mp": mp,
                "mp_dominates": mp["mse"] <= uniform["mse"] and mp["bits"] <= uniform["bits"],
                "seconds": round(time.perf_counter() - start, 1),
            })
            print(f"{name} {quantizer} {b}: uniform {cell(uniform)} mp {cell(mp)} {mp['chosen_by']} "
                  f"{rows[-1]['seconds']}s", flush=True)
    return rows


def cell(p: dict[str, Any]) -> str:
    return f"{p['delta_pct']:+.2f}% ({p['bits']:.2f})"


def table(rows: list[dict]) -> str:
    """Markdown: per model and budget, uniform vs MP for RTN and GPTQ; MP in bold where strictly
    better on test at no more bits, the winner of MP's selection in brackets."""
    def mp_cell(r: dict) -> str:
        text = f"{cell(r['mp'])} [{r['mp']['chosen_by']}]"
        return f"**{text}**" if r["mp"]["mse"] < r["uniform"]["mse"] and r["mp_dominates"] else text

    by = {(r["model"], r["bits"], r["quantizer"]): r for r in rows}
    lines = [
        "| model | budget | RTN uniform | MP-RTN [chosen] | GPTQ uniform | MP-GPTQ [chosen] |",
        "|---|---|---|---|---|---|",
    ]
    for (model, b, q), r in by.items():
        if q != "rtn":
            continue
        g = by.get((model, b, "gptq"))
        gptq = [cell(g["uniform"]), mp_cell(g)] if g else ["-", "-"]
        lines.append(f"| {model} | {b}-bit | {cell(r['uniform'])} | {mp_cell(r)} | {' | '.join(gptq)} |")
    lines += ["", "| budget | quantizer | MP better on test | same | MP worse on test |", "|---|---|---|---|---|"]
    for b in sorted({r["bits"] for r in rows}):
        for q in UNIFORM:
            at = [r for r in rows if (r["bits"], r["quantizer"]) == (b, q)]
            split = [[r["model"] for r in at if test(r["mp"]["mse"], r["uniform"]["mse"])] for test in ORDER]
            lines.append(f"| {b}-bit | {q} | " + " | ".join(", ".join(models) or "-" for models in split) + " |")
    legend = ("Test MSE change vs fp32 (stored bits per quantized weight, codes + scales). MP: mixed_precision_sim "
              "at uniform b-bit's stored bits, chosen on the labeled val windows; bold: better on test at no more bits.")
    return legend + "\n\n" + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="path without suffix: writes .json and .md")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--bits", nargs="+", type=int, default=[2, 3, 4])
    parser.add_argument("--calibration-windows", type=int, default=256)
    parser.add_argument("--lookback", type=int, default=96)
    parser.add_argument("--horizon", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    series = PreparedSeries.load(args.data)
    result: dict[str, Any] = {
        "setup": {**{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                  "selection": "mixed_precision_sim defaults (select_on: validation, ilp_budgets 1/0.95/0.9)",
                  "bits_accounting": "8 * (weights_bytes + scales_bytes) / quantized_numel of the stored form",
                  "machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads()},
        "rows": [],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        net = load_model(args.models_dir / f"{name}.pt").eval()
        windows = stage_windows(series, net, args.lookback, args.horizon, args.calibration_windows, args.seed)
        result["rows"] += run_model(name, net, windows, args.bits)
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
        args.out.with_suffix(".md").write_text(table(result["rows"]))


if __name__ == "__main__":
    main()
