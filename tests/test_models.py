"""Model zoo: the shared contract for every registered model, plus per-architecture checks."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from seqcomp.errors import ConfigError
from seqcomp.models import MODELS, SeriesShape, build_model, hippo, model_config, trains_by_sgd
from seqcomp.models.revin import RevIN
from seqcomp.models.s4d import S4DLayer
from seqcomp.models.spacetime import CompanionSSM
from seqcomp.models.selective_scan import scan_chunked, scan_sequential, selective_scan

SHAPES = [SeriesShape(96, 24, 3), SeriesShape(40, 7, 1)]
# The shared tests build each model with its defaults, except where the defaults do not fit
# SHAPES (TTM's patch of 64 divides neither lookback) or are slow for a shared test.
PARAMS = {
    "ttm": {"patch_len": 8, "d_model": 16, "levels": 2, "n_layers": 1, "decoder_d_model": 8, "decoder_layers": 1},
    "moe_transformer": {"d_model": 16, "n_heads": 2, "n_layers": 1, "d_ff": 32},
}


def _trainable(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


@pytest.mark.parametrize("kind", MODELS.names())
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"L{s.lookback}H{s.horizon}C{s.channels}")
def test_contract(kind: str, shape: SeriesShape) -> None:
    torch.manual_seed(0)
    model = build_model(kind, PARAMS.get(kind, {}), shape)
    x = torch.randn(4, shape.lookback, shape.channels)
    y = model(x)
    assert y.shape == (4, shape.horizon, shape.channels)
    assert y.dtype == torch.float32 and torch.isfinite(y).all()

    params = _trainable(model)
    if kind == "naive":
        assert not list(model.parameters())  # the trainer skips optimisation on this
    else:
        assert params
        y.square().mean().backward()
        for name, p in model.named_parameters():
            assert p.grad is not None, f"{kind}: no gradient for {name}"
            assert torch.isfinite(p.grad).all(), f"{kind}: non-finite gradient for {name}"

    # The state dict alone rebuilds the model: a fresh instance with other random weights.
    torch.manual_seed(1)
    fresh = build_model(kind, PARAMS.get(kind, {}), shape)
    fresh.load_state_dict(model.state_dict())
    model.eval(), fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["linear", "dlinear", "tsmixer", "s4d", "s4", "mamba", "smamba"])
def test_revin_invariance_and_roundtrip(kind: str) -> None:
    torch.manual_seed(0)
    shape = SHAPES[0]
    model = build_model(kind, {"revin": True}, shape).eval()
    assert isinstance(model, RevIN) and model.affine
    x = torch.randn(2, shape.lookback, shape.channels)
    with torch.no_grad():
        y = model(x)
        # Per window and channel: shift by any offset and scale by any positive factor.
        scale = torch.tensor([0.5, 3.0, 20.0])
        offset = torch.tensor([-7.0, 0.0, 100.0])
        torch.testing.assert_close(model(x * scale + offset), y * scale + offset, rtol=1e-4, atol=1e-3)
        fresh = build_model(kind, {"revin": True}, shape).eval()
        fresh.load_state_dict(model.state_dict())
        torch.testing.assert_close(fresh(x), y, rtol=0, atol=0)


def test_revin_keeps_naive_parameter_free() -> None:
    model = build_model("naive", {"revin": True}, SHAPES[0])
    assert not list(model.parameters())
    x = torch.randn(2, 96, 3)
    torch.testing.assert_close(model(x), x[:, -1:].repeat(1, 24, 1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", MODELS.names())
@pytest.mark.parametrize("options", [{}, {"revin": True}, {"cycle": 4}, {"revin": True, "cycle": 4}], ids=str)
def test_the_static_table_of_sgd_free_kinds_matches_the_built_models(kind: str, options: dict) -> None:
    """``trains_by_sgd`` (read at DAG build, without torch, to ask for no GPU) says what the
    training stage's ``fit`` decides from the built model: closed form, no trainable parameters, SGD."""
    model = build_model(kind, {**PARAMS.get(kind, {}), **options}, SHAPES[0])
    by_sgd = not hasattr(model, "fit_closed_form") and any(True for _ in _trainable(model))
    assert trains_by_sgd(kind, options) == by_sgd


