"""Our S4 kernel against state-spaces/s4's on the same parameters (its DPLR kernel, naive Cauchy path).

The reference's standalone ``models/s4/s4.py`` builds an ``SSMKernelDPLR`` with its own
initialisation (HiPPO NPLR with B's imaginary part clipped, random C turned into C~ for the
length); its parameters are copied into a ``seqcomp.models.s4.S4Layer`` and both kernels are
scored against a dense float64 one: the layer's discretised (dA, dB), C = C~ (I - dA^L)^{-1},
and K_k = C dA^k dB one power at a time (independent of the Cauchy/Woodbury path).
Errors are max |difference| over the kernel's peak |K|. Needs einops, and the reference file
(not vendored here):

    git clone https://github.com/state-spaces/s4 /tmp/s4
    python bench/s4_reference_check.py --reference /tmp/s4/models/s4/s4.py --out bench/results/s4_reference_check.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
import types
from pathlib import Path

import torch

from seqcomp.models.s4 import S4Layer, untilde
from seqcomp.publish.bench import write_bench_result


def load_reference(path: Path) -> types.ModuleType:
    if importlib.util.find_spec("pytorch_lightning") is None:  # it only uses a logging decorator
        stub = types.ModuleType("pytorch_lightning.utilities")
        stub.rank_zero_only = lambda fn: fn
        sys.modules["pytorch_lightning"] = types.ModuleType("pytorch_lightning")
        sys.modules["pytorch_lightning.utilities"] = stub
    spec = importlib.util.spec_from_file_location("s4_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dense_kernel(layer: S4Layer, length: int) -> torch.Tensor:
    with torch.no_grad():
        dA, dB, C_tilde = layer.dense()  # complex128
        C = untilde(dA, C_tilde, length)
        out, x = [], dB
        for _ in range(length):
            out.append((C * x).sum(-1).real)
            x = (dA @ x[..., None])[..., 0]
    return torch.stack(out, dim=-1)  # (H, L)


def compare(ref: types.ModuleType, init: str, length: int, h: int, n: int) -> dict:
    theirs = ref.SSMKernelDPLR(d_model=h, l_max=length, d_state=n, init=init, rank=1, verbose=False)
    with torch.no_grad():
        k_ref = theirs(L=length)[0][0].double()  # (H, L); the first call sets C~ for L
        dt, A, B, C, P, _ = theirs._get_params()
        ours = S4Layer(h, n, "fout" if init == "fourier" else init)
        ours.log_dt.copy_(dt.reshape(h).log())
        ours.Lambda_log_re.copy_((-A.real).log())
        ours.Lambda_im.copy_(A.imag)  # the reference keeps the other half of each pair: same SSM
        ours.P.copy_(torch.view_as_real(P[0][..., None].contiguous()))
        ours.B.copy_(torch.view_as_real(B.reshape(h, -1).contiguous()))
        ours.C.copy_(torch.view_as_real(C[0].contiguous()))
        k_ours = ours.kernel(length).double()
    dense = dense_kernel(ours, length)
    peak = dense.abs().max()
    return {"init": init, "L": length, "H": h, "N": n,
            "ours_vs_dense": float((k_ours - dense).abs().max() / peak),
            "reference_vs_dense": float((k_ref - dense).abs().max() / peak),
            "ours_vs_reference": float((k_ours - k_ref).abs().max() / peak)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True, help="state-spaces/s4's models/s4/s4.py")
    parser.add_argument("--lengths", default="64,256,1024")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    started = time.perf_counter()
    torch.manual_seed(0)
    ref = load_reference(args.reference)
    rows = [compare(ref, init, length, 8, 64) for init in ("legs", "fourier")
            for length in (int(v) for v in args.lengths.split(","))]
    for row in rows:
        print(json.dumps(row))
    write_bench_result(args.out, {"torch": torch.__version__, "rows": rows}, started)


if __name__ == "__main__":
    main()
