"""How far the closed-form linear family goes on a prepared series: every variant scored on val and test.

Why: the ETTh1 target "at most 0.395 at the validation-chosen lookback" sits under the best
published linear result (tuned ridge, SearchCast 2026: 0.405). This measures the whole family
our `linear` / `linear_cycle` models belong to, with the knobs that paper searches, so the
answer is a measurement rather than a guess:

- lookback L (--lookbacks), horizon H in 96/192/336/720;
- the level removed from each window: the mean of its last k values (k = L is the model's
  default; k = 1 is "subtract the last value", as NLinear; fractions of L in between);
- ridge strength relative to the mean eigenvalue of X^T X (as ``ClosedFormLinear.ridge``);
- one map shared by all channels, or one map per channel;
- with or without the daily cycle (per-phase mean of the training rows removed, as
  ``linear_cycle``'s closed form does with the training windows).

Each variant is fit by ridge least squares on the train windows; its per-channel val and test
MSE come from sufficient statistics (X^T X, X^T Y, Y^T Y of each split, taken once per L and
H; every level width is exact algebra on them), so a fit costs one solve. ``run`` then writes what is chosen on validation (per horizon; also per channel)
and, for reference only, the best variant on *test*: an oracle no selection rule can beat.

    python bench/linear_family.py run --data results/etth1/data/etth1 --out bench/results/linear_family.jsonl
    python bench/linear_family.py table bench/results/linear_family.jsonl   # the table again, from the rows
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from seqcomp.io import atomic_path
from seqcomp.publish.bench import write_bench_result
from seqcomp.publish.bench_tables import linear_family_tables

HORIZONS = (96, 192, 336, 720)
LEVELS = ("full", "0.5", "0.25", "48", "24", "1")  # k: all L values, a fraction of L, or a count
RIDGES = (1e-5, 1e-4, 1e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0)
PERIOD = 24


def level_width(level: str, lookback: int) -> int:
    return lookback if level == "full" else int(round(float(level) * lookback)) if "." in level else int(level)


def split_stats(values: np.ndarray, starts: range, lookback: int, horizon: int) -> tuple:
    """Per channel over the windows of a split: A^T A (C, L+1, L+1), A^T Y (C, L+1, H), sum Y^2
    (C,) and the window count, A = [lookback values, 1], Y = the horizon values."""
    import torch
    from numpy.lib.stride_tricks import sliding_window_view

    st = np.asarray(starts)
    x = sliding_window_view(values, lookback, axis=0)[st - lookback]  # (N, C, L)
    y = sliding_window_view(values, horizon, axis=0)[st]  # (N, C, H)
    a = torch.from_numpy(np.concatenate([x, np.ones(x.shape[:2] + (1,))], -1)).permute(1, 0, 2).contiguous()
    b = torch.from_numpy(y).permute(1, 0, 2).contiguous()
    return (a.transpose(1, 2) @ a).numpy(), (a.transpose(1, 2) @ b).numpy(), (b**2).sum((1, 2)).numpy(), len(st)


def relevel(stats: tuple, k: int) -> tuple:
    """The same statistics for windows with their level (the mean of the last k lookback values)
    subtracted from lookback and horizon: z = M a and y' = y - (w^T a) 1 for every row a, exact
    algebra on A^T A and A^T Y, so every k costs no pass over the data."""
    gram, cross, yy, n = stats
    size, horizon = gram.shape[-1], cross.shape[-1]
    w = np.zeros(size)
    w[size - 1 - k : size - 1] = 1.0 / k  # level = w^T a
    m = np.eye(size)
    m[: size - 1] -= w  # every lookback value minus the level; the bias row stays
    gw = gram @ w  # (C, L+1)
    gram_z = m @ gram @ m.T
    cross_z = m @ (cross - gw[..., None] * np.ones(horizon))
    yy_z = yy - 2 * (cross.sum(-1) @ w) + horizon * (gw @ w)
    return gram_z, cross_z, yy_z, n


def variant_errors(stats: dict[str, tuple], share: str, ridge: float) -> dict[str, list[float]]:
    """Per-channel val and test MSE of the ridge map fit on ``stats['train']``: one map for all
    channels (``shared``) or one per channel; ``ridge`` relative to the mean eigenvalue of the
    lookback block of X^T X and the bias left unregularised, as ``ClosedFormLinear``."""
    gram, cross = stats["train"][:2]
    channels, size = gram.shape[0], gram.shape[-1]
    lookback = size - 1
    maps = []
    for c in range(1 if share == "shared" else channels):
        g = (gram.sum(0) if share == "shared" else gram[c]).copy()
        xy = cross.sum(0) if share == "shared" else cross[c]
        g[np.arange(lookback), np.arange(lookback)] += ridge * np.trace(g[:lookback, :lookback]) / lookback
        maps.append(np.linalg.solve(g, xy))
    maps = maps * channels if share == "shared" else maps
    out = {}
    for split in ("val", "test"):
        g_s, xy_s, yy_s, n = stats[split]
        horizon = xy_s.shape[-1]
        out[split] = [round(float((np.sum(w * (g_s[c] @ w)) - 2 * np.sum(w * xy_s[c]) + yy_s[c]) / (n * horizon)), 6)
                      for c, w in enumerate(maps)]
    return out


def run(data: Path, lookbacks: list[int]) -> list[dict]:
    from seqcomp.data.split import window_starts
    from seqcomp.data.windows import PreparedSeries

    series = PreparedSeries.load(data)
    raw = series.values.double().numpy()
    borders = series.borders
    phase = np.arange(len(raw)) % PERIOD
    train_rows = slice(0, borders[0])
    rows = []
    for cycle in (False, True):
        values = raw
        if cycle:
            q = np.stack([raw[train_rows][phase[train_rows] == p].mean(0) for p in range(PERIOD)])
            values = raw - (q - q.mean(0))[phase]
        for lookback in lookbacks:
            for horizon in HORIZONS:
                raw_stats = {s: split_stats(values, window_starts(borders, s, lookback, horizon), lookback, horizon)
                             for s in ("train", "val", "test")}
                for level in LEVELS:
                    k = level_width(level, lookback)
                    stats = {s: relevel(raw_stats[s], k) for s in raw_stats}
                    for share in ("shared", "per_channel"):
                        for ridge in RIDGES:
                            rows.append({"cycle": cycle, "L": lookback, "H": horizon, "k": level, "share": share,
                                         "ridge": ridge, **variant_errors(stats, share, ridge)})
                print(f"cycle={cycle} L={lookback} H={horizon} done", file=sys.stderr, flush=True)
    return rows


def chosen(rows: list[dict], keep, per_channel: bool = False, on: str = "val") -> list[float]:
    """Test MSE per horizon of the variant (or, per channel, variants) with the lowest ``on`` MSE."""
    out = []
    for h in HORIZONS:
        rs = [r for r in rows if r["H"] == h and keep(r)]
        if per_channel:
            out.append(float(np.mean([min(rs, key=lambda r: r[on][c])["test"][c] for c in range(len(rs[0]["test"]))])))
        else:
            out.append(float(np.mean(min(rs, key=lambda r: np.mean(r[on]))["test"])))
    return out


def selection(rows: list[dict]) -> dict:
    """Test MSE per horizon (and their mean) of each selection rule's choice, the test oracle's,
    and the number of variants per horizon: what the table and docs/results/microbench.md show."""
    rules = [
        ("`linear` as configured (k = L, ridge 1e-4, shared), L chosen on val", lambda r: not r["cycle"] and r["k"] == "full" and r["ridge"] == 1e-4 and r["share"] == "shared", False),
        ("`linear_cycle` as configured, L chosen on val", lambda r: r["cycle"] and r["k"] == "full" and r["ridge"] == 1e-4 and r["share"] == "shared", False),
        ("cycle, L and ridge chosen on val", lambda r: r["cycle"] and r["k"] == "full" and r["share"] == "shared", False),
        ("cycle, L, ridge and level width k chosen on val", lambda r: r["cycle"] and r["share"] == "shared", False),
        ("cycle, L, ridge, k chosen on val per channel (shared fit)", lambda r: r["cycle"] and r["share"] == "shared", True),
        ("cycle, one map per channel, all chosen on val per channel", lambda r: r["cycle"] and r["share"] == "per_channel", True),
        ("no cycle, L, ridge and k chosen on val", lambda r: not r["cycle"] and r["share"] == "shared", False),
        ("everything chosen on val", lambda r: True, False),
    ]
    chosen_rows = [{"rule": label, "test_mse": chosen(rows, keep, per_channel)} for label, keep, per_channel in rules]
    chosen_rows.append({"rule": "*oracle: best variant on the test split itself (not a valid selection)*",
                        "test_mse": chosen(rows, lambda r: True, on="test")})
    for row in chosen_rows:
        row["avg"] = float(np.mean(row["test_mse"]))
    variants = len({(r["cycle"], r["L"], r["k"], r["share"], r["ridge"]) for r in rows})
    return {"horizons": list(HORIZONS), "variants_per_horizon": variants, "selection": chosen_rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run")
    p_run.add_argument("--data", type=Path, required=True)
    p_run.add_argument("--lookbacks", type=lambda s: [int(x) for x in s.split(",")], default=[96, 336, 512, 720])
    p_run.add_argument("--out", type=Path, required=True,
                       help="jsonl, a row per variant; the selection table goes next to it (.json, with provenance)")
    p_table = sub.add_parser("table")
    p_table.add_argument("rows", type=Path)
    args = parser.parse_args()
    started = time.perf_counter()
    if args.command == "run":
        rows = run(args.data, args.lookbacks)
        with atomic_path(args.out) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        summary = {"lookbacks": args.lookbacks, **selection(rows)}
        write_bench_result(args.out.with_suffix(".json"), summary, started)
    else:
        rows = [json.loads(line) for line in args.rows.read_text().splitlines()]
        summary = {"lookbacks": sorted({r["L"] for r in rows}), **selection(rows)}
    print(linear_family_tables(summary))  # as the micro-benchmarks' page shows it


if __name__ == "__main__":
    main()
