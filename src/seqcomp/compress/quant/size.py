"""Exact byte counts of a stored form, and the fp32 size of the model it came from.

A stored form is a ``dict[str, Tensor]`` written with ``torch.save``. Each tensor is counted
by the bytes of its storage (what torch.save writes, so a view of a larger tensor is not
under-counted; storages shared by several keys count once). The zip container's own
overhead (file names, pickle, alignment: a few hundred bytes per tensor) is not counted.

Key conventions used by the passes, so that the breakdown needs no per-pass code:
  ``<param>.codes``   uint8 bit-packed integer codes        -> ``weights_bytes``
  ``<param>.scales``  quantization scales                    -> ``scales_bytes``
  ``<param>.zeros``   bit-packed zero points                 -> ``scales_bytes``
  ``<param>.scale_unit`` fp32 unit of double-quantized (fp8) scales -> ``scales_bytes``
  ``<param>.codebook`` vector-quantization codebook (fp16)   -> ``scales_bytes``
  ``<param>.centers`` per-mode grid centres of ssm_pole_sim (fp16) -> ``scales_bytes``
  ``<param>.bits``    uint8 bit-width of a weight whose bits differ from the pass's -> ``meta_bytes``
  a torch quantized tensor (qint8): 1 byte per element       -> ``weights_bytes``,
      plus its scale and zero point (8 + 8 bytes per tensor, or float64 + int64 arrays
      per channel: how torch stores them)                    -> ``scales_bytes``
  any other floating tensor (biases, norms, unquantized weights, SSM parameters), at its
      stored precision (fp32, or fp16 under a pass's ``keep_dtype``) -> ``fp32_bytes``
  integer / bool tensors (shapes and other metadata)         -> ``meta_bytes``
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

CODES_SUFFIX = ".codes"
SCALES_SUFFIX = ".scales"
ZEROS_SUFFIX = ".zeros"
SCALE_UNIT_SUFFIX = ".scale_unit"
CODEBOOK_SUFFIX = ".codebook"
CENTERS_SUFFIX = ".centers"
BITS_SUFFIX = ".bits"


def _qparams_bytes(tensor: torch.Tensor) -> int:
    """Bytes of a quantized tensor's scale(s) and zero point(s), as torch stores them."""
    if tensor.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        return 8 + 8  # one float64 scale, one int64 zero point
    scales, zero_points = tensor.q_per_channel_scales(), tensor.q_per_channel_zero_points()
    return scales.numel() * scales.element_size() + zero_points.numel() * zero_points.element_size()


def _category(key: str, tensor: torch.Tensor) -> str:
    if tensor.is_quantized or key.endswith(CODES_SUFFIX):
        return "weights_bytes"
    if key.endswith((SCALES_SUFFIX, ZEROS_SUFFIX, SCALE_UNIT_SUFFIX, CODEBOOK_SUFFIX, CENTERS_SUFFIX)):
        return "scales_bytes"
    if tensor.is_floating_point() or tensor.is_complex():
        return "fp32_bytes"
    return "meta_bytes"


def stored_size(stored: dict[str, torch.Tensor]) -> dict[str, int]:
    """Byte counts of a stored form: total ``bytes`` and its breakdown by role.

    ``bytes == weights_bytes + scales_bytes + fp32_bytes + meta_bytes``.
    """
    counts = dict.fromkeys(("weights_bytes", "scales_bytes", "fp32_bytes", "meta_bytes"), 0)
    for key, tensor, nbytes in _tensor_bytes(stored):
        counts[_category(key, tensor)] += nbytes
        if tensor.is_quantized:
            counts["scales_bytes"] += _qparams_bytes(tensor)
    return {"bytes": sum(counts.values()), **counts, "tensors": len(stored)}


def _tensor_bytes(stored: dict[str, torch.Tensor]) -> Iterator[tuple[str, torch.Tensor, int]]:
    """(key, tensor, bytes of its storage) for each stored tensor, a storage shared by several
    keys counted at its first key only (what torch.save writes once)."""
    seen: set[int] = set()
    for key, tensor in stored.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"stored[{key!r}] is a {type(tensor).__name__}, not a tensor")
        storage = tensor.untyped_storage()
        if storage.nbytes() and storage.data_ptr() in seen:
            continue
        seen.add(storage.data_ptr())
        yield key, tensor, storage.nbytes()


UNASSIGNED = "unassigned"  # stored tensors of no parameter: buffers, a torch module's packed params


def bytes_by_group(stored: dict[str, torch.Tensor], groups: dict[str, str]) -> dict[str, int]:
    """Stored bytes per parameter group (``groups``: state-dict key of a parameter -> its group,
    quant/groups.py), so a report shows which part of a model its size goes to.

    A stored key belongs to the parameter it is (``key``) or whose parts it holds
    (``key.codes``, ``key.scales``, ``key.shape``...); the others (buffers, metadata of no
    parameter) are ``unassigned``. A quantized tensor counts its scales and zero points too, as
    in :func:`stored_size`, so the groups sum to its ``bytes``.
    """
    out: dict[str, int] = {}
    for key, tensor, nbytes in _tensor_bytes(stored):
        owner = key if key in groups else key.rpartition(".")[0]
        group = groups.get(owner, UNASSIGNED)
        out[group] = out.get(group, 0) + nbytes + (_qparams_bytes(tensor) if tensor.is_quantized else 0)
    return out


def fp32_model_bytes(model: nn.Module) -> int:
    """Size of ``model`` stored as fp32: 4 bytes per floating-point parameter/buffer element
    (8 per complex one: fp32 real and imaginary parts).

    Use it on the original (uncompressed) model to report compression ratios; integer
    buffers (e.g. BatchNorm's step counter) are not counted.
    """
    tensors = list(model.parameters()) + list(model.buffers())
    return sum((8 if t.is_complex() else 4) * t.numel() for t in tensors if t.is_floating_point() or t.is_complex())
