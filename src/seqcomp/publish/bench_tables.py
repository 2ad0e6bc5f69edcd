"""The micro-benchmarks' tables: one renderer per bench script, from its result's JSON."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from seqcomp.errors import SeqcompError
from seqcomp.publish.markdown import readable as fmt
from seqcomp.publish.markdown import table as markdown_table


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    return markdown_table(headers, rows, fmt)


def _model_name(row: dict[str, Any]) -> str:
    """The pipeline's model name (results/<name>/train/<dataset>/<model>/...) where a path says it, else the row's."""
    parts = Path(row.get("path", "")).parts
    return parts[-4] if len(parts) >= 4 and parts[-1] == "model.pt" else row["model"]


def seq_scaling_tables(d: dict[str, Any]) -> str:
    steps = list(dict.fromkeys(k for row in d["layers"] for k, v in row.items() if isinstance(v, dict)))
    cells = [[row["L"]] + [(row[s].get("skipped") and "skipped") or f"{fmt(row[s]['min_ms'])} / {fmt(row[s]['peak_mib'])}"
                           if s in row else None for s in steps] + [row.get("auto_picks")] for row in d["layers"]]
    out = "Forward + backward, min ms / peak MiB, batch {batch}, d_model {d_model}:\n\n".format(**d["setup"])
    out += _table(["L", *steps, "auto picks"], cells) if d["layers"] else "(layers part not run)\n"
    if d["crossover"]:
        out += "\nThe scan alone, min ms:\n\n" + _table(
            ["batch", "L", "state B·E·N", "sequential", "chunked", "faster", "auto picks"],
            [[r["batch"], r["L"], r["state"], r["sequential"], r["chunked"], r["faster"], r["auto_picks"]]
             for r in d["crossover"]])
    return out


def train_tables(d: dict[str, Any]) -> str:
    rows = [[r["model"], r.get("lookback"), r.get("batch_size"), r.get("steps"), r.get("samples_per_s"),
             r.get("peak_gpu_mib") if r.get("peak_gpu_mib") is not None else r.get("peak_rss_mib"), r.get("params"),
             r.get("skipped")] for r in d["rows"]]
    return f"Device {d['env']['device']}, {d['env']['threads']} threads:\n\n" + _table(
        ["model", "lookback", "batch", "steps", "samples/s", "peak MiB", "params", "skipped"], rows)


def int8_tables(d: dict[str, Any]) -> str:
    env = d["env"]
    out = f"{env['threads']} thread(s), median of {env['repeats']} calls after {env['warmup']}, engine {env['engine']}:\n\n"
    out += _table(["model", "batch", "fp32 ms", "int8 ms", "speedup", "int8 layers"],
                    [[_model_name(r), r["batch"], r["fp32_ms"], r["int8_ms"], r["speedup"], r["int8_layers"]]
                     for r in d["models"]])
    return out + "\nSingle layers:\n\n" + _table(
        ["linear", "rows", "fp32 ms", "int8 ms", "speedup"],
        [[r["linear"], r["rows"], r["fp32_ms"], r["int8_ms"], r["speedup"]] for r in d["linear_layers"]])


def fp8_tables(d: dict[str, Any]) -> str:
    out = f"Device {d['device']}. Square GEMMs:\n\n" + _table(
        ["n", "bf16 TFLOP/s", "fp8 TFLOP/s"], [[g["n"], g["bf16_tflops"], g["fp8_tflops"]] for g in d["gemm"]])
    keys = list(dict.fromkeys(k for m in d["models"] for k in m["latency_ms"]))
    rows = [[_model_name(m), *(m["test_mse"].get(p) for p in ("fp32", "bf16", "fp8")),
             *(m["latency_ms"].get(k) for k in keys), len(m.get("bf16_layers", []))] for m in d["models"]]
    return out + "\nModels (latency in ms, precision_batch):\n\n" + _table(
        ["model", "MSE fp32", "MSE bf16", "MSE fp8", *keys, "layers kept bf16"], rows)


def memory_delay_tables(d: dict[str, Any]) -> str:
    s = d["setup"]
    return (f"Length {s['length']}, lag {s['lag']}, {s['steps']} steps of batch {s['batch']}, "
            f"d_model {s['d_model']}, d_state {s['d_state']}:\n\n"
            + _table(["layer", "NMSE", "train s", "params"],
                       [[name, r["nmse"], r["train_s"], r["params"]] for name, r in d["results"].items()]))


def s4_reference_tables(d: dict[str, Any]) -> str:
    return "Max |difference| over the kernel's peak |K|:\n\n" + _table(
        ["init", "L", "H", "N", "ours vs dense", "reference vs dense", "ours vs reference"],
        [[r["init"], r["L"], r["H"], r["N"], r["ours_vs_dense"], r["reference_vs_dense"], r["ours_vs_reference"]]
         for r in d["rows"]])


def linear_family_tables(d: dict[str, Any]) -> str:
    horizons = [f"H = {h}" for h in d["horizons"]]
    return (f"Lookbacks {', '.join(map(str, d['lookbacks']))}; {d['variants_per_horizon']} variants per horizon; "
            "test MSE of the chosen variant(s):\n\n"
            + _table(["selection rule", *horizons, "avg"], [[r["rule"], *r["test_mse"], r["avg"]] for r in d["selection"]]))


def job_costs_tables(d: dict[str, Any]) -> str:
    cols = ("jobs", "wall_s", "cpu_s", "startup_s", "work_s")
    rows = [[stage, *(s[c] for c in cols)] for stage, s in d["stages"].items()] + [["**all**", *(d["total"][c] for c in cols)]]
    ratio = d.get("wall_over_job_seconds_per_core")
    extra = (f"; wall over the jobs' seconds per core {fmt(ratio)}, over their work per core "
             f"{fmt(d.get('wall_over_work_per_core'))}" if ratio else "")
    return (f"Source `{d['source']}`; workflow wall {fmt(d['workflow_wall_s'])} s on {d['cores']} cores{extra}; "
            f"a bare `import torch` takes {fmt(d['torch_import_s'])} s.\n\n"
            + _table(["stage", "jobs", "job wall s", "CPU s", "start-up s", "work s"], rows))


def decode_cost_tables(d: dict[str, Any]) -> str:
    env = d["env"]
    return (f"{env['threads']} thread(s), median of {env['repeats']} decodes after {env['warmup']}; `fp32 load ms`: "
            "loading the same model's fp32 state dict, interleaved with the decode:\n\n"
            + _table(["model", "pass", "kind", "ratio", "stored bytes", "decode ms", "fp32 load ms", "decode / fp32",
                      "skipped"],
                     [[r["model"], r["pass"], r["kind"], r["compression_ratio"], r["stored_bytes"], r.get("decode_ms"),
                       r.get("fp32_load_ms"), r.get("decode_over_fp32"), r.get("skipped")] for r in d["rows"]]))


def corpus_tables(d: dict[str, Any]) -> str:
    rows = [[r["case"], r["series"], r["length"], r["generated_length"], r["channels"], r["wall_s"],
             r["points_per_s"], r["drawn_per_s"], r["dense_fallbacks"]] for r in d["rows"]]
    return "kernel_synth corpus generation, one process:\n\n" + _table(
        ["case", "series", "length", "generated", "channels", "wall s", "points/s", "drawn/s", "dense fallbacks"], rows)


def pretrain_tables(d: dict[str, Any]) -> str:
    env = d["env"]
    rows = [[r["model"], r["kind"], r["tokens"], r["context"], r["horizon"], r["batch_size"], r["steps"], r["params"],
             r["precision"], r["fit_wall_s"], r["samples_per_s"], r["step_samples_per_s"], r["fit_overhead_s"]]
            for r in d["rows"]]
    return (f"`{env['config']}`'s pre-training jobs on {env['device']}, {env['threads']} thread(s), after "
            f"{env['warmup_steps']} warm-up batches; corpus of {env['corpus_series']} series per generated dataset "
            f"({env['corpus_channels']} channels). samples/s: fit_sgd's train_samples_per_s (windows), what a job's run.json "
            "reports, over a fit of `steps` batches; batches only: the difference with a fit of the "
            "warm-up's length, which leaves out what a fit pays once (fit overhead):\n\n"
            + _table(["model", "kind", "tokens", "context", "horizon", "batch", "steps", "params", "precision",
                      "fit wall s", "samples/s", "samples/s, batches only", "fit overhead s"], rows))


TABLES: dict[str, Callable[[dict[str, Any]], str]] = {
    "bench/decode_cost.py": decode_cost_tables,
    "bench/corpus_throughput.py": corpus_tables,
    "bench/pretrain_throughput.py": pretrain_tables,
    "bench/seq_scaling.py": seq_scaling_tables,
    "bench/train_throughput.py": train_tables,
    "bench/int8_latency.py": int8_tables,
    "bench/gpu_fp8.py": fp8_tables,
    "bench/memory_delay.py": memory_delay_tables,
    "bench/s4_reference_check.py": s4_reference_tables,
    "bench/linear_family.py": linear_family_tables,
    "bench/job_costs.py": job_costs_tables,
}


def render(script: str, command: str, result: dict[str, Any], path: Path) -> str:
    """The tables of ``result`` (read from ``path``) by its script's renderer."""
    try:
        return TABLES[script](result)
    except KeyError as exc:
        raise SeqcompError(f"{path}: no key {exc} that the table of {script} needs (a result in an older "
                           f"format? rerun `{command}`)") from exc