@pytest.mark.parametrize("kind", MODELS.names())
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_int8_dynamic_quantization_runs(kind: str) -> None:
    # The compression stage swaps nn.Linear / nn.LSTM for int8 dynamic versions; every model
    # must still run (no code reading a swapped layer's .weight as a tensor) and stay close.
    torch.manual_seed(0)
    model = build_model(kind, PARAMS.get(kind, {}), SHAPES[0]).eval()
    quantized = torch.ao.quantization.quantize_dynamic(
        copy.deepcopy(model), {torch.nn.Linear, torch.nn.LSTM}, dtype=torch.qint8
    )
    x = torch.randn(4, 96, 3)
    with torch.no_grad():
        y, yq = model(x), quantized(x)
    assert (yq - y).abs().max() <= 0.1 * max(1.0, y.abs().max().item())


# --- S4D -------------------------------------------------------------------------------


@pytest.mark.parametrize("init", ["lin", "inv", "legs"])
def test_s4d_convolution_equals_recurrence(init: str) -> None:
    torch.manual_seed(0)
    layer = S4DLayer(d_model=8, d_state=32, init=init, dt_min=1e-3, dt_max=0.5)
    u = torch.randn(3, 150, 8)
    conv, rec = layer(u), layer.forward_recurrent(u)
    scale = rec.abs().max()
    assert (conv - rec).abs().max() <= 1e-4 * max(1.0, scale.item())

    model = build_model("s4d", {"init": init}, SHAPES[0]).eval()
    x = torch.randn(2, 96, 3)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.forward_recurrent(x), rtol=1e-4, atol=1e-4)


def test_s4d_init_and_real_parameters() -> None:
    lin = S4DLayer(4, d_state=8, init="lin")
    inv = S4DLayer(4, d_state=8, init="inv")
    torch.testing.assert_close(lin.A_im[0], math.pi * torch.arange(4.0))
    torch.testing.assert_close(inv.A_im[0], 8 / math.pi * (8 / (2 * torch.arange(4.0) + 1) - 1))
    torch.testing.assert_close(-lin.A_log_re.exp(), torch.full((4, 4), -0.5))
    legs = S4DLayer(4, d_state=8, init="legs")  # the eigenvalues of HiPPO-LegS's normal part
    torch.testing.assert_close(legs.A_im[2].double(), hippo.nplr("legs", 8).lam.imag)
    assert (legs.A_im[0] > 0).all() and legs.A_im[0, -1] > 3 * legs.A_im[0, 0]
    assert ((lin.log_dt >= math.log(1e-3)) & (lin.log_dt <= math.log(1e-1))).all()
    model = build_model("s4d", {"ssm_lr": 5e-4}, SHAPES[0])
    assert all(not p.is_complex() for p in model.parameters())
    tagged = {n for n, p in model.named_parameters() if hasattr(p, "_optim")}
    assert {"layers.0.log_dt", "layers.0.A_log_re", "layers.0.A_im"} <= tagged
    assert model.layers[0].log_dt._optim == {"lr": 5e-4, "weight_decay": 0.0}
    # Compression passes deep-copy the model; the optimizer tags must survive that.
    assert copy.deepcopy(model).layers[1].A_im._optim == {"lr": 5e-4, "weight_decay": 0.0}


# --- Mamba -----------------------------------------------------------------------------


def _scan_inputs(b: int, length: int, e: int, n: int, dt_scale: float = 0.5) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(length)
    return [
        torch.randn(b, length, e, generator=g, dtype=torch.float64),
        dt_scale * torch.rand(b, length, e, generator=g, dtype=torch.float64),
        -torch.rand(e, n, generator=g, dtype=torch.float64) * n - 0.1,
        torch.randn(b, length, n, generator=g, dtype=torch.float64),
        torch.randn(b, length, n, generator=g, dtype=torch.float64),
        torch.randn(e, generator=g, dtype=torch.float64),
    ]


