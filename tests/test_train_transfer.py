"""Transfer of pre-trained weights: the shape rules, channel independence, head-only tuning, few-shot windows."""

from __future__ import annotations

import pytest
import torch

from seqcomp.artifacts import save_model
from seqcomp.data.windows import WindowDataset
from seqcomp.errors import SeqcompError
from seqcomp.models import SeriesShape, build_model
from seqcomp.train.transfer import adapt_plan, few_shot_windows, load_pretrained, tune_head_only

TINY_TTM = {"revin": True, "patch_len": 8, "d_model": 16, "levels": 2, "n_layers": 1, "decoder_d_model": 8,
            "decoder_layers": 1, "dropout": 0.0, "head_dropout": 0.0}


def test_adapt_plan_copies_cuts_rows_repeats_channels_and_refuses_the_rest() -> None:
    pre = {"a": (4, 3), "head.weight": (12, 5), "head.bias": (12,), "revin.weight": (1,)}
    here = {"a": (4, 3), "head.weight": (8, 5), "head.bias": (8,), "revin.weight": (3,), "mix.weight": (3, 3)}
    assert adapt_plan(pre, here, 12, 8, 3) == {"a": "copy", "head.weight": "rows", "head.bias": "rows",
                                               "revin.weight": "channels", "mix.weight": "new"}
    with pytest.raises(ValueError, match="'a' has shape \\[4, 3\\] pre-trained and \\[4, 7\\]"):
        adapt_plan(pre, {**here, "a": (4, 7)}, 12, 8, 3)
    with pytest.raises(ValueError, match="no tensor 'a'"):
        adapt_plan(pre, {k: v for k, v in here.items() if k != "a"}, 12, 8, 3)
    with pytest.raises(ValueError):  # a longer horizon than pre-trained cannot be cut from it
        adapt_plan(pre, {**here, "head.weight": (16, 5), "head.bias": (16,)}, 12, 16, 3)


@pytest.mark.parametrize("kind, params", [
    ("ttm", TINY_TTM),
    ("moe_transformer", {"revin": True, "tokens": "patch", "patch_len": 8, "d_model": 16, "n_heads": 2,
                         "n_layers": 1, "d_ff": 16, "n_experts": 4, "top_k": 2, "dropout": 0.0}),
])
def test_a_transferred_model_forecasts_each_channel_as_the_pretrained_one(tmp_path, kind, params) -> None:
    """Pre-trained on one channel at horizon 12, moved to 3 channels at horizon 8: each channel's
    forecast is the pre-trained model's forecast of that channel alone, cut to its first 8 steps."""
    torch.manual_seed(0)
    pre = build_model(kind, params, SeriesShape(32, 12, 1)).eval()
    with torch.no_grad():  # a non-trivial RevIN affine map, so its repetition over channels is exercised
        for name, p in pre.named_parameters():
            if name in ("weight", "bias"):
                p.add_(0.3)
    save_model(pre, kind, params, SeriesShape(32, 12, 1), tmp_path / "model.pt")
    net = build_model(kind, params, SeriesShape(32, 8, 3))
    info = load_pretrained(net, tmp_path / "model.pt", {"kind": kind, "lookback": 32, "horizon": 8}, channels=3)
    assert info["weights_channels"] == ["bias", "weight"] and info["weights_new"] == []
    x = torch.randn(5, 32, 3)
    with torch.no_grad():
        out = net.eval()(x)
        alone = torch.cat([pre(x[:, :, c : c + 1])[:, :8] for c in range(3)], dim=2)
    torch.testing.assert_close(out, alone, rtol=1e-5, atol=1e-5)
    if kind == "ttm":
        assert info["weights_rows"] == ["net.head.2.bias", "net.head.2.weight"]


def test_a_pretrained_file_of_another_kind_or_context_is_refused(tmp_path) -> None:
    save_model(build_model("ttm", TINY_TTM, SeriesShape(32, 8, 1)), "ttm", TINY_TTM, SeriesShape(32, 8, 1),
               tmp_path / "model.pt")
    net = build_model("ttm", TINY_TTM, SeriesShape(64, 8, 2))
    with pytest.raises(SeqcompError, match="context 32, not 64"):
        load_pretrained(net, tmp_path / "model.pt", {"kind": "ttm", "lookback": 64, "horizon": 8}, channels=2)
    with pytest.raises(SeqcompError, match="a pre-trained ttm, not a lstm"):
        load_pretrained(net, tmp_path / "model.pt", {"kind": "lstm", "lookback": 32, "horizon": 8}, channels=2)


def test_head_only_tuning_trains_the_declared_head_alone() -> None:
    net = build_model("ttm", TINY_TTM, SeriesShape(32, 8, 2))
    assert tune_head_only(net) == ["adapter", "decoder", "head"]
    trained = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trained and all(n.split(".")[1] in ("adapter", "decoder", "head") for n in trained)
    assert any(n.startswith("net.backbone") for n, p in net.named_parameters() if not p.requires_grad)
    with pytest.raises(SeqcompError, match="declares no transfer_head"):
        tune_head_only(build_model("lstm", {"hidden": 4}, SeriesShape(8, 2, 1)))


def test_few_shot_windows_are_the_first_or_last_fraction_rounded_down() -> None:
    values = torch.arange(100.0)[:, None]
    windows = WindowDataset(values, range(10, 60), 10, 5)  # 50 windows
    first, last = few_shot_windows(windows, 0.1, "first"), few_shot_windows(windows, 0.1, "last")
    assert len(first) == len(last) == 5
    assert first[0][1][0, 0].item() == 10 and last[-1][1][0, 0].item() == 59
    assert len(few_shot_windows(windows, 0.05, "first")) == 2  # 2.5 rounded down


def test_fine_tuning_keeps_the_pretrained_weights_unless_it_beats_them_on_val() -> None:
    from types import SimpleNamespace

    from seqcomp.train.transfer import Start

    net = build_model("ttm", TINY_TTM, SeriesShape(32, 8, 2))
    windows = WindowDataset(torch.randn(200, 2), range(32, 150), 32, 8)
    start = Start.of(net, windows, "forecast")
    assert net.training and all(m.training for m in net.modules())  # fine-tuning goes on with dropout
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)  # "fine-tuned"
    worse = SimpleNamespace(net=net, val={"mse": start.val["mse"] + 1, "mae": 1.0})
    notes = start.keep_the_better(worse)
    assert notes["kept_pretrained_weights"] is True and worse.val == start.val
    assert all(net.state_dict()[k].equal(v) for k, v in before.items())
    better = SimpleNamespace(net=net, val={"mse": start.val["mse"] / 2, "mae": 1.0})
    assert start.keep_the_better(better)["kept_pretrained_weights"] is False and better.val["mse"] < start.val["mse"]
