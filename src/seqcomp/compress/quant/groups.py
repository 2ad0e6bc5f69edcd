"""Parameter groups: which part of a model a parameter is, so a config can quantize one part at a time.

SSM quantization studies (Q-S5, arXiv:2406.09477; Quamba, arXiv:2410.13229; S4D on the edge,
arXiv:2506.12480) find the recurrent dynamics (A and the step size dt) far more sensitive
than the projections around them, so the weight passes keep them fp32 unless a config asks.

- ``recurrent``: parameters the model tags ``_optim`` (see seqcomp.models), i.e. the SSM
  dynamics it trains apart: S4D's log_dt, A_log_re and A_im; Mamba's A_log, dt_bias, D.
- ``ssm``: the other parameters held directly by a (non-torch.nn) module that holds recurrent
  ones (S4D's output map C, stored as real/imaginary pairs (H, N/2, 2), and its skip term D).
- ``linear``: weight matrices of nn.Linear, nn.Conv1d, nn.LSTM (``weight_*``) and
  nn.MultiheadAttention (its raw ``*proj_weight``).
- ``other``: everything else (biases, norms, positional embeddings): kept unquantized unless
  a uniform-grid pass (rtn, gptq, qat) selects it. These are elementwise parameters: no input
  axis is summed over, so a 2-D one (TSMixer's (L, C) LayerNorm) has no rows worth a scale
  each, and the grid passes code it as one flattened row (one scale per tensor, or per
  ``group_size`` consecutive elements), as they code every 1-D tensor.

Complex parameters (``torch.is_complex``) are quantized by the passes as real/imaginary pairs
(``torch.view_as_real``): torch's observers silently keep only the real part.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn

from seqcomp.compress.quant.common import is_recurrent, param_modules
from seqcomp.registry import check

GROUPS = ("recurrent", "ssm", "linear")  # the groups every pass's config may select
OTHER = "other"
GRID_GROUPS = (*GROUPS, OTHER)  # the uniform-grid passes may select ``other`` too
DEFAULT_GROUPS = ("ssm", "linear")  # everything quantizable except the recurrent dynamics


def param_group(module: nn.Module, pname: str) -> str:
    """The group of parameter ``pname`` owned directly by ``module``."""
    param = module.get_parameter(pname)
    if is_recurrent(param):
        return "recurrent"
    if not _torch_layer(module) and any(is_recurrent(p) for p in module.parameters(recurse=False)):
        return "ssm"
    if param.dim() >= 2 and (
        (isinstance(module, (nn.Linear, nn.Conv1d)) and pname == "weight")
        or (isinstance(module, nn.LSTM) and pname.startswith("weight_"))
        or (isinstance(module, nn.MultiheadAttention) and pname.endswith("proj_weight"))
    ):
        return "linear"
    return OTHER


def _torch_layer(module: nn.Module) -> bool:
    """A torch.nn layer (Linear, LSTM, norm...): never an SSM kernel, even if a weight is tagged."""
    return type(module).__module__.startswith("torch.")


def named_groups(model: nn.Module) -> Iterator[tuple[str, nn.Module, str, nn.Parameter, str]]:
    """(full name, owning module, local name, parameter, group) for every parameter, in order."""
    for mod_name, module in param_modules(model):
        for pname, param in module.named_parameters(recurse=False):
            name = f"{mod_name}.{pname}" if mod_name else pname
            yield name, module, pname, param, param_group(module, pname)


def kept_reason(module: nn.Module, pname: str, group: str) -> str:
    """Why a parameter of ``group`` that a pass did not select stays fp32 (for reports)."""
    if group == "recurrent":
        return "SSM recurrent parameter kept in fp32"
    if group == OTHER:
        if module.get_parameter(pname).dim() < 2:
            return "1-D parameter kept in fp32"
        return f"not a Linear/Conv1d/LSTM/attention weight ({type(module).__name__}.{pname}); kept fp32"
    return f"group {group!r} not selected; kept fp32"


def check_groups(groups: object, allowed: tuple[str, ...] = GROUPS) -> None:
    """Config check for a ``groups`` option: a non-empty list drawn from ``allowed``."""
    check(
        isinstance(groups, (list, tuple))
        and bool(groups)
        and all(isinstance(g, str) for g in groups)
        and set(groups) <= set(allowed),
        "groups",
        f"must be a non-empty list drawn from {list(allowed)}, got {groups!r}",
    )
