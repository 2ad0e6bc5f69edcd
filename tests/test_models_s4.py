"""S4: the DPLR kernel against a dense float64 reference, convolution against recurrence,
gradients, chunking, the HTTYH timescale, compression groups, and S4D-LegS's approximation."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from seqcomp.models import SeriesShape, build_model, hippo
from seqcomp.models.s4 import S4Layer, untilde
from seqcomp.models.s4d import S4DLayer

C128 = torch.complex128


def dense_reference(layer: S4Layer, length: int) -> torch.Tensor:
    """K_k = C dA^k dB, k < L, in float64 from the layer's parameters: A materialised as
    diag(lam) - P P^* over all N modes, discretised densely, powers taken one step at a time;
    C = C~ (I - dA^L)^{-1} (the layer's C parameter is S4's C~)."""
    with torch.no_grad():
        def pairs(p: torch.Tensor) -> torch.Tensor:
            z = torch.complex(p[..., 0].double(), p[..., 1].double())
            return torch.cat([z, z.conj()], dim=1)

        half = torch.complex(-layer.Lambda_log_re.double().exp(), layer.Lambda_im.double())
        lam, P, B, C = torch.cat([half, half.conj()], dim=1), pairs(layer.P), pairs(layer.B), pairs(layer.C)
        A = torch.diag_embed(lam) - P @ P.conj().transpose(-1, -2)  # (H, N, N)
        eye = torch.eye(A.shape[-1], dtype=C128)
        dt = layer.log_dt.double().exp()[:, None, None]
        if layer.disc == "bilinear":
            dA = torch.linalg.solve(eye - dt / 2 * A, eye + dt / 2 * A)
            dB = torch.linalg.solve(eye - dt / 2 * A, dt[..., 0] * B)
        else:
            dA = torch.linalg.matrix_exp(dt * A)
            dB = torch.linalg.solve(A, ((dA - eye) @ B[..., None])[..., 0])
        C = torch.linalg.solve((eye - torch.linalg.matrix_power(dA, length)).transpose(-1, -2), C[..., None])[..., 0]
        out, x = [], dB
        for _ in range(length):
            out.append((C * x).sum(-1).real)
            x = (dA @ x[..., None])[..., 0]
        return torch.stack(out, dim=-1)  # (H, L)


@pytest.mark.parametrize("measure", hippo.MEASURES)
@pytest.mark.parametrize("disc", ["bilinear", "zoh"])
def test_kernel_equals_dense_reference(measure: str, disc: str) -> None:
    torch.manual_seed(0)
    layer = S4Layer(4, d_state=64, measure=measure, disc=disc, dt_min=1e-3, dt_max=0.1)
    for length in (16, 37, 512):
        with torch.no_grad():
            k = layer.kernel(length)
        assert k.dtype == torch.float32 and k.shape == (4, length)
        ref = dense_reference(layer, length)
        assert (k.double() - ref).abs().max() <= 5e-6 * ref.abs().max(), (measure, disc, length)


def test_chunked_kernel_and_its_gradients_equal_one_block() -> None:
    torch.manual_seed(0)
    whole = S4Layer(3, d_state=16, measure="legt", chunk=1024)
    chunked = copy.deepcopy(whole)
    chunked.chunk = 7  # 51 nodes at L=100: 8 blocks, the last partial
    u = torch.randn(2, 100, 3)
    y_whole, y_chunked = whole(u), chunked(u)
    torch.testing.assert_close(y_chunked, y_whole, rtol=1e-5, atol=1e-6)
    y_whole.square().mean().backward()
    y_chunked.square().mean().backward()
    for (name, p), q in zip(whole.named_parameters(), chunked.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-7, msg=name)


@pytest.mark.parametrize("measure", hippo.MEASURES)
@pytest.mark.parametrize("disc", ["bilinear", "zoh"])
def test_convolution_equals_recurrence_and_gradients_reach_every_parameter(measure: str, disc: str) -> None:
    torch.manual_seed(0)
    layer = S4Layer(4, d_state=16, measure=measure, disc=disc, dt_min=1e-2, dt_max=0.2)
    u = torch.randn(2, 60, 4)
    conv = layer(u)
    with torch.no_grad():
        rec = layer.forward_recurrent(u)
    assert (conv - rec).abs().max() <= 1e-4 * max(1.0, rec.abs().max().item())
    conv.square().mean().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_forecaster_recurrent_mode_and_timescale_init() -> None:
    torch.manual_seed(0)
    shape = SeriesShape(96, 24, 3)
    model = build_model("s4", {"measure": "legt"}, shape).eval()
    x = torch.randn(2, 96, 3)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.forward_recurrent(x), rtol=1e-4, atol=1e-4)
    # How to Train Your HiPPO: 1/dt spans [1/dt_max, lookback] steps unless set.
    log_dt = torch.cat([layer.log_dt for layer in model.layers])
    assert (log_dt >= math.log(1 / 96) - 1e-6).all() and (log_dt <= math.log(0.1) + 1e-6).all()
    explicit = build_model("s4", {"dt_min": 1e-3, "dt_max": 2e-3}, shape)
    assert (explicit.layers[0].log_dt.exp() <= 2e-3 + 1e-9).all()


def test_init_is_the_hippo_nplr_and_parameters_are_grouped() -> None:
    from seqcomp.compress.quant.groups import named_groups

    model = build_model("s4", {"d_state": 16, "ssm_lr": 5e-4}, SeriesShape(32, 8, 2))
    layer = model.layers[0]
    form = hippo.nplr("legs", 16)
    torch.testing.assert_close(-layer.Lambda_log_re[1].double().exp(), form.lam.real)
    torch.testing.assert_close(layer.Lambda_im[1].double(), form.lam.imag)
    torch.testing.assert_close(torch.view_as_complex(layer.P[1].contiguous()), form.P.to(torch.complex64))
    assert all(not p.is_complex() for p in model.parameters())
    groups = {name.rsplit(".", 1)[-1]: g for name, _, _, _, g in named_groups(model) if name.startswith("layers.0.")}
    assert groups == {"log_dt": "recurrent", "Lambda_log_re": "recurrent", "Lambda_im": "recurrent",
                      "P": "recurrent", "B": "recurrent", "C": "ssm", "D": "ssm"}
    assert copy.deepcopy(model).layers[1].P._optim == {"lr": 5e-4, "weight_decay": 0.0}


def test_s4d_legs_approaches_the_s4_legs_kernel_as_n_grows() -> None:
    """S4D paper: the diagonal of LegS's normal part, with B halved, gives S4-LegS's kernel as
    N grows, in the sense of what it does to smooth inputs (its kernel oscillates where
    S4's does not, and the oscillations average out). Both read out the first HiPPO state
    (u's current value); measured relative output gaps 0.076, 0.024, 0.0031 at N = 16, 32, 64."""
    length, dt = 1000, 5e-3
    t = torch.arange(length) * dt
    u = torch.exp(-((t - 1.0) / 0.3) ** 2)[None, :, None]  # (1, L, 1): a smooth bump
    gaps = []
    for n in (16, 32, 64):
        s4 = S4Layer(1, d_state=n, disc="zoh", dt_min=dt, dt_max=dt)
        s4d = S4DLayer(1, d_state=n, init="legs", dt_min=dt, dt_max=dt)
        form = hippo.nplr("legs", n)
        with torch.no_grad():
            s4.D.zero_(), s4d.D.zero_()
            s4.log_dt.fill_(math.log(dt)), s4d.log_dt.fill_(math.log(dt))
            read = form.V[0].conj()  # C = e_0^T [V, conj V]: the first state in the NPLR basis
            dA = s4.dense()[0]
            full = torch.cat([read, read.conj()])[None]
            c_tilde = full - (full[:, None, :] @ torch.linalg.matrix_power(dA, length))[:, 0]
            torch.testing.assert_close(untilde(dA, c_tilde, length), full)
            s4.C.copy_(torch.view_as_real(c_tilde[:, : n // 2].to(torch.complex64)))
            s4d.C.copy_(torch.view_as_real((read * form.B / 2).to(torch.complex64))[None])
            y4, y4d = s4(u), s4d(u)
        gaps.append(((y4d - y4).norm() / y4.norm()).item())
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 0.05
