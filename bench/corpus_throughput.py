"""Corpus generation speed: points per second of the kernel_synth generator, per family and sampler.

Each case generates a corpus through the dataset kind's own code (``KernelSynthSource.generate``,
what the data job calls) and times it after an untimed warm-up of one series. ``points`` are the
values of the table (channels x length); ``drawn`` the values drawn before the downsampled views
are cut (series x generated length), which is what the samplers spend their time on.

    python bench/corpus_throughput.py --out bench/results/corpus_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from seqcomp.data import dataset_config
from seqcomp.data.kernel_synth import KernelSynthSource
from seqcomp.publish.bench import write_bench_result

# (case, its kernel_synth keys): each family alone, both samplers at Chronos's length, a long
# series (where only the circulant sampler is affordable), and the augmented default mix.
CASES: list[tuple[str, dict[str, Any]]] = [
    ("kernel_synth circulant", {"n_series": 200, "length": 1024, "kernel_share": 1.0}),
    ("kernel_synth dense", {"n_series": 10, "length": 1024, "kernel_share": 1.0, "sampler": "dense"}),
    ("kernel_synth circulant long", {"n_series": 20, "length": 16384, "kernel_share": 1.0}),
    ("forecast_pfn", {"n_series": 500, "length": 1024, "kernel_share": 0.0}),
    ("both, downsample 2,4, mixes", {"n_series": 100, "length": 512, "downsample": [2, 4], "mixes": 50}),
]


def measure(case: str, params: dict[str, Any], scale: float) -> dict[str, Any]:
    params = {**params, "n_series": max(2, round(params["n_series"] * scale))}
    params["mixes"] = min(params.get("mixes", 0), params["n_series"])
    source = KernelSynthSource(dataset_config("kernel_synth", params, "bench"))
    source.series(0)  # warm-up: imports, FFT plans
    start = time.perf_counter()
    values, _, records = source.generate()
    wall = time.perf_counter() - start
    cfg = source.cfg
    drawn = cfg.n_series * cfg.generated_length
    fallbacks = sum(r.get("dense_fallbacks", 0) for r in records.values())
    return {"case": case, "series": cfg.n_series, "length": cfg.length, "generated_length": cfg.generated_length,
            "channels": values.shape[1], "wall_s": round(wall, 3), "points_per_s": round(values.size / wall),
            "drawn_per_s": round(drawn / wall), "dense_fallbacks": fallbacks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every case's number of series")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    started = time.perf_counter()
    rows = []
    for case, params in CASES:
        rows.append(measure(case, params, args.scale))
        print(json.dumps(rows[-1]), flush=True)
    env = {"threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}}
    write_bench_result(args.out, {"env": env, "rows": rows}, started)


if __name__ == "__main__":
    main()
