"""TTM (Tiny Time Mixers): size of the released configuration, adaptive patching, the
resolution prefix token, the channel-mixing decoder and the configuration errors."""

from __future__ import annotations

import pytest
import torch

from seqcomp.errors import ConfigError
from seqcomp.models import SeriesShape, build_model, model_config
from seqcomp.models.ttm import RESOLUTIONS, SMALL, AdaptiveLevel, check_channels

TINY = {"patch_len": 4, "d_model": 16, "levels": 3, "n_layers": 1, "decoder_d_model": 8, "decoder_layers": 1, "dropout": 0.0,
        "head_dropout": 0.0}


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_default_is_the_released_512_96_model_of_about_0_8m_parameters() -> None:
    model = build_model("ttm", {}, SeriesShape(512, 96, 1))
    assert 0.75e6 < _count(model) < 0.85e6
    assert _count(model) == 805_280  # the module docstring's number (TTM reports about 805K)
    assert model(torch.randn(2, 512, 1)).shape == (2, 96, 1)


@pytest.mark.parametrize("lookback,count", [(512, 216_896), (96, 81_956)])
def test_the_small_cpu_configuration(lookback: int, count: int) -> None:
    model = build_model("ttm", SMALL, SeriesShape(lookback, 96, 1))
    assert _count(model) == count  # the module docstring's numbers
    assert model(torch.randn(2, lookback, 1)).shape == (2, 96, 1)


def test_adaptive_patching_levels_see_finer_then_coarser_patches() -> None:
    model = build_model("ttm", TINY, SeriesShape(32, 8, 2))  # 8 patches of 4 points, d_model 16
    seen = []
    for level in model.backbone:
        assert isinstance(level, AdaptiveLevel)
        level.layers.register_forward_hook(lambda mod, args, out: seen.append(tuple(args[0].shape)))
    model(torch.randn(3, 32, 2))
    # Level 0 splits each token in 4 (32 tokens of 4 features), level 1 in 2, level 2 not at all.
    assert seen == [(3, 2, 32, 4), (3, 2, 16, 8), (3, 2, 8, 16)]
    assert [level.layers[0].patch_mixer.mlp.net[0].in_features for level in model.backbone] == [32, 16, 8]
    one_level = build_model("ttm", {**TINY, "levels": 1}, SeriesShape(32, 8, 2))
    assert [level.factor for level in one_level.backbone] == [1]


def test_resolution_token_adds_one_token_and_conditions_the_forecast() -> None:
    torch.manual_seed(0)
    shape = SeriesShape(32, 8, 2)
    plain = build_model("ttm", TINY, shape).eval()
    model = build_model("ttm", {**TINY, "resolution_token": True, "resolution": "h"}, shape).eval()
    assert plain.resolution is None and plain.head[-1].in_features == 8 * 8
    assert model.head[-1].in_features == (8 + 1) * 8  # the prefix token is one more token
    assert model.resolution.num_embeddings == len(RESOLUTIONS)
    x = torch.randn(3, 32, 2)
    hourly = torch.full((3,), RESOLUTIONS.index("h"))
    daily = torch.tensor([RESOLUTIONS.index("d"), RESOLUTIONS.index("h"), RESOLUTIONS.index("min")])
    with torch.no_grad():
        y = model(x)
        torch.testing.assert_close(model(x, resolution=hourly), y, rtol=0, atol=0)  # the configured default
        mixed = model(x, resolution=daily)
    assert not torch.allclose(mixed[0], y[0]) and not torch.allclose(mixed[2], y[2])
    torch.testing.assert_close(mixed[1], y[1], rtol=0, atol=0)  # per-window ids
    # The default id is not stored: a model of another default loads the same weights.
    other = build_model("ttm", {**TINY, "resolution_token": True, "resolution": "d"}, shape).eval()
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(other(x), model(x, resolution=torch.full((3,), RESOLUTIONS.index("d"))), rtol=0, atol=0)


def _perturbed(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """How much each channel's forecast moves when only channel 0's input moves."""
    bumped = x.clone()
    bumped[..., 0] += torch.randn_like(bumped[..., 0])
    with torch.no_grad():
        return (model(bumped) - model(x)).abs().amax(dim=(0, 1))  # (C,)


def test_decoder_channel_mixing_on_and_off() -> None:
    torch.manual_seed(0)
    shape = SeriesShape(32, 8, 3)
    x = torch.randn(2, 32, 3)
    independent = build_model("ttm", TINY, shape).eval()
    assert all(layer.channel_mixer is None for layer in independent.decoder)
    moved = _perturbed(independent, x)
    assert moved[0] > 0 and torch.equal(moved[1:], torch.zeros(2))  # channels never see each other
    mixing = build_model("ttm", {**TINY, "decoder_channel_mixing": True}, shape).eval()
    assert all(layer.channel_mixer.mlp.net[0].in_features == 3 for layer in mixing.decoder)
    assert all(level.layers[0].channel_mixer is None for level in mixing.backbone)  # the backbone stays independent
    assert (_perturbed(mixing, x)[1:] > 0).all()  # now they do
    # Switching it on for fine-tuning adds the channel mixers and leaves every other weight's name and shape.
    new = {k: v.shape for k, v in mixing.state_dict().items()}
    old = {k: v.shape for k, v in independent.state_dict().items()}
    assert {k: new[k] for k in old} == old and all(".channel_mixer." in k for k in set(new) - set(old))


def test_channel_count_errors_name_both_numbers() -> None:
    params = {**TINY, "decoder_channel_mixing": True, "channels": 7}
    assert build_model("ttm", params, SeriesShape(32, 8, 7))(torch.randn(1, 32, 7)).shape == (1, 8, 7)
    with pytest.raises(ConfigError, match=r"models\.m: channels: .*built for 7 channels, the data has 3"):
        build_model("ttm", params, SeriesShape(32, 8, 3), "models.m")
    cfg = model_config("ttm", {**TINY, "decoder_channel_mixing": True}, "models.m")
    with pytest.raises(ValueError, match="decoder_channel_mixing: .*channel count is unknown"):
        check_channels(cfg, None)
    check_channels(model_config("ttm", TINY, "m"), None)  # a channel-independent decoder needs no count
    with pytest.raises(ConfigError, match="channels: only the channel-mixing decoder uses it"):
        model_config("ttm", {"channels": 7}, "models.m")


@pytest.mark.parametrize(
    "params,lookback,message",
    [
        ({}, 96, "patch_len: the lookback 96 is not a multiple of the patch length 64"),
        ({"patch_len": 16}, 40, "the lookback 40 is not a multiple of the patch length 16"),
        ({"d_model": 18, "levels": 3}, 512, "levels: 3 levels split d_model into 4 parts, which must divide d_model=18"),
        ({"resolution": "hourly"}, 512, "resolution: unknown value 'hourly'; valid: oov, min"),
        ({"head_dropout": 1.0}, 512, "head_dropout"),
        ({"levels": 0}, 512, "levels: must be a positive integer"),
    ],
)
def test_config_errors(params: dict, lookback: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        build_model("ttm", params, SeriesShape(lookback, 24, 2), "models.ttm")
    assert "models.ttm" in str(info.value)
