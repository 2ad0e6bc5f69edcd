"""Selective scan of Mamba in pure PyTorch: a sequential reference and a chunked parallel scan.

Both compute, per batch b, channel d and state n (A diagonal, negative real):
    h_t = exp(dt_t A) * h_{t-1} + dt_t * B_t * x_t,        y_t = <C_t, h_t> + D * x_t
with x, dt (B, L, E); A (E, N); B, C (B, L, N); D (E,). Inputs are expected in fp32.

``selective_scan`` picks the faster one by sequence length and device (thresholds measured,
see CHUNKED_MIN_LEN), or the ``mamba_ssm`` CUDA kernel when it is installed and the tensors
are on a GPU; mamba_ssm is never a dependency.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

# Shortest length at which the chunked scan is used. Measured with ``benchmark`` below:
# forward+backward of the scan alone, B=32, E=128 (d_model 64, expand 2), N=16, fp32, chunk 8,
# min over repeats, the two scans alternated in one process; sequential vs chunked:
#   CPU (this dev box: 2 shared cores, load 2-4 from other jobs, so +-3x run to run)
#     L=96:   145 vs   764 ms      L=256:  486 vs 2954 ms      L=1024: 1.06 vs 10.2 s
#     L=4096: sequential 10.2 s and 34.1 s in two runs; chunked not run at B=32 (~17 GB peak);
#             at B=8: 11.3 vs 18.6 s, and 2.7 vs 12.2 s in an earlier run
#   CUDA (one H100, torch 2.11, no mamba_ssm)
#     L=96: 26.7 vs 4.8 ms   L=256: 69.0 vs 6.4 ms   L=1024: 190 vs 20.1 ms   L=4096: 951 vs 81.8 ms
# On CPU the loop wins at every length: its per-step state (B, E, N) stays in cache, while each
# op of the chunked scan streams (B, L, E, N) tensors through memory (and log2(chunk) times
# more of them). On a GPU the loop is bound by kernel launches and the chunked scan wins at
# every length. Hence: never chunked on CPU, always on CUDA (and other accelerators).
CHUNKED_MIN_LEN = {"cpu": None, "cuda": 1}
# Chunk length (see scan_chunked for why small): on CPU, chunk 4/8/16/32 took
# 355/221/255/404 ms at L=96 and 3.1/2.8/4.0/4.1 s at L=256 in one run.
CHUNK = 8

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


def _shift(t: Tensor, k: int, dim: int) -> Tensor:
    """Shift ``t`` by k along ``dim``, filling the front with zeros."""
    return torch.cat([torch.zeros_like(t.narrow(dim, 0, k)), t.narrow(dim, 0, t.shape[dim] - k)], dim)


def _doubling_scan(log_a: Tensor, h: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """Inclusive scan of h_t = a_t h_{t-1} + h_t along ``dim`` in log2(size) steps (Hillis-Steele).

    After the step with offset k, h_t sums the inputs of the window (t-2k, t] and log_a_t is
    the log-decay over that window. Decays are multiplied as exp of window sums of log-decays
    (each <= 0), so nothing overflows however fast the state forgets, unlike the
    exp(cumsum) / exp(-cumsum) factorisation.
    """
    k, size = 1, h.shape[dim]
    while k < size:
        h = h + torch.exp(log_a) * _shift(h, k, dim)
        log_a = log_a + _shift(log_a, k, dim)
        k *= 2
    return log_a, h


def scan_chunked(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, chunk: int = CHUNK) -> Tensor:
    """Chunked parallel scan: no Python loop over time steps, only over log2 levels.

    The sequence is cut into chunks of ``chunk`` steps; a doubling scan runs inside all chunks
    at once, a second doubling scan over the chunk ends gives the state entering each chunk,
    and that carried state, decayed to each step, is added back. Work per full-size tensor
    grows with log2(chunk) while the chunk-level scan shrinks with 1/chunk, hence small chunks.
    """
    b, length, e = x.shape
    n = A.shape[1]
    nc = -(-length // chunk)
    pad = nc * chunk - length
    log_a = dt[..., None] * A  # (B, L, E, N), <= 0
    u = (dt * x)[..., None] * B[:, :, None, :]  # (B, L, E, N)
    if pad:  # padded steps have zero input; they come after the real ones and are cut off
        log_a = F.pad(log_a, (0, 0, 0, 0, 0, pad))
        u = F.pad(u, (0, 0, 0, 0, 0, pad))
        C = F.pad(C, (0, 0, 0, pad))
    log_a = log_a.view(b, nc, chunk, e, n)
    u = u.view(b, nc, chunk, e, n)
    log_a, h = _doubling_scan(log_a, u, dim=2)  # within chunks, from each chunk's start
    _, ends = _doubling_scan(log_a[:, :, -1], h[:, :, -1], dim=1)  # (B, nc, E, N): state after chunk c
    carry = _shift(ends, 1, dim=1)  # (B, nc, E, N): state entering chunk c
    h = h + torch.exp(log_a) * carry[:, :, None]  # (B, nc, chunk, E, N)
    y = torch.einsum("bctdn,bctn->bctd", h, C.view(b, nc, chunk, n)).reshape(b, nc * chunk, e)[:, :length]
    return y + D * x  # (B, L, E)


def selective_scan(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, mode: str = "auto") -> Tensor:
    """Dispatch: mode "auto" (kernel, else by length), "sequential" or "chunked"."""
    if mode == "auto" and x.is_cuda and _cuda_kernel() is not None:
        kernel = _cuda_kernel()
        y = kernel(  # the kernel wants (B, E, L) and (B, N, L)
            x.transpose(1, 2).contiguous(), dt.transpose(1, 2).contiguous(), A.contiguous(),
            B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous(), D.contiguous(),
        )
        return y.transpose(1, 2)
    if mode == "auto":
        threshold = CHUNKED_MIN_LEN.get(x.device.type, CHUNKED_MIN_LEN["cuda"])
        mode = "chunked" if threshold is not None and x.shape[1] >= threshold else "sequential"
    return scan_chunked(x, dt, A, B, C, D) if mode == "chunked" else scan_sequential(x, dt, A, B, C, D)


def benchmark(lengths: list[int], device: str = "cpu", batch: int = 32, d_inner: int = 128, d_state: int = 16,
              reps: int = 3, chunk: int = CHUNK, methods: tuple[str, ...] = ("sequential", "chunked"),
              ) -> dict[int, dict[str, float]]:
    """Seconds for forward+backward of each scan (min over ``reps``), to set CHUNKED_MIN_LEN."""
    import time

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    results = {}
    for length in lengths:
        g = torch.Generator().manual_seed(0)
        args = [
            torch.randn(batch, length, d_inner, generator=g),
            0.1 * torch.rand(batch, length, d_inner, generator=g),
            -torch.arange(1, d_state + 1, dtype=torch.float32).expand(d_inner, d_state).contiguous(),
            torch.randn(batch, length, d_state, generator=g),
            torch.randn(batch, length, d_state, generator=g),
            torch.ones(d_inner),
        ]
        args = [a.to(device).requires_grad_() for a in args]
        fns = {"sequential": scan_sequential, "chunked": lambda *a: scan_chunked(*a, chunk=chunk)}
        fns = {name: fns[name] for name in methods}
        times: dict[str, list[float]] = {name: [] for name in fns}
        for rep in range(reps + 1):  # the first round warms up and is not counted
            for name, fn in fns.items():
                sync()
                start = time.perf_counter()
                fn(*args).square().mean().backward()
                sync()
                if rep:
                    times[name].append(time.perf_counter() - start)
        results[length] = {name: min(ts) for name, ts in times.items()}
        print(length, {k: f"{v * 1e3:.1f} ms" for k, v in results[length].items()}, flush=True)
    return results


if __name__ == "__main__":
    import sys

    # python -m seqcomp.models.selective_scan LENGTHS [DEVICE [REPS [METHODS [BATCH]]]]
    args = sys.argv[1:] + [None] * 5
    benchmark(
        [int(v) for v in args[0].split(",")],
        args[1] or "cpu",
        batch=int(args[4] or 32),
        reps=int(args[2] or 3),
        methods=tuple((args[3] or "sequential,chunked").split(",")),
    )
