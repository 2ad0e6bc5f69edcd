"""Per-group bit-widths on the trained ETTh1 H96 models: stored-size ratio and test-MSE change vs fp32.

Every candidate is GPTQ at 4 bits with fp8 (double-quantized) scales and fp16 for what stays
unquantized, as in config/etth1_compress.yaml; they differ in which parameter groups are coded
(R recurrent, S ssm, L linear, O other; see seqcomp.compress.quant.groups) and at which bits
(``group_bits``). Calibration: 256 seeded train windows, as the compress stage draws them;
test MSE over all test windows; sizes are every stored byte (seqcomp.compress.stored_size).

    python bench/group_bits_h96.py --models-dir /work/models_h96 --data /work/data_etth1 \
        --out bench/results/group_bits_h96.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from passes_h96 import score_pass, stage_windows  # bench/ is the script's directory
from seqcomp.artifacts import load_model
from seqcomp.compress import fp32_model_bytes
from seqcomp.data.windows import PreparedSeries
from seqcomp.evaluate.metrics import scores

BASE = {"bits": 4, "scale_dtype": "float8_e4m3", "keep_dtype": "float16"}
R, S, L, O = "recurrent", "ssm", "linear", "other"
CANDIDATES = {  # label: (groups, group_bits)
    "base": ([S, L], {}),
    "all4": ([R, S, L], {}),
    "every4": ([R, S, L, O], {}),
    "o4": ([S, L, O], {}),
    "r4o8": ([R, S, L, O], {O: 8}),
    "r8": ([R, S, L], {R: 8}),
    "r8o8": ([R, S, L, O], {R: 8, O: 8}),
    "r8o6": ([R, S, L, O], {R: 8, O: 6}),
    "r8o4": ([R, S, L, O], {R: 8}),
    "r6": ([R, S, L], {R: 6}),
    "r6o6": ([R, S, L, O], {R: 6, O: 6}),
    "r6o4": ([R, S, L, O], {R: 6}),
    "r5": ([R, S, L], {R: 5}),
    "r5o6": ([R, S, L, O], {R: 5, O: 6}),
    "r8s3": ([R, S, L], {R: 8, S: 3}),
    "r6s3": ([R, S, L], {R: 6, S: 3}),
    "r8s3o6": ([R, S, L, O], {R: 8, S: 3, O: 6}),
    "r6s3o6": ([R, S, L, O], {R: 6, S: 3, O: 6}),
    "r6s3o4": ([R, S, L, O], {R: 6, S: 3}),
}
MODELS = ["tsmixer", "s4d", "mamba", "spacetime", "linear", "dlinear", "lstm", "transformer", "patchtst"]


def measure(models_dir: Path, data: Path, models: list[str], labels: list[str]) -> list[dict]:
    series = PreparedSeries.load(data)
    rows = []
    for name in models:
        net = load_model(models_dir / f"{name}.pt")
        windows = stage_windows(series, net, 96, 96, 256, 0)
        fp32_mse, fp32 = scores(net, windows["test"], "forecast")["mse"], fp32_model_bytes(net)
        for label in labels:
            groups, group_bits = CANDIDATES[label]
            params = {**BASE, "groups": groups, "group_bits": group_bits}
            got = score_pass("gptq_weight_sim", params, net, windows, fp32_mse)
            size = got["size"]["bytes"]
            rows.append({"model": name, "config": label, "ratio": fp32 / size, "bytes": size, "fp32_bytes": fp32,
                         "mse": got["mse"], "fp32_mse": fp32_mse, "dmse_pct": got["dmse_pct"]})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    """Markdown: one row per candidate, 'ratio / test-MSE change' per model, >= 7x within 3% in bold."""
    got = {(r["config"], r["model"]): r for r in rows}
    models = [m for m in MODELS if any(r["model"] == m for r in rows)]
    short = {R: "R", S: "S", L: "L", O: "O"}
    lines = ["| label | groups (group_bits) | " + " | ".join(models) + " | >= 7x within 3% |",
             "|---|---|" + "---|" * (len(models) + 1)]
    for label, (groups, group_bits) in CANDIDATES.items():
        cells, ok, n = [], 0, 0
        for m in models:
            r = got.get((label, m))
            if r is None:
                cells.append("n/m")
                continue
            good = r["ratio"] >= 7 and r["dmse_pct"] <= 3
            n, ok = n + 1, ok + good
            cell = f"{r['ratio']:.2f}x {r['dmse_pct']:+.2f}%"
            cells.append(f"**{cell}**" if good else cell)
        if n:
            bits = ", ".join(f"{short[g]}:{b}" for g, b in group_bits.items())
            spec = "+".join(short[g] for g in groups) + (f" ({bits})" if bits else "")
            lines.append(f"| {label} | {spec} | " + " | ".join(cells) + f" | {ok}/{n} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--configs", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    parser.add_argument("--out", type=Path, required=True, help="jsonl, one row per (model, candidate)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = measure(args.models_dir, args.data, args.models, args.configs)
    args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(table(rows))


if __name__ == "__main__":
    main()
