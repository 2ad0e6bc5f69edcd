"""bench/decode_cost.py: it decodes each compressed model of a results folder with the pipeline's
own unpack, into the model its job trained, and says which reports it cannot read."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from seqcomp.artifacts import save_model, save_torch
from seqcomp.compress import compress, stored_size
from seqcomp.models import SeriesShape, build_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from decode_cost import decode_row, train_model_of  # noqa: E402

SHAPE = SeriesShape(24, 8, 3)


def compressed_job(root: Path, pass_name: str, kind: str, params: dict, with_params: bool = True) -> Path:
    """A results folder's trained model and one compressed form of it, as the pipeline lays them out."""
    job = Path("d", "lstm", "L24-H8", "seed0")
    torch.manual_seed(0)
    net = build_model("lstm", {}, SHAPE)
    (root / "train" / job).mkdir(parents=True, exist_ok=True)
    save_model(net, "lstm", {}, SHAPE, root / "train" / job / "model.pt")
    _, stored, report = compress(kind, params, net, torch.randn(8, 24, 3))
    out = root / "compress" / job / pass_name
    out.mkdir(parents=True)
    save_torch(stored, out / "model.pt")
    report.update({"pass_name": pass_name, "size": stored_size(stored), "compression_ratio": 4.0,
                   **({"pass_params": params} if with_params else {})})
    (out / "report.json").write_text(json.dumps(report))
    return out / "model.pt"


def test_each_compressed_model_is_decoded_into_its_trained_model(tmp_path: Path) -> None:
    path = compressed_job(tmp_path / "results" / "etth1", "w3", "rtn_weight_sim", {"bits": 3, "keep_dtype": "float16"})
    assert train_model_of(path) == tmp_path / "results" / "etth1" / "train" / "d" / "lstm" / "L24-H8" / "seed0" / "model.pt"
    row = decode_row(path, warmup=0, repeats=2)
    assert row["model"] == "lstm" and row["pass"] == "w3" and row["kind"] == "rtn_weight_sim"
    assert row["decode_ms"] > 0 and row["fp32_load_ms"] > 0 and row["params"] > 0 and "skipped" not in row


def test_a_report_without_its_settings_is_skipped_saying_why(tmp_path: Path) -> None:
    path = compressed_job(tmp_path, "w3", "rtn_weight_sim", {"bits": 3}, with_params=False)
    assert "predates pass_params" in decode_row(path, warmup=0, repeats=1)["skipped"]
