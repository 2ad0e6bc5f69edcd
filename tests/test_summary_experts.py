"""experts.md: per-expert val sensitivity and test routing of MoE models, from the compress
reports' ``experts`` entry (structure of seqcomp.compress.experts.expert_report)."""

from __future__ import annotations

import json
from pathlib import Path

from seqcomp.summary.experts import experts_markdown, largest_shift

KEYS = {"dataset": "d", "model": "moe", "lookback": 96, "horizon": 24, "seed": 0}


def fake_experts(increase: list[list[float]], fp32: list[list[float]], compressed: list[list[float]],
                 losses: tuple[float, float, float] = (0.5, 0.6, 0.55)) -> dict:
    """A report's ``experts`` entry as compress/experts.py writes it (counts made from the fractions)."""
    return {
        "layers": len(increase),
        "experts_per_layer": [len(row) for row in increase],
        "modules": [[f"layers.{i}.moe.experts.{e}" for e in range(len(row))] for i, row in enumerate(increase)],
        "sensitivity": {"split": "val", "windows": 64, "loss": "mse", "measure": "...",
                        "loss_fp32": losses[0], "loss_compressed": losses[1], "loss_all_experts": losses[2],
                        "increase": increase},
        "routing": {"split": "test", "windows": 200,
                    **{k: {"counts": [[round(f * 1000) for f in row] for row in v], "fractions": v}
                       for k, v in (("fp32", fp32), ("compressed", compressed))}},
        "wall_s": 0.1,
    }


FP32 = [[0.25, 0.25, 0.3, 0.2], [0.4, 0.1, 0.1, 0.4]]
W2 = fake_experts([[0.0123, 0.0, -0.0004, 0.5], [0.002, 0.003, 0.004, 0.005]], FP32,
                  [[0.2, 0.3, 0.3, 0.2], [0.1, 0.1, 0.1, 0.7]], (0.41, 0.4623456, 0.45))
LINEAR = fake_experts([[0.0] * 4] * 2, FP32, [[0.25, 0.26, 0.29, 0.2], [0.4, 0.1, 0.1, 0.4]])


def test_the_table_has_a_row_per_layer_and_model_with_the_experts_as_columns() -> None:
    text = experts_markdown([({**KEYS, "pass": "w2"}, W2), ({**KEYS, "pass": "lin"}, LINEAR)], "t")
    assert text.startswith("# t: experts of mixture-of-experts models\n")
    assert "## d / moe / L96-H24 / seed 0\n" in text
    assert "Cells of a pass: ΔMSE (val) / routing fraction (test)." in text
    assert "| layer | model | e0 | e1 | e2 | e3 |" in text
    # per layer: the fp32 routing, then the passes in name order
    rows = [line for line in text.splitlines() if line.startswith("| 0 |") or line.startswith("| 1 |")]
    assert rows == [
        "| 0 | fp32 | 0.250 | 0.250 | 0.300 | 0.200 |",
        "| 0 | `lin` | 0 / 0.250 | 0 / 0.260 | 0 / 0.290 | 0 / 0.200 |",
        "| 0 | `w2` | +0.0123 / 0.200 | 0 / 0.300 | -0.0004 / 0.300 | +0.5 / 0.200 |",
        "| 1 | fp32 | 0.400 | 0.100 | 0.100 | 0.400 |",
        "| 1 | `lin` | 0 / 0.400 | 0 / 0.100 | 0 / 0.100 | 0 / 0.400 |",
        "| 1 | `w2` | +0.002 / 0.100 | +0.003 / 0.100 | +0.004 / 0.100 | +0.005 / 0.700 |",
    ]
    # one line per pass: val losses as reported, the largest test shift (layer 1, e0 and e3 tie at 0.3: the first)
    assert ("- `w2`: val MSE (64 windows) fp32 0.41, whole pass 0.462346, all experts only 0.45; "
            "largest test routing shift (200 windows) 0.300 (layer 1, e0)") in text
    assert "- `lin`: val MSE (64 windows) fp32 0.5, whole pass 0.6, all experts only 0.55; " \
           "largest test routing shift (200 windows) 0.010 (layer 0, e1)" in text
    assert "differs" not in text


def test_largest_shift_is_the_largest_absolute_change() -> None:
    shift, layer, expert = largest_shift([[0.5, 0.5], [0.9, 0.1]], [[0.45, 0.55], [0.7, 0.3]])
    assert (round(shift, 9), layer, expert) == (0.2, 1, 0)
    assert largest_shift([[1.0]], [[1.0]]) == (0.0, 0, 0)


