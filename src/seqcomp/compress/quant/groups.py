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
- ``experts``, ``router``, ``shared_expert``: the parts of a sparse mixture-of-experts layer,
  which the model declares itself (no name guessing): a module that has a
  ``compression_groups()`` method (:data:`GROUP_HOOK`; seqcomp.models.moe_transformer.SparseMoE)
  returns ``{group: [modules or parameters]}``, ``experts`` listing the routed experts in expert
  order. Every parameter of at least 2 dimensions so declared gets that group (1-D ones, biases and
  norms, stay ``other`` as in every model; recurrent ones stay ``recurrent``). Routed experts hold
  most of an MoE's weights but each sees only its share of the tokens; the router decides which
  expert a token goes to, so a rounding that flips a top-k choice swaps a whole expert's output;
  the shared expert sees every token. Hence a pass can give each its own bits (``group_bits``).
  A model without the hook has none of these groups: its groups are what they were before them.
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

EXPERTS, ROUTER, SHARED_EXPERT = "experts", "router", "shared_expert"
MOE_GROUPS = (EXPERTS, ROUTER, SHARED_EXPERT)  # declared by the model (GROUP_HOOK), never inferred
BASE_GROUPS = ("recurrent", "ssm", "linear")  # found from the module types and the recurrent tag
GROUPS = (*BASE_GROUPS, *MOE_GROUPS)  # the groups every pass's config may select
OTHER = "other"
GRID_GROUPS = (*GROUPS, OTHER)  # the uniform-grid passes may select ``other`` too
# Everything quantizable except the recurrent dynamics and the router. The experts and the shared
# expert are in: they are most of an MoE's weights, and were ``linear`` (so coded by default)
# before they had groups of their own, so a pass without ``groups:`` codes an MoE as it did. The
# router stays out, as it did (then ``other``): a flipped top-k choice swaps a whole expert.
DEFAULT_GROUPS = ("ssm", "linear", EXPERTS, SHARED_EXPERT)
GROUP_HOOK = "compression_groups"  # a module's method: {group in MOE_GROUPS: [modules or parameters]}


def declared_groups(model: nn.Module) -> dict[int, str]:
    """{id(parameter): group} for the parameters (of >= 2 dimensions) that modules of ``model``
    declare through :data:`GROUP_HOOK`; empty for a model without experts."""
    declared: dict[int, str] = {}
    for module in model.modules():
        hook = getattr(module, GROUP_HOOK, None)
        if hook is None:
            continue
        for group, members in hook().items():
            if group not in MOE_GROUPS:
                raise ValueError(
                    f"{type(module).__name__}.{GROUP_HOOK}() declares group {group!r}, not one of {MOE_GROUPS}"
                )
            for member in members:
                params = member.parameters() if isinstance(member, nn.Module) else [member]
                declared.update((id(p), group) for p in params if p.dim() >= 2)
    return declared


def expert_layers(model: nn.Module) -> list[list[str]]:
    """The module names of the routed experts of ``model``: one list per module declaring
    ``experts`` (an MoE layer, in model order), in expert order; empty for a model without experts."""
    names = {id(m): name for name, m in model.named_modules()}
    return [
        [names[id(expert)] for expert in module.compression_groups()[EXPERTS]]
        for module in model.modules()
        if hasattr(module, GROUP_HOOK) and EXPERTS in module.compression_groups()
    ]


def param_group(module: nn.Module, pname: str, declared: dict[int, str] | None = None) -> str:
    """The group of parameter ``pname`` owned directly by ``module``; ``declared``: the model's
    :func:`declared_groups` (None: the module's parameter is not declared by any)."""
    param = module.get_parameter(pname)
    if is_recurrent(param):
        return "recurrent"
    if declared and id(param) in declared:
        return declared[id(param)]
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
    declared = declared_groups(model)
    for mod_name, module in param_modules(model):
        for pname, param in module.named_parameters(recurse=False):
            name = f"{mod_name}.{pname}" if mod_name else pname
            yield name, module, pname, param, param_group(module, pname, declared)


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
