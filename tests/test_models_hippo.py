"""HiPPO matrices: the NPLR form is exact, and each measure remembers what its paper says."""

from __future__ import annotations

import pytest
import torch

from seqcomp.models import hippo

F64 = torch.float64


def signal(t: torch.Tensor) -> torch.Tensor:
    """Smooth, and not periodic over a unit window (so FouT's ends are a real test)."""
    return torch.sin(2 * torch.pi * 1.7 * t) + 0.5 * torch.cos(2 * torch.pi * 3.2 * t + 0.3)


def run_lti(measure: str, n: int, length: float, h: float, u=signal) -> torch.Tensor:
    """State after running x' = A x + B u(t) over [0, length], exact ZOH steps of size h."""
    A, B = hippo.transition(measure, n)
    M = torch.zeros(n + 1, n + 1, dtype=F64)
    M[:n, :n], M[:n, n] = A, B
    E = torch.linalg.matrix_exp(h * M)
    dA, dB = E[:n, :n], E[:n, n]
    x = torch.zeros(n, dtype=F64)
    for k in range(round(length / h)):
        x = dA @ x + dB * u(torch.tensor((k + 0.5) * h, dtype=F64))
    return x


def run_legs(n: int, h: float) -> torch.Tensor:
    """State of the HiPPO-LegS memory x' = (A x + B u) / t over [0, 1] (bilinear, midpoints)."""
    A, B = hippo.transition("legs", n)
    eye = torch.eye(n, dtype=F64)
    x = torch.zeros(n, dtype=F64)
    x[0] = signal(torch.tensor(0.0, dtype=F64))  # the projection of a constant history
    for k in range(round(1 / h)):
        t = (k + 0.5) * h
        a = h / (2 * t)
        x = torch.linalg.solve(eye - a * A, (eye + a * A) @ x + (h / t) * B * signal(torch.tensor(t, dtype=F64)))
    return x


@pytest.mark.parametrize("measure", hippo.MEASURES)
@pytest.mark.parametrize("n", [2, 8, 64])
def test_nplr_reconstructs_the_transition(measure: str, n: int) -> None:
    A, _ = hippo.transition(measure, n)
    form = hippo.nplr(measure, n)
    V = torch.cat([form.V, form.V.conj()], dim=1)  # (N, N): unitary
    torch.testing.assert_close(V.conj().T @ V, torch.eye(n, dtype=torch.complex128), atol=1e-12, rtol=0)
    lam = torch.cat([form.lam, form.lam.conj()])
    P = hippo.low_rank(measure, n).to(V.dtype)
    torch.testing.assert_close(V @ torch.diag(lam) @ V.conj().T - P @ P.T, A.to(V.dtype), atol=1e-10, rtol=0)
    torch.testing.assert_close(form.P, form.V.conj().T @ P)
    assert (form.lam.real <= 1e-12).all() and form.lam.shape == (n // 2,)
    assert (torch.linalg.eigvals(A).real < 1e-9).all()  # every HiPPO A is (marginally) stable


def test_legs_projection_error_falls_with_n() -> None:
    """The HiPPO paper's function approximation: the LegS state at t = 1 reconstructs u on
    [0, 1]. Measured (h = 1e-3): max error 0.98 (N=8), 4.9e-3 (N=16), 8.3e-5 (N=32 and 64:
    the floor is the time step's, not the basis's)."""
    s = torch.linspace(0, 1, 201, dtype=F64)
    errors = {n: (run_legs(n, 1e-3) @ hippo.basis("legs", n, s) - signal(s)).abs().max().item() for n in (8, 16, 32)}
    assert errors[8] > errors[16] > errors[32]
    assert errors[32] < 1e-3 < 0.1 < errors[8]


@pytest.mark.parametrize("measure,n,tol", [("legt", 32, 1e-3), ("fout", 64, 0.08)])
def test_translated_measures_keep_a_sliding_window(measure: str, n: int, tol: float) -> None:
    """After 3 time units the LegT/FouT state reconstructs u on the last unit. Measured max
    error inside the window's ends: LegT 2.6e-3 (N=16), 2.1e-5 (N=32); FouT 0.19, 0.092, 0.045
    (N=16, 32, 64: the window is not periodic, so its Fourier series converges like 1/N)."""
    s = torch.linspace(0.1, 0.9, 161, dtype=F64)
    x = run_lti(measure, n, 3.0, 1e-3)
    error = (x @ hippo.basis(measure, n, s) - signal(2.0 + s)).abs().max().item()
    assert error < tol


def test_legs_keeps_an_old_pulse_translated_measures_drop_it() -> None:
    """A smooth pulse on [0, 0.5], then silence: once the pulse has left the unit window
    (t = 2), LegT and FouT hold almost nothing of it (measured 2e-7 and 0.012 of the state's
    norm at t = 0.5), while LegS, which remembers all history warped, still holds 0.47."""
    def pulse(t: torch.Tensor) -> torch.Tensor:
        return torch.where(t < 0.5, torch.sin(2 * torch.pi * t) ** 2, torch.zeros((), dtype=F64))

    kept = {m: (run_lti(m, 64, 2.0, 1e-3, pulse).norm() / run_lti(m, 64, 0.5, 1e-3, pulse).norm()).item()
            for m in hippo.MEASURES}
    assert kept["legt"] < 1e-3 and kept["fout"] < 0.05 and kept["legs"] > 0.3


def test_bad_measure_or_size_names_the_key() -> None:
    with pytest.raises(ValueError, match="measure.*legs, legt, fout"):
        hippo.transition("lagt", 8)
    with pytest.raises(ValueError, match="d_state"):
        hippo.nplr("legs", 7)