def test_one_table_per_trained_model_and_ragged_layers_and_a_differing_fp32_routing() -> None:
    ragged = fake_experts([[0.1, 0.2, 0.3], [0.1]], [[0.5, 0.25, 0.25], [1.0]], [[0.5, 0.25, 0.25], [1.0]])
    ragged["sensitivity"]["loss"] = "cross_entropy"
    other = fake_experts([[0.1, 0.2, 0.3], [0.1]], [[0.4, 0.35, 0.25], [1.0]], [[0.5, 0.25, 0.25], [1.0]])
    text = experts_markdown([({**KEYS, "seed": 1, "pass": "a"}, ragged), ({**KEYS, "pass": "a"}, W2),
                             ({**KEYS, "seed": 1, "pass": "b"}, other)], "t")
    assert text.index("## d / moe / L96-H24 / seed 0") < text.index("## d / moe / L96-H24 / seed 1")
    seed1 = text[text.index("seed 1"):]
    assert "| 1 | fp32 | 1.000 |  |  |" in seed1 and "ΔCE (val)" in seed1
    assert "The fp32 routing in the reports of `b` differs from `a`'s" in seed1
    assert "- `a`: val CE (64 windows)" in seed1 and "- `b`: val MSE (64 windows)" in seed1  # each its own loss
    assert "largest test routing shift (200 windows) 0.100 (layer 0, e0)" in seed1


def test_no_experts_entry_gives_empty_text() -> None:
    assert experts_markdown([], "t") == ""


def _report(tmp: Path, model: str, pass_name: str, experts: dict | None, lookback: int = 96, horizon: int = 24,
            kind: str = "rtn_weight_sim") -> str:
    path = tmp / "compress" / "d" / model / f"L{lookback}-H{horizon}" / "seed0" / pass_name / "report.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pass": kind, "pass_name": pass_name, "layers": [],
                                **({"experts": experts} if experts else {})}))
    return str(path)


def test_the_summary_stage_reads_the_experts_of_the_reports_that_have_them(tmp_path: Path) -> None:
    from seqcomp.summary.stage import expert_entries

    paths = [_report(tmp_path, "moe", "w2", W2), _report(tmp_path, "lstm", "w2", None),
             _report(tmp_path, "moe", "fp32", W2, kind="fp32")]  # the identity pass: the fp32 row already says it
    assert expert_entries(paths) == [({**KEYS, "pass": "w2"}, W2)]
    assert expert_entries(paths[1:]) == []


def test_the_summary_stage_writes_experts_md(tmp_path: Path) -> None:
    """run_summary writes experts.md from the --reports that carry experts, and nothing else
    changes: a report of a model with no evaluation joins no row."""
    from test_summary import HORIZON, LOOKBACK, fake_metrics
    from seqcomp.summary.stage import TABLES, run_summary

    metrics = fake_metrics(tmp_path)
    plain = [_report(tmp_path, "lstm", "w4_rtn_sim", None, LOOKBACK, HORIZON)]
    run_summary(metrics, [], plain, tmp_path / "before", tmp_path / "plots")
    assert (tmp_path / "before" / "experts.md").read_text() == ""
    run_summary(metrics, [], [*plain, _report(tmp_path, "moe", "w2", W2)], tmp_path / "after", tmp_path / "plots")
    text = (tmp_path / "after" / "experts.md").read_text()
    assert text.startswith("# seqcomp: experts of mixture-of-experts models")
    assert "| 1 | `w2` | +0.002 / 0.100 | +0.003 / 0.100 | +0.004 / 0.100 | +0.005 / 0.700 |" in text
    for name in set(TABLES) - {"experts.md"}:
        assert (tmp_path / "after" / name).read_bytes() == (tmp_path / "before" / name).read_bytes(), name


def test_a_real_expert_report_makes_the_table() -> None:
    """The entry compress/experts.py writes for a tiny MoE (2 layers x 4 experts, experts at 2 bits)
    gives the table: guards the structure the fabricated entries above assume."""
    import torch
    from compress_testkit import SHAPE, windows

    from seqcomp.compress import compress
    from seqcomp.compress.experts import expert_report
    from seqcomp.models import build_model

    torch.manual_seed(0)
    net = build_model("moe_transformer", {"d_model": 8, "n_heads": 2, "n_layers": 2, "d_ff": 16, "n_experts": 4,
                                          "top_k": 2}, SHAPE).eval()
    compressed, _, _ = compress("rtn_weight_sim", {"bits": 2, "groups": ["experts"]}, net, None)
    x = windows(8)
    entry = expert_report(net, compressed, (x, torch.randn(8, SHAPE.horizon, SHAPE.channels)), windows(6))
    text = experts_markdown([({**KEYS, "pass": "w2"}, json.loads(json.dumps(entry)))], "t")
    fp32 = [line for line in text.splitlines() if "| fp32 |" in line]
    assert fp32 == [f"| {i} | fp32 | " + " | ".join(f"{f:.3f}" for f in row) + " |"
                    for i, row in enumerate(entry["routing"]["fp32"]["fractions"])]
    shift = largest_shift(entry["routing"]["fp32"]["fractions"], entry["routing"]["compressed"]["fractions"])
    assert f"fp32 {entry['sensitivity']['loss_fp32']:.6g}, whole pass" in text
    assert f"shift (6 windows) {shift[0]:.3f}" in text
