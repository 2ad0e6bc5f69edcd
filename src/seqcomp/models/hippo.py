"""HiPPO matrices: the state matrices S4 starts from, and their normal plus low-rank form.

Papers: "HiPPO: Recurrent Memory with Optimal Polynomial Projections" (Gu, Dao et al., NeurIPS
2020) and "How to Train Your HiPPO" (Gu, Johnson et al., ICLR 2023). Each measure gives an SSM
x' = A x + B u whose state x(t) holds the coefficients of the input's history projected onto
an orthonormal basis (``basis`` evaluates it, so ``x(t) @ basis(...)`` reconstructs the past):

- ``legs``: Legendre polynomials over the whole history [0, t], stretched as t grows (scaled
  measure; as an S4 time-invariant SSM, Legendre polynomials in exponentially warped time);
- ``legt``: Legendre polynomials over a sliding window [t - 1, t] (translated measure);
- ``fout``: the Fourier basis (1, sqrt2 cos 2 pi k s, sqrt2 sin 2 pi k s) over [t - 1, t].

For LegT and FouT the window has length 1 in the SSM's time, i.e. 1/dt steps once discretised
(state-spaces/s4 halves both matrices, a window of 2/dt steps). A and B are float64 in the
sign convention of S4 (stable A, x' = A x + B u). LegS is the time-invariant form: the
HiPPO-LegS memory of the 2020 paper is x' = (A x + B u) / t.

Every HiPPO A is normal plus low rank: A = S - P P^T with S normal (-1/2 I + skew for LegS,
skew for LegT/FouT), so A = V diag(lam) V^* - P P^T with V unitary: ``nplr`` does the
eigendecomposition once in float64 and keeps one of each conjugate pair (S is real).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from seqcomp.registry import check

MEASURES = ("legs", "legt", "fout")
_F64 = torch.float64


def _check(measure: str, n: int) -> None:
    check(measure in MEASURES, "measure", f"unknown value {measure!r}; valid: {', '.join(MEASURES)}")
    check(isinstance(n, int) and n >= 2 and n % 2 == 0, "d_state", f"must be an even integer >= 2, got {n!r}")


def _fourier_pairs(n: int) -> tuple[Tensor, Tensor, Tensor]:
    """FouT layout: state 0 the constant, (2k - 1, 2k) the cos/sin pair of frequency k, and a
    last sine of frequency N/2 without its cosine: zero at the ends, so u never drives it (as
    state-spaces/s4's unused state). An unpaired cosine instead would couple with the constant
    into a mode that never decays. Returns (cos rows, sin rows, their frequencies)."""
    k = torch.arange(1, n // 2, dtype=torch.long)
    return 2 * k - 1, 2 * k, k.to(_F64)


def transition(measure: str, n: int) -> tuple[Tensor, Tensor]:
    """The HiPPO (A (N, N), B (N,)) of ``measure`` in float64."""
    _check(measure, n)
    q = torch.arange(n, dtype=_F64)
    r = (2 * q + 1).sqrt()  # (N,)
    row, col = q[:, None], q[None, :]
    if measure == "legs":
        A = -torch.where(row > col, r[:, None] * r[None, :], torch.diag(q + 1))
        return A, r.clone()
    if measure == "legt":
        sign = torch.where(row >= col, torch.ones(()), (-1.0) ** (row - col).abs())
        return -r[:, None] * sign * r[None, :], r.clone()
    e = _fourier_end(n)  # fout
    cos, sin, k = _fourier_pairs(n)
    J = torch.zeros(n, n, dtype=_F64)
    J[cos, sin] = 2 * torch.pi * k
    J[sin, cos] = -2 * torch.pi * k
    # The truncated Fourier series at the window's ends converges to the mean of u(t) and
    # u(t - 1), so the forgotten value is estimated as u(t - 1) ~ 2 e.x - u(t).
    return J - 2 * e[:, None] * e[None, :], 2 * e


def _fourier_end(n: int) -> Tensor:
    """The FouT basis at the window's ends (equal there: the basis is periodic)."""
    e = torch.zeros(n, dtype=_F64)
    e[0] = 1.0
    e[1 : n - 1 : 2] = 2**0.5  # the cosines; the sines and the last, unpaired sine are 0 there
    return e


def low_rank(measure: str, n: int) -> Tensor:
    """P (N, r) with A + P P^T normal: r = 1 for LegS and FouT, 2 for LegT."""
    _check(measure, n)
    r = (2 * torch.arange(n, dtype=_F64) + 1).sqrt()
    if measure == "legs":
        return (r / 2**0.5)[:, None]
    if measure == "legt":  # A's symmetric part is -(r r^T) on entries with n - k even: two blocks
        even = (torch.arange(n) % 2 == 0).to(_F64)
        return torch.stack([r * even, r * (1 - even)], dim=1)
    return 2**0.5 * _fourier_end(n)[:, None]


@dataclass(frozen=True)
class NPLR:
    """A = V diag(lam) V^* - P P^T over conjugate pairs: the full V is [V, conj V].

    lam (N/2,), P (N/2, r) = V^* P_real, B (N/2,) = V^* B_real, V (N, N/2); complex128."""

    lam: Tensor
    P: Tensor
    B: Tensor
    V: Tensor


def nplr(measure: str, n: int, zero_tol: float = 1e-9) -> NPLR:
    """The normal plus low-rank form of ``transition(measure, n)``, in float64."""
    A, B = transition(measure, n)
    P = low_rank(measure, n)
    S = A + P @ P.T  # (N, N): constant diagonal + skew
    re = torch.diagonal(S).mean()
    check(torch.allclose(S + S.T, 2 * re * torch.eye(n, dtype=_F64), atol=1e-9), "measure",
          f"{measure}: A + P P^T is not identity + skew")
    # S - re I is real skew: -i (S - re I) is Hermitian, so eigh gives a unitary V.
    w, V = torch.linalg.eigh(-1j * (S - re * torch.eye(n, dtype=_F64)).to(torch.complex128))
    pos = w > zero_tol
    zero = w.abs() <= zero_tol
    n_zero = int(zero.sum())
    check(n_zero % 2 == 0 and int(pos.sum()) * 2 + n_zero == n, "measure",
          f"{measure}: eigenvalues do not pair up (N={n})")
    # The kernel of a real skew matrix is a real subspace: pair an orthonormal real basis
    # u_1..u_k of it into (u_1 + i u_2) / sqrt2, ..., whose conjugates complete it.
    null = torch.cat([V[:, zero].real, V[:, zero].imag], dim=1)
    u = torch.linalg.svd(null, full_matrices=False).U[:, :n_zero]  # (N, k) real orthonormal
    v_zero = (u[:, 0::2] + 1j * u[:, 1::2]) / 2**0.5
    V_half = torch.cat([v_zero, V[:, pos]], dim=1)  # (N, N/2)
    lam = torch.cat([torch.zeros(n_zero // 2, dtype=_F64), w[pos]]) * 1j + re
    Vh = V_half.conj().T
    return NPLR(lam=lam, P=Vh @ P.to(torch.complex128), B=Vh @ B.to(torch.complex128), V=V_half)


def legendre(n: int, x: Tensor) -> Tensor:
    """Legendre polynomials P_0..P_{n-1} at x: (n, *x.shape), by the three-term recurrence."""
    out = [torch.ones_like(x), x]
    for k in range(1, n - 1):
        out.append(((2 * k + 1) * x * out[k] - k * out[k - 1]) / (k + 1))
    return torch.stack(out[:n])


def basis(measure: str, n: int, s: Tensor) -> Tensor:
    """The measure's basis (N, len(s)) at relative positions s in [0, 1] of the remembered
    history (0 its start, 1 now): the state x reconstructs the input there as x @ basis."""
    _check(measure, n)
    s = s.to(_F64)
    if measure in ("legs", "legt"):
        return (2 * torch.arange(n, dtype=_F64) + 1).sqrt()[:, None] * legendre(n, 2 * s - 1)
    cos, sin, k = _fourier_pairs(n)
    g = torch.zeros(n, s.numel(), dtype=_F64)
    g[0] = 1.0
    g[cos] = 2**0.5 * torch.cos(2 * torch.pi * k[:, None] * s)
    g[sin] = 2**0.5 * torch.sin(2 * torch.pi * k[:, None] * s)
    g[n - 1] = 2**0.5 * torch.sin(torch.pi * n * s)
    return g