@pytest.mark.parametrize("length,chunk", [(37, 8), (64, 8), (50, 4), (5, 16), (1, 8)])
def test_mamba_chunked_scan_equals_sequential(length: int, chunk: int) -> None:
    inputs = [t.requires_grad_() for t in _scan_inputs(2, length, 6, 4)]
    ref = scan_sequential(*inputs)
    grads_ref = torch.autograd.grad(ref.square().sum(), inputs)
    out = scan_chunked(*inputs, chunk=chunk)
    grads = torch.autograd.grad(out.square().sum(), inputs)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref, rtol=1e-9, atol=1e-9)


def test_mamba_chunked_scan_fp32_and_fast_decay() -> None:
    # dt*A down to -400 per step: exp(-cumsum) factorisations overflow here, ours must not.
    inputs = [t.float().requires_grad_() for t in _scan_inputs(2, 70, 6, 16, dt_scale=25.0)]
    ref = scan_sequential(*inputs)
    out = scan_chunked(*inputs)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    grads = torch.autograd.grad(out.sum(), inputs)
    grads_ref = torch.autograd.grad(ref.sum(), inputs)
    for g, g_ref in zip(grads, grads_ref):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, g_ref, rtol=1e-3, atol=1e-3)


def test_mamba_scan_modes_agree_in_model() -> None:
    torch.manual_seed(0)
    shape = SeriesShape(45, 12, 2)
    seq = build_model("mamba", {"scan": "sequential"}, shape)
    chunked = build_model("mamba", {"scan": "chunked"}, shape)
    chunked.load_state_dict(seq.state_dict())
    x = torch.randn(3, 45, 2)
    torch.testing.assert_close(chunked(x), seq(x), rtol=1e-5, atol=1e-5)
    assert selective_scan(*[t.float() for t in _scan_inputs(1, 10, 3, 2)]).shape == (1, 10, 3)


def test_scan_dispatch_follows_state_size_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import seqcomp.models.selective_scan as ss

    called = []
    monkeypatch.setattr(ss, "scan_sequential", lambda *a: called.append("sequential"))
    monkeypatch.setattr(ss, "scan_chunked", lambda *a: called.append("chunked"))
    args = [t.float() for t in _scan_inputs(2, 12, 3, 4)]  # per-step state B*E*N = 2*3*4 = 24
    monkeypatch.setattr(ss, "CPU_CHUNKED_MAX_STATE", 24)
    ss.selective_scan(*args)
    ss.selective_scan(*args, mode="sequential")
    monkeypatch.setattr(ss, "CPU_CHUNKED_MAX_STATE", 23)
    ss.selective_scan(*args)
    ss.selective_scan(*args, mode="chunked")
    assert called == ["chunked", "sequential", "sequential", "chunked"]


def test_mamba_parameters() -> None:
    model = build_model("mamba", {}, SHAPES[0])
    mixer = model.mixers[0]
    assert mixer.A_log._optim == {"weight_decay": 0.0} and mixer.dt_bias._optim == {"weight_decay": 0.0}
    torch.testing.assert_close(-mixer.A_log.exp()[0], -torch.arange(1.0, 17.0))
    dt = torch.nn.functional.softplus(mixer.dt_bias)
    assert ((dt >= 1e-3 * 0.999) & (dt <= 1e-1 * 1.001)).all()
    assert copy.deepcopy(model).mixers[1].A_log._optim == {"weight_decay": 0.0}


# --- companion SSM (SpaceTime) ---------------------------------------------------------------


def _companion(d_model: int, d_state: int, feedback: float) -> CompanionSSM:
    torch.manual_seed(0)
    layer = CompanionSSM(d_model, d_state)
    with torch.no_grad():
        layer.a.normal_(0.0, feedback)  # some feedback: an IIR kernel, still stable at this scale
    return layer


