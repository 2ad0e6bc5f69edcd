"""VPTQ-style vector post-training quantization (Liu et al., EMNLP 2024, arXiv:2409.17066).

Each input column of a weight W (R, K) is cut into R/d vectors of ``dim`` consecutive output
weights (rows padded with zeros to a multiple of d when ``pad``; the padding is coded and
dropped on decoding), so that one column is quantized at a time and GPTQ's error feedback
applies as it does to scalars (quant/vector.py's ``vptq_quantize``):

- the codebook of ``codebook_size`` vectors is a k-means fit of the layer's vectors, each
  weighted by H[j, j] of its column, H = 2 X^T X / n the Hessian of the layer's inputs on the
  calibration windows (quant/gptq.py's, layers coded in forward order, each on the outputs of
  the already coded layers upstream); an optional ``residual_codebook_size`` codebook is fitted
  the same way on what the first one leaves, and each vector is the sum of one entry of each;
- columns are rounded to their nearest codebook vectors block by block, each column's error
  spread onto the columns not yet rounded through the Cholesky factor of H^-1 (``percdamp``,
  ``block_size`` as in gptq_weight_sim);
- with ``refit`` (default) the codebooks are then re-solved by least squares on the same
  objective tr((W - Q) H (W - Q)^T) for the codes chosen (GPTVQ's codebook update,
  arXiv:2402.15319): error feedback chose the codes for weights it had moved, so the k-means
  centroids are no longer the best values for them (on the calibration windows this lowered
  the output error of a test layer by a quarter);
- the ``outlier_fraction`` of the columns with the largest H[j, j] * ||W[:, j]||^2 are kept
  apart in fp16; they are visited last, so they also absorb the error of the coded columns.

Only nn.Linear weights have an input hook (quant/gptq.py's ``gptq_able``); the other selected
weights (LSTM, Conv1d, attention raw projections, SSM matrices such as S4D's C as its real
view) get the same column vectors with every vector weighing the same and no error feedback
(plain k-means), as they do when no calibration windows are given. Their report rows say so.

Stored per weight: ``.codes`` (bit-packed indices, ceil(log2 k) bits each) and ``.codebook``
(k, d) fp16, plus ``.residual.codes`` / ``.residual.codebook`` with a residual stage and
``.outlier_columns`` (int32) / ``.outliers`` (R, n) fp16 when some columns are kept apart.
size.py files codes under weights, codebooks under scales, the fp16 outlier values under
fp32_bytes (unquantized values at their stored precision) and the column indices under
metadata. Bits per weight, reported per layer and overall, count every part but the shape:
(log2 k + log2 k_res) / d per weight plus the codebooks' 16 k d bits, the outliers' and the
padding's. A codebook only pays off on a weight with more vectors than centroids: a smaller
weight is kept (``small_layers: keep``, the report says why with the numbers) or is an error
(``small_layers: error``). VPTQ shares a codebook per layer; so does this pass.

Errors (ValueError naming the pass, the layer and the numbers): a weight whose rows ``dim`` does
not divide with ``pad: false``; a Linear whose calibration input vectors are fewer than
``min_calibration_ratio`` (default 0.05) times its input columns: X^T X has rank at most that
count, and below it the dampening, not the data, would set most of H^-1. The default lets the
ETTh1 Transformer's head (3072 input columns, one input vector per window, 256 windows: rank
256, as gptq_weight_sim uses it) through; 1.0 asks for a full-rank Hessian. Each report row of
a Linear gives its ``calibration_vectors``.

Simulated: fp32 kernels run on the decoded weights; no speed-up is claimed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from seqcomp.compress.quant.bitpack import pack_bits, unpack_bits
from seqcomp.compress.quant.coded import KEEP_DTYPES, CodedPass, Parts, Target, candidates, real_view, row
from seqcomp.compress.quant.common import KEPT, run_calibration, summary
from seqcomp.compress.quant.gptq import DEFAULT_SETTINGS, code_in_order, gptq_able
from seqcomp.compress.quant.groups import DEFAULT_GROUPS, check_groups, named_groups
from seqcomp.compress.quant.size import CODEBOOK_SUFFIX, CODES_SUFFIX
from seqcomp.compress.quant.vector import ColumnVectors, check_codebook, dequantize_columns, padded_rows, vptq_quantize
from seqcomp.registry import check

RESIDUAL_CODES = ".residual" + CODES_SUFFIX  # ends in .codes: counted as weights by size.py
RESIDUAL_CODEBOOK = ".residual" + CODEBOOK_SUFFIX  # ends in .codebook: counted as scales
OUTLIERS = ".outliers"
OUTLIER_COLUMNS = ".outlier_columns"
SMALL_LAYERS = ("keep", "error")


def _code_bits(k: int) -> int:
    return math.ceil(math.log2(k))


class VPTQ(CodedPass):
    """Column vectors coded into Hessian-weighted codebooks with GPTQ's error feedback."""

    @dataclass(frozen=True)
    class Config:
        dim: int = 4  # vector length d, along the output axis
        codebook_size: int = 256  # k of the main codebook
        residual_codebook_size: int = 0  # k of the residual codebook; 0: none
        outlier_fraction: float = 0.0  # share of input columns kept apart in fp16
        iterations: int = 10  # k-means Lloyd steps
        seed: int = 0
        percdamp: float = DEFAULT_SETTINGS.percdamp
        block_size: int = DEFAULT_SETTINGS.block_size
        refit: bool = True  # least-squares codebook update on the Hessian objective after rounding
        pad: bool = True  # pad rows to a multiple of dim; false: such a weight is an error
        min_calibration_ratio: float = 0.05  # a Linear needs this many calibration input vectors per input column
        small_layers: str = "keep"  # a weight with no more vectors than centroids: keep | error
        keep_dtype: str = "float32"  # float32 | float16: how the tensors left uncoded are stored
        groups: list[str] = field(default_factory=lambda: list(DEFAULT_GROUPS))

        def __post_init__(self) -> None:
            def positive_int(value: Any) -> bool:
                return type(value) is int and value > 0

            check_codebook(self.dim, self.codebook_size)
            check(
                type(self.residual_codebook_size) is int
                and (self.residual_codebook_size == 0 or 2 <= self.residual_codebook_size <= 256),
                "residual_codebook_size",
                f"must be 0 (no residual stage) or an integer in 2..256, got {self.residual_codebook_size!r}",
            )
            check(
                isinstance(self.outlier_fraction, (int, float))
                and not isinstance(self.outlier_fraction, bool)
                and 0 <= self.outlier_fraction < 0.5,
                "outlier_fraction",
                f"must be a number in [0, 0.5), got {self.outlier_fraction!r}",
            )
            check(positive_int(self.iterations), "iterations", f"must be a positive integer, got {self.iterations!r}")
            check(type(self.seed) is int, "seed", f"must be an integer, got {self.seed!r}")
            check(
                isinstance(self.percdamp, (int, float)) and 0 < self.percdamp <= 1,
                "percdamp",
                f"must be a number in (0, 1], got {self.percdamp!r}",
            )
            check(positive_int(self.block_size), "block_size", f"must be a positive integer, got {self.block_size!r}")
            check(
                isinstance(self.min_calibration_ratio, (int, float))
                and not isinstance(self.min_calibration_ratio, bool)
                and self.min_calibration_ratio >= 0,
                "min_calibration_ratio",
                f"must be a number >= 0, got {self.min_calibration_ratio!r}",
            )
            check(isinstance(self.refit, bool), "refit", f"must be true or false, got {self.refit!r}")
            check(isinstance(self.pad, bool), "pad", f"must be true or false, got {self.pad!r}")
            check(
                self.small_layers in SMALL_LAYERS,
                "small_layers",
                f"must be one of {list(SMALL_LAYERS)}, got {self.small_layers!r}",
            )
            check(
                self.keep_dtype in KEEP_DTYPES,
                "keep_dtype",
                f"must be one of {sorted(KEEP_DTYPES)}, got {self.keep_dtype!r}",
            )
            check_groups(self.groups)

    kind: ClassVar[str] = "vptq_sim"
    optional_parts: ClassVar[tuple[str, ...]] = (RESIDUAL_CODES, RESIDUAL_CODEBOOK, OUTLIERS, OUTLIER_COLUMNS)

    def part_suffixes(self) -> tuple[str, ...]:
        return (CODES_SUFFIX, CODEBOOK_SUFFIX)

    def keep_dtype(self) -> torch.dtype:
        return KEEP_DTYPES[self.config.keep_dtype]

    def nominal_bits(self) -> float:
        """Index bits per weight: log2 k / d (+ log2 k_res / d), before any overhead."""
        c = self.config
        return (_code_bits(c.codebook_size) + (_code_bits(c.residual_codebook_size) if c.residual_codebook_size else 0)) / c.dim

    def decode(self, parts: Parts, shape: torch.Size) -> torch.Tensor:
        c = self.config
        rows, width = shape[0], shape.numel() // shape[0]
        if (RESIDUAL_CODES in parts) != bool(c.residual_codebook_size):
            raise ValueError("residual codes stored without residual_codebook_size, or missing: wrong pass config?")
        if (OUTLIERS in parts) != (OUTLIER_COLUMNS in parts):
            raise ValueError("outlier values stored without their column indices, or the other way round")
        codebook = parts[CODEBOOK_SUFFIX]
        if tuple(codebook.shape) != (c.codebook_size, c.dim):
            raise ValueError(f"codebook {tuple(codebook.shape)} stored, config says ({c.codebook_size}, {c.dim})")
        columns = parts.get(OUTLIER_COLUMNS, torch.zeros(0, dtype=torch.int32)).long()
        count = (width - len(columns)) * padded_rows(rows, c.dim) // c.dim
        residual = None, None
        if c.residual_codebook_size:
            residual = (
                unpack_bits(parts[RESIDUAL_CODES], _code_bits(c.residual_codebook_size), count).long(),
                parts[RESIDUAL_CODEBOOK],
            )
        cv = ColumnVectors(
            unpack_bits(parts[CODES_SUFFIX], _code_bits(c.codebook_size), count).long(),
            codebook,
            *residual,
            columns,
            parts.get(OUTLIERS, torch.zeros(rows, 0, dtype=torch.float16)),
        )
        return dequantize_columns(cv, rows, width).reshape(shape)

    def _outlier_count(self, width: int) -> int:
        return round(self.config.outlier_fraction * width)

    def _why_not(self, name: str, weight: torch.Tensor) -> str | None:
        """Why ``weight`` is not coded (too few vectors for the codebooks), or None; raises on
        the bad inputs (rows not a multiple of dim without ``pad``; too few vectors with
        ``small_layers: error``)."""
        c = self.config
        rows, width = weight.shape[0], weight.numel() // weight.shape[0]
        if rows % c.dim and not c.pad:
            raise ValueError(
                f"{self.kind}: {name} {tuple(weight.shape)}: dim={c.dim} does not divide its {rows} rows "
                "(vectors run along the output axis); use a dim that divides every weight, or pad: true"
            )
        vectors = padded_rows(rows, c.dim) // c.dim * (width - self._outlier_count(width))
        k = max(c.codebook_size, c.residual_codebook_size)
        if vectors > k:
            return None
        message = f"{vectors} vectors of {c.dim}, not more than the {k} entries of a codebook"
        if c.small_layers == "error":
            raise ValueError(f"{self.kind}: {name} {tuple(weight.shape)}: {message} (small_layers: error)")
        return f"{message}; kept"

    def _encode(self, weight: torch.Tensor, h: torch.Tensor | None) -> Parts:
        c = self.config
        rows = weight.shape[0]
        cv = vptq_quantize(
            weight.detach().float().reshape(rows, -1), h, c.dim, c.codebook_size, c.residual_codebook_size,
            self._outlier_count(weight.numel() // rows), c.iterations, c.seed, c.percdamp, c.block_size, c.refit,
        )
        parts = {
            CODES_SUFFIX: pack_bits(cv.codes.to(torch.uint8), _code_bits(c.codebook_size)),
            CODEBOOK_SUFFIX: cv.codebook,
        }
        if cv.residual_codebook is not None:
            parts[RESIDUAL_CODES] = pack_bits(cv.residual_codes.to(torch.uint8), _code_bits(c.residual_codebook_size))
            parts[RESIDUAL_CODEBOOK] = cv.residual_codebook
        if len(cv.outlier_columns):
            parts[OUTLIER_COLUMNS] = cv.outlier_columns.to(torch.int32)
            parts[OUTLIERS] = cv.outliers
        return parts

    def _action(self, target: Target, h: torch.Tensor | None, calibrated: bool) -> str:
        c = self.config
        words = f"vptq {c.codebook_size}x{c.dim}"
        words += f" + residual {c.residual_codebook_size}" if c.residual_codebook_size else ""
        if h is not None:
            how = "hessian-weighted k-means, error feedback"
        elif calibrated:
            how = f"plain k-means: {type(target.module).__name__}.{target.pname} is not an nn.Linear weight, no input hook"
        else:
            how = "plain k-means: no calibration windows"
        return f"{words} ({how}; simulated)"

    def _calibration_vectors(self, model: nn.Module, targets: list[Target], calib: torch.Tensor) -> dict[str, int]:
        """{name: input vectors on ``calib``} of every nn.Linear target; raises if one has fewer
        than ``min_calibration_ratio`` x its input columns. H = X^T X has rank at most that count:
        with far fewer vectors than columns the dampening, not the data, sets most of H^-1, and
        the error feedback follows noise."""
        linear = {id(t.module): t for t in targets if gptq_able(t)}
        counts = dict.fromkeys(linear, 0)

        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            counts[id(module)] += args[0].numel() // module.in_features

        run_calibration(model, calib, [linear[i].module.register_forward_pre_hook(hook) for i in linear])
        ratio = self.config.min_calibration_ratio
        for i, t in linear.items():
            if 0 < counts[i] < ratio * t.module.in_features:
                raise ValueError(
                    f"{self.kind}: {t.name}: calibration set too small for the Hessian: {counts[i]} input vectors "
                    f"from {len(calib)} windows, fewer than min_calibration_ratio={ratio} x its "
                    f"{t.module.in_features} input columns (give more calibration.windows)"
                )
        return {t.name: counts[i] for i, t in linear.items()}

    def apply(self, model: nn.Module, calib: torch.Tensor | None) -> tuple[nn.Module, dict[str, Any]]:
        """Code the selected weights in place (forward order, with Hessians when ``calib`` is given)."""
        c = self.config
        owners = {name: (module, pname) for name, module, pname, _, _ in named_groups(model)}
        rows, targets = {}, []
        for name, kind, param, group, reason in candidates(model, c.groups):
            reason = reason or self._why_not(name, param)
            if reason is None:
                targets.append(Target(name, *owners[name], group))
            rows[name] = row(name, kind, param, group, KEPT, reason)  # a coded row gets its action below
        originals = {t.name: real_view(t.param).float().clone() for t in targets}

        def code(t: Target, h: torch.Tensor | None) -> tuple[Parts, str]:
            return self._encode(t.param, h), self._action(t, h, calib is not None)

        vectors: dict[str, int] = {}
        if calib is None:
            coded = {t.name: code(t, None) for t in targets}
        else:
            vectors = self._calibration_vectors(model, targets, calib)
            coded = code_in_order(model, targets, calib, code, self.decode)
        self.start(model)
        bits = {"all": 0, "codebooks": 0}
        for t in targets:
            parts, action = coded[t.name]
            error = self.commit(model, t.name, t.param, parts, originals[t.name])
            numel = t.param.numel()
            layer_bits = 8 * sum(p.numel() * p.element_size() for p in parts.values())
            book_bits = 8 * sum(parts[s].numel() * 2 for s in (CODEBOOK_SUFFIX, RESIDUAL_CODEBOOK) if s in parts)
            bits["all"] += layer_bits
            bits["codebooks"] += book_bits
            rows[t.name].update({
                "action": action,
                "bits_per_weight": round(layer_bits / numel, 4),
                "codebook_bits_per_weight": round(book_bits / numel, 4),
                "outlier_columns": len(parts.get(OUTLIER_COLUMNS, ())),
                "padded_rows": padded_rows(t.param.shape[0], c.dim) - t.param.shape[0],
                "weight_rel_err": error,
                **({"calibration_vectors": vectors[t.name]} if t.name in vectors else {}),
            })
        stored_as = self.keep_rest(model, {t.name for t in targets})
        layers = [r if r["action"] != KEPT else {**r, **stored_as} for r in rows.values()]
        numel = sum(t.param.numel() for t in targets)
        report = self.describe(
            f"simulated: {_code_bits(c.codebook_size)}-bit indices into fp16 codebooks of {c.codebook_size} column "
            f"vectors of {c.dim}"
            + (f" + {_code_bits(c.residual_codebook_size)}-bit residual indices" if c.residual_codebook_size else "")
            + ", Hessian-weighted, rounded with GPTQ error feedback; decoded to fp32, no speed-up claimed",
            dim=c.dim,
            codebook_size=c.codebook_size,
            residual_codebook_size=c.residual_codebook_size,
            outlier_fraction=c.outlier_fraction,
            iterations=c.iterations,
            percdamp=c.percdamp,
            block_size=c.block_size,
            refit=c.refit,
            keep_dtype=c.keep_dtype,
            groups=list(c.groups),
            nominal_bits_per_weight=self.nominal_bits(),
            # every part of the coded weights (codes, codebooks, outliers, padding) over their elements
            bits_per_weight=round(bits["all"] / numel, 4) if numel else None,
            codebook_bits_per_weight=round(bits["codebooks"] / numel, 4) if numel else None,
        )
        if not targets:
            report["skipped"] = "no selected weight has more vectors than a codebook's entries; the model stays fp32"
        return model, {**report, **summary(layers), "layers": layers}
