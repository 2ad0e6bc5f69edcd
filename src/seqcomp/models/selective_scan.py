"""Selective scan of Mamba in pure PyTorch: a sequential reference and a chunked parallel scan.

Both compute, per batch b, channel d and state n (A diagonal, negative real):
    h_t = exp(dt_t A) * h_{t-1} + dt_t * B_t * x_t,        y_t = <C_t, h_t> + D * x_t
with x, dt (B, L, E); A (E, N); B, C (B, L, N); D (E,). Inputs are expected in fp32.

``selective_scan`` picks the faster one by device and state size (measured, see
CPU_CHUNKED_MAX_STATE), or the ``mamba_ssm`` CUDA kernel when it is installed and the tensors
are on a GPU; mamba_ssm is never a dependency.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

# Which scan ``auto`` runs. On a GPU the loop is bound by kernel launches (one H100, with the
# earlier doubling-scan version: L=96 26.7 vs 4.8 ms, L=4096 951 vs 81.8 ms): always chunked.
# On CPU the loop costs ~20 small ops per step, overhead-bound while the per-step state B*E*N
# is small; the chunked scan ~2 sqrt(L) small ops plus ~30 passes over (B, L, E, N) tensors,
# bandwidth-bound. So the state size decides, not the length. Forward + backward of the scan
# alone, E=64, N=16, one thread, sequential / chunked at L = 16, 64, 256, 1024, two runs
# (bench/seq_scaling.py, crossover part; docs/benchmarks.md; this shared box varies ~30%):
#   B*E*N = 1024:  2.0-2.0, 3.8-5.7, 7.0-7.5, 6.4-7.3x     8192:  1.4-1.8, 1.5-1.8, 1.6-1.7, 1.0-1.2x
#   16384:         1.2-1.2, 1.1-1.4, 0.89-1.3, 0.90-1.04x  32768: 1.2-1.2, 0.78-1.1, 0.68-0.94, 0.79-1.1x
#   65536:         1.1-1.2, 0.78-0.82, 0.67-0.75, 0.69-0.85x
CPU_CHUNKED_MAX_STATE = 16384  # largest B*E*N (fp32 elements per step) for which CPU auto picks chunked

_KERNEL: Callable | None | bool = False  # False: not looked up yet; None: not installed


def _cuda_kernel() -> Callable | None:
    global _KERNEL
    if _KERNEL is False:
        try:
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
        except ImportError:
            selective_scan_fn = None
        _KERNEL = selective_scan_fn
    return _KERNEL


def scan_sequential(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor) -> Tensor:
    """Reference: a Python loop over time steps."""
    b, length, e = x.shape
    # Per-step slices via unbind (not x[:, t]): backward then builds each input gradient once,
    # instead of one full-size zero tensor per step (quadratic in L). The decay and input
    # terms are formed per step, so no (B, L, E, N) tensor is built before the loop.
    dts = dt[..., None].unbind(1)  # L x (B, E, 1)
    us = (dt * x)[..., None].unbind(1)  # L x (B, E, 1)
    Bs = B[:, :, None, :].unbind(1)  # L x (B, 1, N)
    h = x.new_zeros(b, e, A.shape[1])  # (B, E, N)
    hs = []
    for t in range(length):
        h = torch.addcmul(us[t] * Bs[t], torch.exp(dts[t] * A), h)  # (B, E, N)
        hs.append(h)
    y = torch.einsum("blen,bln->ble", torch.stack(hs, dim=1), C)  # (B, L, E)
    return y + D * x


def chunk_length(length: int) -> int:
    """Default chunk: the power of two nearest sqrt(length), so the loop over offsets inside a
    chunk and the loop over chunks are about as long (~2 sqrt(L) Python steps in all)."""
    return max(4, 2 ** round(math.log2(length) / 2)) if length > 1 else 4


def _chunked(t: Tensor, chunk: int) -> Tensor:
    """(B, L, ...) -> (B, nc, chunk, ...), zero-padded at the end to nc * chunk steps."""
    pad = -t.shape[1] % chunk
    t = F.pad(t, (0,) * (2 * (t.dim() - 2)) + (0, pad)) if pad else t.contiguous()  # the mixer passes views
    return t.view(t.shape[0], -1, chunk, *t.shape[2:])


def _chunk_ends(a: Tensor, u: Tensor, reverse: bool) -> Tensor:
    """State at each chunk's last step (reverse: first step) from a zero state, (B, nc, E, N).

    Forward h_t = a_t h_{t-1} + u_t; reverse g_t = a_{t+1} g_{t+1} + u_t (the adjoint)."""
    size = u.shape[2]
    if reverse:
        h = u[:, :, -1]
        for t in range(size - 2, -1, -1):
            h = torch.addcmul(u[:, :, t], a[:, :, t + 1], h)
    else:
        h = u[:, :, 0]
        for t in range(1, size):
            h = torch.addcmul(u[:, :, t], a[:, :, t], h)
    return h


def _carries(ends: Tensor, chunk_decay: Tensor, first_decay: Tensor | None) -> Tensor:
    """State entering each chunk, (B, nc, E, N): a loop over the nc chunks.

    Forward: carry_{c+1} = ends_c + (prod of chunk c's decays) carry_c. Reverse (``first_decay``
    = a at each chunk's first step): what flows into chunk c's last step from chunk c+1,
    carry_{c-1} = a_{c,0} (ends_c + prod_{k>0} a_{c,k} carry_c) = a_{c,0} ends_c + prod_k a_{c,k} carry_c.
    """
    n_chunks = ends.shape[1]
    state = torch.zeros_like(ends[:, 0])
    out: list[Tensor] = [state] * n_chunks
    for c in range(n_chunks - 1, -1, -1) if first_decay is not None else range(n_chunks):
        out[c] = state
        entering = ends[:, c] if first_decay is None else first_decay[:, c] * ends[:, c]
        state = torch.addcmul(entering, chunk_decay[:, c], state)
    return torch.stack(out, 1)


def _scan_from_(a: Tensor, u: Tensor, carry: Tensor, reverse: bool) -> Tensor:
    """In place, u <- the states of every chunk started from ``carry`` (one loop over offsets)."""
    size = u.shape[2]
    if reverse:
        u[:, :, -1].add_(carry)
        for t in range(size - 2, -1, -1):
            u[:, :, t].addcmul_(a[:, :, t + 1], u[:, :, t + 1])
    else:
        u[:, :, 0].addcmul_(a[:, :, 0], carry)
        for t in range(1, size):
            u[:, :, t].addcmul_(a[:, :, t], u[:, :, t - 1])
    return u


def _two_level_scan_(a: Tensor, u: Tensor, chunk_decay: Tensor, reverse: bool = False) -> Tensor:
    """In place, u (B, nc, chunk, E, N) <- the scan of the whole sequence with per-step decays a
    and per-chunk decays ``chunk_decay`` (B, nc, E, N), the product of a over each chunk."""
    carry = _carries(_chunk_ends(a, u, reverse), chunk_decay, a[:, :, 0] if reverse else None)
    return _scan_from_(a, u, carry, reverse)


def _contract(h: Tensor, w: Tensor) -> Tensor:
    """sum_n h[..., e, n] w[..., n] -> (..., E): a batched matrix-vector product (fastest on CPU)."""
    return (h @ w[..., None]).squeeze(-1)


class _ChunkedScan(torch.autograd.Function):
    """The selective scan with a hand-written backward: the adjoint of a linear recurrence is
    the same recurrence run backwards, so both directions use the same two-level scan, and
    autograd records 2 nodes instead of several per time step.

    Gradients, with g_t = dLoss/dh_t = gy_t C_t + a_{t+1} g_{t+1}:
    du = g; d(dt A)_t = g_t a_t h_{t-1}; dB_t = sum_e g_t (dt x)_t; dC_t = sum_e gy_t h_t.
    """

    @staticmethod
    def forward(ctx, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor,  # noqa: ANN001
                chunk: int) -> Tensor:
        length = x.shape[1]
        dtc, Bc = _chunked(dt, chunk), _chunked(B, chunk)  # (B, nc, T, E), (B, nc, T, N)
        a = torch.exp(dtc[..., None] * A)  # (B, nc, T, E, N) per-step decay, in (0, 1]
        v = dtc * _chunked(x, chunk)  # (B, nc, T, E)
        chunk_decay = torch.exp(dtc.sum(2)[..., None] * A)  # (B, nc, E, N): prod_t a_t, from small tensors
        h = _two_level_scan_(a, v[..., None] * Bc[..., None, :], chunk_decay)  # (B, nc, T, E, N)
        ctx.save_for_backward(x, dt, A, B, C, D, a, h, chunk_decay)
        ctx.chunk = chunk
        y = _contract(h, _chunked(C, chunk)).flatten(1, 2)[:, :length]  # (B, L, E)
        return y + D * x

    @staticmethod
    def backward(ctx, gy: Tensor) -> tuple[Tensor | None, ...]:  # noqa: ANN001
        x, dt, A, B, C, D, a, h, chunk_decay = ctx.saved_tensors
        chunk, length = ctx.chunk, x.shape[1]
        dtc, Bc, gyc = _chunked(dt, chunk), _chunked(B, chunk), _chunked(gy, chunk)
        v = dtc * _chunked(x, chunk)  # (B, nc, T, E)
        gh = gyc[..., None] * _chunked(C, chunk)[..., None, :]  # (B, nc, T, E, N): direct dL/dh_t
        g = _two_level_scan_(a, gh, chunk_decay, reverse=True)  # total dL/dh_t, in place
        gv = _contract(g, Bc)  # (B, nc, T, E): d(dt x)
        gB = (v[..., None, :] @ g).squeeze(-2)  # (B, nc, T, N)
        gC = (gyc[..., None, :] @ h).squeeze(-2)  # (B, nc, T, N)
        # d(dt A)_t = g_t a_t h_{t-1}, in place in g (B, nc, T, E, N); h_{-1} = 0
        flat_g, flat_h = g.flatten(1, 2), h.flatten(1, 2)
        flat_g[:, 1:].mul_(flat_h[:, :-1])
        flat_g[:, 0] = 0.0
        g_log_a = g.mul_(a)
        gdt = (g_log_a * A).sum(-1) + gv * _chunked(x, chunk)  # (B, nc, T, E)
        gA = (g_log_a * dtc[..., None]).sum((0, 1, 2))  # (E, N)

        def unchunk(t: Tensor) -> Tensor:
            return t.flatten(1, 2)[:, :length]

        gv, gdt = unchunk(gv), unchunk(gdt)
        return gv * dt + gy * D, gdt, gA, unchunk(gB), unchunk(gC), (gy * x).sum((0, 1)), None


def scan_chunked(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, chunk: int | None = None) -> Tensor:
    """Two-level chunked scan: no Python loop over time steps, only over offsets and chunks.

    The sequence is cut into nc chunks of ``chunk`` steps (default ``chunk_length``). One loop
    over the offsets inside a chunk runs all chunks at once (each step is an op on a tensor
    nc times larger than the sequential loop's), a loop over the nc chunks carries the state
    from chunk to chunk, and a second loop over offsets replays each chunk from its carried
    state. About 2 chunk + nc Python steps instead of L (136 instead of 4096 at L = 4096);
    decays are products of exp(dt A) <= 1, so nothing overflows however fast the state forgets.
    """
    return _ChunkedScan.apply(x, dt, A, B, C, D, chunk or chunk_length(x.shape[1]))


def chunked_is_default(x: Tensor, d_state: int) -> bool:
    """Whether ``auto`` runs the chunked scan for input x (B, L, E) and state size N (without
    the CUDA kernel): always off CPU; on CPU while the per-step state B*E*N is small."""
    return x.device.type != "cpu" or x.shape[0] * x.shape[2] * d_state <= CPU_CHUNKED_MAX_STATE


def selective_scan(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, mode: str = "auto") -> Tensor:
    """Dispatch: mode "auto" (CUDA kernel if installed, else ``chunked_is_default``), "sequential" or "chunked"."""
    if mode == "auto" and x.is_cuda and _cuda_kernel() is not None:
        kernel = _cuda_kernel()
        y = kernel(  # the kernel wants (B, E, L) and (B, N, L)
            x.transpose(1, 2).contiguous(), dt.transpose(1, 2).contiguous(), A.contiguous(),
            B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous(), D.contiguous(),
        )
        return y.transpose(1, 2)
    if mode == "auto":
        mode = "chunked" if chunked_is_default(x, A.shape[1]) else "sequential"
    return scan_chunked(x, dt, A, B, C, D) if mode == "chunked" else scan_sequential(x, dt, A, B, C, D)