@pytest.mark.parametrize("length", [5, 40, 150])  # shorter than, about, and longer than N = 16
def test_companion_kernel_is_the_folded_impulse_response(length: int) -> None:
    layer = _companion(4, 16, 0.04)
    A = layer.matrix().double()  # (H, N, N)
    radius = torch.linalg.eigvals(A).abs().amax()
    assert 0.5 < radius < 0.98  # stable (the folded sum converges) but far from a pure shift (radius 0)
    b, c = layer.b.detach().double(), layer.c.detach().double()
    x, response = b.clone(), []
    periods = 3000 // length  # A^j b for j well past the point where it has decayed
    for _ in range(periods * length):
        response.append((c * x).sum(-1))
        x = torch.einsum("hij,hj->hi", A, x)
    folded = torch.stack(response, -1).unflatten(-1, (periods, length)).sum(-2)  # sum_m c A^(j+mL) b
    torch.testing.assert_close(layer.kernel(length).double(), folded, rtol=1e-4, atol=1e-5)


def test_companion_convolution_equals_recurrence() -> None:
    layer = _companion(8, 12, 0.2)
    u = torch.randn(3, 60, 8)
    with torch.no_grad():
        conv, rec = layer(u), layer.forward_recurrent(u)
    assert (conv - rec).abs().max() <= 1e-4 * max(1.0, rec.abs().max().item())
    model = build_model("spacetime", {"d_state": 8}, SHAPES[0]).eval()
    x = torch.randn(2, 96, 3)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.forward_recurrent(x), rtol=1e-4, atol=1e-4)


def test_companion_parameters_are_tagged_recurrent() -> None:
    from seqcomp.compress.quant.groups import named_groups

    model = build_model("spacetime", {}, SHAPES[0])
    groups = {name.rsplit(".", 1)[-1]: g for name, _, _, _, g in named_groups(model) if ".layers.0." in f".{name}"}
    assert groups == {"a": "recurrent", "b": "recurrent", "c": "ssm", "d": "ssm"}
    assert copy.deepcopy(model).layers[0].a._optim == {"lr": 1e-3, "weight_decay": 0.0}


@pytest.mark.parametrize("kind", ["s4d", "s4", "mamba", "spacetime", "smamba"])
def test_ssm_numerics_stay_fp32_under_autocast(kind: str) -> None:
    torch.manual_seed(0)
    model = build_model(kind, {}, SHAPES[0]).eval()
    x = torch.randn(2, 96, 3)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = model(x)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y.float(), ref, rtol=0.1, atol=0.1)  # bf16 linears, fp32 scan


# --- S-Mamba ----------------------------------------------------------------------------


def test_smamba_mixes_variates_in_both_directions() -> None:
    """Tokens are channels: the forward Mamba is causal over the channel order and the
    backward one anti-causal, so together every channel's forecast sees every channel."""
    torch.manual_seed(0)
    shape = SeriesShape(32, 8, 5)
    model = build_model("smamba", {"d_model": 16, "d_ff": 16, "n_layers": 1, "dropout": 0.0}, shape).eval()
    x = torch.randn(2, 32, 5)
    first, last = x.clone(), x.clone()
    first[..., 0] += 1.0
    last[..., -1] += 1.0
    layer = model.layers[0]
    with torch.no_grad():
        base = model(x)
        assert not torch.equal(model(last)[..., 0], base[..., 0])
        assert not torch.equal(model(first)[..., -1], base[..., -1])
        saved = layer.backward_mixer.out_proj.weight.clone()
        layer.backward_mixer.out_proj.weight.zero_()  # forward direction only
        assert torch.equal(model(last)[..., :-1], model(x)[..., :-1])
        layer.backward_mixer.out_proj.weight.copy_(saved)
        layer.forward_mixer.out_proj.weight.zero_()  # backward direction only
        assert torch.equal(model(first)[..., 1:], model(x)[..., 1:])


# --- residual cycle (model-level cycle: P) --------------------------------------------------


