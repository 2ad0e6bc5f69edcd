"""The experts table (experts.md): what each compression pass did to a mixture-of-experts model,
expert by expert, from the compress reports' ``experts`` entry (``seqcomp.compress.experts``).

One table per trained model (dataset, model, lookback, horizon, seed) whose reports carry the
entry. Its rows are (layer, model): first the fp32 model, then each pass, and its columns the
experts of that layer. A pass's cell is the expert's val sensitivity (the val-loss increase with
only that expert's weights from the pass) and the compressed model's test routing fraction; an
fp32 cell is the fp32 model's test routing fraction. This layout (experts as columns) rather than
one row per (layer, expert) with two columns per pass was chosen because its width is fixed by
the model (its experts per layer) while passes add rows: a config running ten passes on a model
with four experts gives a six-column table, not a twenty-one-column one, and each pass's routing
stands directly under the fp32 routing of the same layer, so a shift can be read down a column.

Under the table, one line per pass: the val losses the report gives (fp32, the whole compressed
model, the fp32 model with only the routed experts from the pass) and the largest test routing
shift, |compressed fraction - fp32 fraction| over every (layer, expert), against the fp32 routing
of the same report. Every number names its split: sensitivities and losses are val, routing test.

Pure functions of the reports' entries; the stage reads the files and writes the text.
"""

from __future__ import annotations

from typing import Any

from seqcomp.publish import markdown

_LOSS = {"mse": "MSE", "cross_entropy": "CE"}


def experts_markdown(entries: list[tuple[dict[str, Any], dict[str, Any]]], title: str) -> str:
    """experts.md from ``entries``: (job keys with ``pass``, the report's ``experts`` entry) per
    compress report that has one; empty text when there is none (then no page section)."""
    if not entries:
        return ""
    jobs: dict[tuple, dict[str, dict[str, Any]]] = {}
    for keys, experts in entries:
        job = tuple(keys[k] for k in ("dataset", "model", "lookback", "horizon", "seed"))
        jobs.setdefault(job, {})[keys["pass"]] = experts
    parts = [f"# {title}: experts of mixture-of-experts models\n",
             "Per trained model, each MoE layer's experts (columns e0, e1, ...). Row `fp32`: the fraction of the "
             "layer's token assignments (top-k, so a row sums to 1) that the fp32 model routes to each expert on the "
             "**test** split. Row of a pass: `Δloss / fraction`, where Δloss is the expert's sensitivity on the "
             "**val** split (val loss with only that expert's weights from the pass, minus the fp32 model's; exactly "
             "0 where the pass left the experts fp32) and fraction is the compressed model's test routing fraction. "
             "Routing is only reported: no pass chooses anything on the test split.\n"]
    for job in sorted(jobs):
        parts.append(_job_section(job, jobs[job]))
    return "\n".join(parts)


def _job_section(job: tuple, passes: dict[str, dict[str, Any]]) -> str:
    dataset, model, lookback, horizon, seed = job
    names = sorted(passes)
    reference = passes[names[0]]["routing"]["fp32"]["fractions"]
    width = max(len(row) for p in passes.values() for row in p["routing"]["fp32"]["fractions"])
    rows = []
    for layer, fp32 in enumerate(reference):
        rows.append([layer, "fp32", *_padded([f"{f:.3f}" for f in fp32], width)])
        for name in names:
            sens, routing = passes[name]["sensitivity"], passes[name]["routing"]
            pairs = zip(sens["increase"][layer], routing["compressed"]["fractions"][layer])
            cells = [f"{_delta(d)} / {f:.3f}" for d, f in pairs]
            rows.append([layer, f"`{name}`", *_padded(cells, width)])
    head = (f"## {dataset} / {model} / L{lookback}-H{horizon} / seed {seed}\n\n"
            f"Cells of a pass: Δ{_loss(passes[names[0]])} (val) / routing fraction (test).\n\n")
    table = markdown.table(["layer", "model", *(f"e{e}" for e in range(width))], rows)
    lines = [_pass_line(name, passes[name]) for name in names]
    differing = [f"`{n}`" for n in names[1:] if passes[n]["routing"]["fp32"]["fractions"] != reference]
    if differing:  # the same fp32 model on the same windows: only a nondeterministic router would differ
        lines.append(f"- The fp32 routing in the reports of {', '.join(differing)} differs from `{names[0]}`'s "
                     "(shown above); each pass's shift is against its own report's fp32 routing.")
    return head + table + "\n" + "\n".join(lines) + "\n"


def _loss(experts: dict[str, Any]) -> str:
    """The sensitivity's loss as a column label: MSE for a forecast, CE for class ids."""
    loss = experts["sensitivity"]["loss"]
    return _LOSS.get(loss, loss)


def _pass_line(name: str, experts: dict[str, Any]) -> str:
    """The val losses of one pass and its largest test routing shift (layer, expert)."""
    sens, routing = experts["sensitivity"], experts["routing"]
    shift, layer, expert = largest_shift(routing["fp32"]["fractions"], routing["compressed"]["fractions"])
    return (f"- `{name}`: val {_loss(experts)} ({sens['windows']} windows) fp32 {sens['loss_fp32']:.6g}, whole pass "
            f"{sens['loss_compressed']:.6g}, all experts only {sens['loss_all_experts']:.6g}; largest test routing "
            f"shift ({routing['windows']} windows) {shift:.3f} (layer {layer}, e{expert})")


def largest_shift(fp32: list[list[float]], compressed: list[list[float]]) -> tuple[float, int, int]:
    """max |compressed - fp32| routing fraction over every (layer, expert), with its layer and
    expert (the first one on a tie)."""
    return max(((abs(c - f), layer, e) for layer, (fs, cs) in enumerate(zip(fp32, compressed))
                for e, (f, c) in enumerate(zip(fs, cs))), key=lambda t: t[0])


def _delta(x: float) -> str:
    """A sensitivity: 0 for exactly none (an expert the pass left fp32), else signed, 3 digits."""
    return "0" if x == 0 else f"{x:+.3g}"


def _padded(cells: list[str], width: int) -> list[str]:
    """Blank cells for the experts a layer with fewer experts than the widest lacks."""
    return cells + [""] * (width - len(cells))
