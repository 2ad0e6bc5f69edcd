"""Vector quantization of weights (product quantization, as in VPTQ, arXiv:2409.17066).

Each row of a weight (out, K) is cut into sub-vectors of ``dim`` consecutive input weights (a
row whose length is not a multiple of ``dim`` is zero-padded; the padding is decoded and
dropped, never used). The sub-vectors of a layer, or of each block of ``group_size`` columns
when given, share a codebook of ``codebook_size`` centroids fitted by k-means: k-means++
seeding, then ``iterations`` Lloyd steps, with a seeded generator so the result is
deterministic. An empty cluster keeps its centroid.

Stored: one index per sub-vector, bit-packed at ceil(log2(codebook_size)) bits (at most 8,
so a codebook holds at most 256 centroids), and the codebook in fp16. The centroids are
rounded to fp16 before the final assignment, so the model runs exactly the stored weights.
Bits per weight, all overheads counted, are ``(log2 k * n_sub + 16 * k * dim) / numel``: a
codebook only pays off on layers with many more sub-vectors than centroids, so a weight with
no more sub-vectors than centroids stays fp32 and the report says so.

Simulated: the model runs fp32 kernels on the decoded weights; no speed-up is claimed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from seqcomp.compress.quant.bitpack import pack_bits, unpack_bits
from seqcomp.compress.quant.coded import CodedPass, candidates, row
from seqcomp.compress.quant.common import KEPT, summary
from seqcomp.compress.quant.groups import DEFAULT_GROUPS, check_groups
from seqcomp.compress.quant.size import CODEBOOK_SUFFIX, CODES_SUFFIX
from seqcomp.compress.quant.vector import check_codebook, kmeans
from seqcomp.registry import check


class VectorQuant(CodedPass):
    """Weights as indices into a k-means codebook of sub-vectors (per layer or column block)."""

    @dataclass(frozen=True)
    class Config:
        dim: int = 4
        codebook_size: int = 256
        group_size: int | None = None
        iterations: int = 10
        seed: int = 0
        groups: list[str] = field(default_factory=lambda: list(DEFAULT_GROUPS))

        def __post_init__(self) -> None:
            def positive_int(value: Any) -> bool:
                return type(value) is int and value > 0

            check_codebook(self.dim, self.codebook_size)
            check(
                self.group_size is None or (positive_int(self.group_size) and self.group_size % self.dim == 0),
                "group_size",
                f"must be null (one codebook per layer) or a positive multiple of dim={self.dim}, "
                f"got {self.group_size!r}",
            )
            check(positive_int(self.iterations), "iterations", f"must be a positive integer, got {self.iterations!r}")
            check(type(self.seed) is int, "seed", f"must be an integer, got {self.seed!r}")
            check_groups(self.groups)

    kind: ClassVar[str] = "vq_sim"

    def __init__(self, config: Config):
        super().__init__(config)
        self.bits = math.ceil(math.log2(config.codebook_size))

    def part_suffixes(self) -> tuple[str, ...]:
        return (CODES_SUFFIX, CODEBOOK_SUFFIX)

    def _blocks(self, width: int) -> list[int]:
        """Widths of the column blocks of a row padded to ``width`` (a multiple of dim)."""
        step = self.config.group_size or width
        return [min(step, width - start) for start in range(0, width, step)]

    def _padded(self, shape: torch.Size) -> tuple[int, int, int]:
        """(rows, row length, padded row length) of a weight of ``shape``."""
        rows, length = shape[0], shape.numel() // shape[0]
        return rows, length, -(-length // self.config.dim) * self.config.dim

    def decode(self, parts: dict[str, torch.Tensor], shape: torch.Size) -> torch.Tensor:
        rows, length, width = self._padded(shape)
        codebook = parts[CODEBOOK_SUFFIX].float()  # (blocks, k, dim)
        index = unpack_bits(parts[CODES_SUFFIX], self.bits, rows * width // self.config.dim).long()
        counts = [rows * w // self.config.dim for w in self._blocks(width)]
        if codebook.shape[0] != len(counts):
            raise ValueError(f"{codebook.shape[0]} codebooks stored for {len(counts)} column blocks: wrong group_size?")
        blocks = [book[idx].view(rows, -1) for book, idx in zip(codebook, index.split(counts))]
        return torch.cat(blocks, dim=1)[:, :length].reshape(shape)

    def _encode(self, weight: torch.Tensor) -> dict[str, torch.Tensor]:
        """Parts of one weight: packed indices (block by block, row-major) and codebooks."""
        rows, length, width = self._padded(weight.shape)
        padded = F.pad(weight.detach().float().reshape(rows, length), (0, width - length))  # (out, width)
        books, indices = [], []
        for block in padded.split(self._blocks(width), dim=1):
            vectors = block.reshape(-1, self.config.dim)  # (rows * w / dim, dim)
            book, index = kmeans(vectors, self.config.codebook_size, self.config.iterations, self.config.seed)
            books.append(book)
            indices.append(index)
        codes = pack_bits(torch.cat(indices).to(torch.uint8), self.bits)
        return {CODES_SUFFIX: codes, CODEBOOK_SUFFIX: torch.stack(books)}

    def _why_not(self, weight: torch.Tensor) -> str | None:
        """Why a codebook does not fit ``weight``: no more sub-vectors than centroids.

        With n > k sub-vectors of d per codebook the stored form is always smaller than fp32:
        at most 1 byte of index per sub-vector plus 2kd < 2nd bytes of codebook, under 4nd.
        """
        rows, _, width = self._padded(weight.shape)
        fewest = min(rows * w // self.config.dim for w in self._blocks(width))
        k = self.config.codebook_size
        if fewest <= k:
            return f"{fewest} sub-vectors of {self.config.dim} per codebook, not more than {k} centroids; kept fp32"
        return None

    def apply(self, model: nn.Module, calib: torch.Tensor | None) -> tuple[nn.Module, dict[str, Any]]:
        """Vector-quantize the selected weights in place; ``calib`` is unused (k-means on W)."""
        self.start(model)
        layers, bits, numel = [], 0, 0
        for name, kind, param, group, reason in candidates(model, self.config.groups):
            reason = reason or self._why_not(param)
            if reason is not None:
                layers.append(row(name, kind, param, group, KEPT, reason))
                continue
            parts = self._encode(param)
            error = self.commit(model, name, param, parts)
            layer_bits = 8 * sum(p.numel() * p.element_size() for p in parts.values())
            bits, numel = bits + layer_bits, numel + param.numel()
            action = f"vq {self.config.codebook_size}x{self.config.dim} (simulated)"
            layers.append({
                **row(name, kind, param, group, action),
                "bits_per_weight": round(layer_bits / param.numel(), 4),
                "weight_rel_err": error,
            })
        c = self.config
        report = self.describe(
            f"simulated: {self.bits}-bit indices into fp16 codebooks of {c.codebook_size} "
            f"vectors of {c.dim}, decoded to fp32; no speed-up claimed",
            dim=c.dim,
            codebook_size=c.codebook_size,
            group_size=c.group_size,
            iterations=c.iterations,
            groups=list(c.groups),
            # indices + codebooks over the quantized weights (shapes and fp32 layers not counted)
            bits_per_weight=round(bits / numel, 4) if numel else None,
        )
        if all(r["action"] == KEPT for r in layers):
            report["skipped"] = "no selected weight fits a codebook; the model stays fp32"
        return model, {**report, **summary(layers), "layers": layers}