def _cycle_series(n: int, period: int, channels: int, noise: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    profile = torch.randn(period, channels, generator=g) * 2  # an arbitrary, non-sinusoidal cycle
    level = torch.randn(n, channels, generator=g).cumsum(0) * 0.01
    return profile[torch.arange(n) % period] + level + noise * torch.randn(n, channels, generator=g)


def test_cycle_wrapper_phases_line_up_with_the_data() -> None:
    from seqcomp.data.windows import PreparedSeries
    from seqcomp.models.cycle import ResidualCycle

    shape = SeriesShape(48, 12, 3)
    series = PreparedSeries(values=_cycle_series(600, 24, 3), borders=(400, 500, 600), meta={})
    model = build_model("naive", {"cycle": 24}, shape).eval()
    assert isinstance(model, ResidualCycle) and model.period == 24 and not isinstance(model.net, ResidualCycle)
    x, y = series.windows("test", 48, 12, cycle=model.period).tensors()
    # With the true cycle as Q, the naive forecast of the residual is exact but for the level walk.
    profile = _cycle_series(600, 24, 3)[:24] - _cycle_series(600, 24, 3)[:24].mean(0)
    with torch.no_grad():
        model.cycle.copy_(profile)
        err_cycle = (model(x) - y).square().mean()
        err_plain = (model.net(x[..., :-1]) - y).square().mean()
    assert err_cycle < 0.01 * err_plain


def test_cycle_closed_form_learns_the_cycle_and_beats_plain_linear() -> None:
    from seqcomp.data.windows import PreparedSeries

    shape = SeriesShape(24, 24, 2)  # a lookback of one period: too short to average the noise away
    series = PreparedSeries(values=_cycle_series(4000, 24, 2, noise=0.5), borders=(3000, 3500, 4000), meta={})
    errors = {}
    for name, params in (("plain", {}), ("cycle", {"cycle": 24})):
        model = build_model("linear", params, shape)
        period = params.get("cycle")
        model.fit_closed_form(*series.windows("train", 24, 24, cycle=period).tensors())
        x, y = series.windows("test", 24, 24, cycle=period).tensors()
        with torch.no_grad():
            errors[name] = float((model(x) - y).square().mean())
    assert errors["cycle"] < 0.8 * errors["plain"]
    learned = model.cycle.detach()
    true = _cycle_series(4000, 24, 2)[:24]
    assert torch.corrcoef(torch.stack([learned.flatten(), (true - true.mean(0)).flatten()]))[0, 1] > 0.99


def test_cycle_is_learned_by_sgd_models_and_survives_the_state_dict() -> None:
    torch.manual_seed(0)
    shape = SHAPES[0]
    model = build_model("dlinear", {"cycle": 24, "revin": True}, shape)
    x = torch.cat([torch.randn(4, shape.lookback, shape.channels), (torch.arange(shape.lookback) % 24).float()[None, :, None].repeat(4, 1, 1)], -1)
    model(x).square().mean().backward()
    assert model.cycle.grad is not None and model.cycle.grad.abs().sum() > 0
    fresh = build_model("dlinear", {"cycle": 24, "revin": True}, shape)
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(fresh.eval()(x), model.eval()(x), rtol=0, atol=0)


# --- closed-form linear ----------------------------------------------------------------


def test_linear_recovers_known_map() -> None:
    torch.manual_seed(0)
    n, lookback, horizon, c = 3000, 24, 8, 2
    weight = torch.randn(horizon, lookback) / lookback**0.5
    bias = torch.randn(horizon)
    x = torch.randn(n, lookback, c) * 2 + 5
    mean = x.mean(1, keepdim=True)
    y = torch.einsum("hl,nlc->nhc", weight, x - mean) + bias[:, None] + mean + 1e-3 * torch.randn(n, horizon, c)
    model = build_model("linear", {}, SeriesShape(lookback, horizon, c))
    model.fit_closed_form(x, y)
    # Windows are mean-centred, so W and W + c 1^T predict alike: compare row-centred weights.
    def centred(w: torch.Tensor) -> torch.Tensor:
        return w - w.mean(dim=1, keepdim=True)

    assert (centred(model.proj.weight) - centred(weight)).abs().max() < 1e-3
    assert (model.proj.bias - bias).abs().max() < 1e-3
    torch.testing.assert_close(model(x[:5]), y[:5], rtol=0, atol=0.02)


def _windows(series: torch.Tensor, lookback: int, horizon: int) -> tuple[torch.Tensor, torch.Tensor]:
    w = series.unfold(0, lookback + horizon, 1).permute(0, 2, 1)  # (N, L+H, C)
    return w[:, :lookback], w[:, lookback:]


def test_linear_beats_naive_on_seasonal_ar_series() -> None:
    g = torch.Generator().manual_seed(0)
    t = torch.arange(3000, dtype=torch.float32)
    noise = torch.zeros(3000, 2)
    eps = torch.randn(3000, 2, generator=g)
    for i in range(1, 3000):  # AR(1) noise on top of two seasonalities
        noise[i] = 0.8 * noise[i - 1] + 0.3 * eps[i]
    series = torch.stack([torch.sin(2 * math.pi * t / 24), torch.cos(2 * math.pi * t / 50)], 1) + noise
    shape = SeriesShape(96, 24, 2)
    x_tr, y_tr = _windows(series[:2000], 96, 24)
    x_te, y_te = _windows(series[2000:], 96, 24)
    linear = build_model("linear", {}, shape)
    linear.fit_closed_form(x_tr, y_tr)
    naive = build_model("naive", {}, shape)
    with torch.no_grad():
        mse_linear = (linear(x_te) - y_te).square().mean()
        mse_naive = (naive(x_te) - y_te).square().mean()
    assert mse_linear < 0.5 * mse_naive


def test_linear_fit_through_revin() -> None:
    shape = SeriesShape(32, 8, 2)
    x = torch.randn(500, 32, 2).cumsum(1)
    y = x[:, -1:].repeat(1, 8, 1)  # a last-value target is in the model class, even normalised
    model = build_model("linear", {"revin": True}, shape)
    model.fit_closed_form(x, y)
    with torch.no_grad():
        torch.testing.assert_close(model(x[:10]), y[:10], rtol=1e-3, atol=1e-3)


# --- configuration ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind,params,key",
    [
        ("s4d", {"d_model": -4}, "d_model"),
        ("transformer", {"d_model": -1}, "d_model"),
        ("mamba", {"d_state": 0}, "d_state"),
        ("s4d", {"d_state": 0}, "d_state"),
        ("s4d", {"init": "legt"}, "init"),
        ("s4", {"measure": "lagt"}, "measure"),
        ("s4", {"disc": "euler"}, "disc"),
        ("s4", {"d_state": 7}, "d_state"),
        ("s4", {"dt_min": 0.5, "dt_max": 0.1}, "dt_min"),
        ("spacetime", {"d_state": -2}, "d_state"),
        ("spacetime", {"ssm_lr": 0.0}, "ssm_lr"),
        ("mamba", {"scan": "fast"}, "scan"),
        ("smamba", {"d_ff": 0}, "d_ff"),
        ("smamba", {"dt_min": 0.5, "dt_max": 0.1}, "dt_min"),
        ("lstm", {"hiddn": 3}, "hiddn"),
        ("naive", {"foo": 1}, "foo"),
        ("dlinear", {"revin": "yes"}, "revin"),
        ("patchtst", {"dropout": 1.5}, "dropout"),
        ("linear", {"ridge": -1.0}, "ridge"),
        ("linear", {"cycle": 1}, "cycle"),
        ("dlinear", {"cycle": "daily"}, "cycle"),
    ],
)
def test_config_errors_name_the_key(kind: str, params: dict, key: str) -> None:
    for call in (lambda: model_config(kind, params, "models.m"), lambda: build_model(kind, params, SHAPES[0], "models.m")):
        with pytest.raises(ConfigError) as info:
            call()
        assert key in str(info.value) and "models.m" in str(info.value)


def test_config_lists_valid_choices_and_accepts_revin() -> None:
    with pytest.raises(ConfigError, match="lin, inv, legs"):
        model_config("s4d", {"init": "hippo"}, "m")
    assert model_config("s4d", {"revin": True, "init": "inv"}, "m").init == "inv"
    with pytest.raises(ConfigError, match="patch_len"):
        build_model("patchtst", {"patch_len": 128}, SHAPES[0], "m")


# --- GPU (skipped without CUDA) ------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kind", MODELS.names())
def test_cuda_bf16_autocast(kind: str) -> None:
    torch.manual_seed(0)
    model = build_model(kind, PARAMS.get(kind, {}), SHAPES[0]).cuda()
    x = torch.randn(8, 96, 3, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = model(x)
        if list(model.parameters()):
            y.float().square().mean().backward()
    assert y.shape == (8, 24, 3) and torch.isfinite(y).all()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
