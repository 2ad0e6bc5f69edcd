"""Decoding cost of each stored format: CPU time to unpack a pass's stored form (bit-unpack,
dequantize, look up codebooks) into a runnable fp32 model, per model and pass of a results folder.

Why: a simulated pass stores small codes but runs fp32 kernels, so what a user of the stored
model pays is this decode, once per load; the evaluation stage never times it. Each compressed
model.pt of the folder is decoded by the pipeline's own ``seqcomp.compress.load_compressed``
(what the evaluate stage runs) into a fresh skeleton of its trained model, interleaved with
loading that model's fp32 state dict (the yardstick: what a plain fp32 checkpoint costs), the
median of ``--repeats`` calls after a warm-up, on ``--threads`` threads. Reading the file from
disk is not counted. The pass and its settings come from the job's report.json (``pass``,
``pass_params``); a report written before it recorded ``pass_params`` is listed as skipped.

    python bench/decode_cost.py --compressed results/etth1/compress/etth1/*/L96-H96/seed0/*/model.pt \\
        --out bench/results/decode_cost.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch


def train_model_of(compressed: Path) -> Path:
    """results/<name>/compress/<dataset>/<model>/L<l>-H<h>/seed<s>/<pass>/model.pt -> its trained model."""
    return compressed.parents[6] / "train" / Path(*compressed.parts[-6:-2]) / "model.pt"


def decode_row(compressed: Path, warmup: int, repeats: int) -> dict:
    """One compressed model's decode time against its fp32 state dict's load time."""
    from seqcomp.artifacts import load_model
    from seqcomp.compress import copy_model, load_compressed
    from seqcomp.evaluate.metrics import call_ms

    report = json.loads(compressed.with_name("report.json").read_text())
    row = {"model": compressed.parts[-5], "pass": report["pass_name"], "kind": report.get("pass"),
           "stored_bytes": report["size"]["bytes"], "compression_ratio": report.get("compression_ratio")}
    if "pass_params" not in report:
        return {**row, "skipped": "report.json predates pass_params: rerun the compress job"}
    trained = load_model(train_model_of(compressed))
    fp32_state = trained.state_dict()
    stored = torch.load(compressed, map_location="cpu", weights_only=True)
    fp32_skeleton, skeleton = load_model(train_model_of(compressed)), load_model(train_model_of(compressed))
    # a fresh skeleton per decode, copied before the clock starts: unpacking may convert the
    # skeleton's modules in place (int8_dynamic swaps its Linears), as the evaluate stage's does once
    fresh = iter([copy_model(skeleton) for _ in range(warmup + repeats)])
    decode_ms, fp32_ms = call_ms(
        [lambda: load_compressed(report["pass"], report["pass_params"], next(fresh), stored),
         lambda: fp32_skeleton.load_state_dict(fp32_state)], warmup, repeats)
    decode, fp32 = statistics.median(decode_ms), statistics.median(fp32_ms)
    return {**row, "params": sum(p.numel() for p in trained.parameters()), "decode_ms": round(decode, 4),
            "fp32_load_ms": round(fp32, 4), "decode_over_fp32": round(decode / fp32, 2) if fp32 else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compressed", type=Path, nargs="+", required=True, help="compressed model.pt files")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    started = time.perf_counter()
    torch.set_num_threads(args.threads)

    from seqcomp.publish.bench import write_bench_result

    rows = []
    for path in sorted(args.compressed):
        row = decode_row(path, args.warmup, args.repeats)
        print(json.dumps(row), flush=True)
        rows.append(row)
    env = {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__, "threads": args.threads,
           "warmup": args.warmup, "repeats": args.repeats}
    write_bench_result(args.out, {"env": env, "rows": rows}, started)


if __name__ == "__main__":
    main()
