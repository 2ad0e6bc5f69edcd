"""Vector quantization machinery: (weighted) k-means codebooks, and VPTQ's column-wise
rounding of a weight to codebook vectors with GPTQ's error feedback.

Shared by vq_sim (plain k-means on sub-vectors of rows) and vptq_sim (Hessian-weighted
k-means on sub-vectors of columns, rounded column by column with error feedback), so that the
two passes fit codebooks the same way and differ only in what they feed them.

Paper for the second part: "VPTQ: Extreme Low-bit Vector Post-Training Quantization for Large
Language Models", Yifei Liu et al., EMNLP 2024 (arXiv:2409.17066). For a weight W (R, K) and
the Hessian H (K, K) of its inputs, VPTQ cuts every input column into R/d vectors of d
consecutive output weights, so that a whole column is quantized at once and GPTQ's update
(the error of column j spread onto the columns not yet quantized through the Cholesky factor
U of H^-1) applies unchanged. The proxy loss of one column is its squared error times H[j, j],
so the codebook is a k-means fit of all the vectors weighted by the H[j, j] of their column.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from seqcomp.registry import check


def check_codebook(dim: Any, codebook_size: Any) -> None:
    """The config checks every vector pass shares: ``dim`` weights per vector, at most 256
    codewords (an index is bit-packed in at most 8 bits)."""
    check(type(dim) is int and dim > 0, "dim", f"must be a positive integer, got {dim!r}")
    check(
        type(codebook_size) is int and 2 <= codebook_size <= 256,
        "codebook_size",
        f"must be an integer in 2..256 (an index is at most 8 bits), got {codebook_size!r}",
    )


def nearest(vectors: torch.Tensor, centroids: torch.Tensor, chunk: int = 1 << 16) -> torch.Tensor:
    """Index of the nearest centroid (k, d) for each vector (n, d); ties go to the lower index."""
    norms = (centroids * centroids).sum(dim=1)  # (k,)
    # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2; ||x||^2 does not change the argmin
    return torch.cat([(norms - 2 * block @ centroids.T).argmin(dim=1) for block in vectors.split(chunk)])


def seed_centroids(
    vectors: torch.Tensor, k: int, generator: torch.Generator, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): each new centroid is drawn with
    probability proportional to its squared distance from the nearest one already chosen
    (times the vector's weight, if given: a vector that costs more when far is seeded sooner)."""
    first = int(torch.randint(vectors.shape[0], (1,), generator=generator))
    centroids = [vectors[first]]
    dist = ((vectors - vectors[first]) ** 2).sum(dim=1)  # (n,)
    for _ in range(1, k):
        mass = dist if weights is None else dist * weights
        mass = mass if float(mass.sum()) > 0 else torch.ones_like(mass)  # all points covered
        pick = int(torch.multinomial(mass, 1, generator=generator))
        centroids.append(vectors[pick])
        dist = torch.minimum(dist, ((vectors - vectors[pick]) ** 2).sum(dim=1))
    return torch.stack(centroids)


def kmeans(
    vectors: torch.Tensor, k: int, iterations: int, seed: int, weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Codebook (k, d) in fp16 and the index (n,) of each vector's nearest fp16 centroid.

    ``weights`` (n,), if given, weight each vector's squared error: a centroid is the weighted
    mean of its vectors (a cluster of zero total weight keeps its centroid, as an empty one does).
    """
    centroids = seed_centroids(vectors, k, torch.Generator().manual_seed(seed), weights)
    mass = torch.ones(vectors.shape[0], dtype=vectors.dtype) if weights is None else weights.to(vectors.dtype)
    for _ in range(iterations):
        assign = nearest(vectors, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, assign, vectors * mass[:, None])
        totals = torch.zeros(k, dtype=vectors.dtype).index_add_(0, assign, mass)
        filled = totals > 0
        centroids[filled] = sums[filled] / totals[filled, None]
    codebook = centroids.half()
    return codebook, nearest(vectors, codebook.float())


@dataclass(frozen=True)
class ColumnVectors:
    """A weight (R, K) as VPTQ stores it: ``rows`` padded to a multiple of d, the columns not kept
    apart coded as R/d vectors each (``codes``, column after column, into ``codebook``; plus
    ``residual_codes`` into ``residual_codebook`` when a residual stage is used) and the
    ``outlier_columns`` (sorted) kept as fp16 values ``outliers`` (R, n)."""

    codes: torch.Tensor  # (n_coded_columns * R_padded / d,) int64
    codebook: torch.Tensor  # (k, d) fp16
    residual_codes: torch.Tensor | None
    residual_codebook: torch.Tensor | None
    outlier_columns: torch.Tensor  # (n,) int64, sorted
    outliers: torch.Tensor  # (R, n) fp16


def padded_rows(rows: int, dim: int) -> int:
    """Rows rounded up to a multiple of ``dim`` (the padding is coded and dropped on decoding)."""
    return -(-rows // dim) * dim


def coded_columns(width: int, outlier_columns: torch.Tensor) -> torch.Tensor:
    """The columns of a ``width``-column weight that are coded as vectors, in natural order."""
    keep = torch.ones(width, dtype=torch.bool)
    keep[outlier_columns] = False
    return keep.nonzero().flatten()


def dequantize_columns(cv: ColumnVectors, rows: int, width: int) -> torch.Tensor:
    """The fp32 weight (rows, width) that ``cv`` describes."""
    columns = coded_columns(width, cv.outlier_columns)
    vectors = cv.codebook.float()[cv.codes]
    if cv.residual_codebook is not None:
        vectors = vectors + cv.residual_codebook.float()[cv.residual_codes]
    dim = cv.codebook.shape[1]
    out = torch.zeros(padded_rows(rows, dim), width)
    out[:, columns] = vectors.reshape(len(columns), -1).T
    out[:rows, cv.outlier_columns] = cv.outliers.float()
    return out[:rows]


def outlier_order(weight: torch.Tensor, h: torch.Tensor | None, count: int) -> torch.Tensor:
    """The ``count`` columns of ``weight`` (R, K) whose error would cost most: largest
    H[j, j] * ||W[:, j]||^2 (the column's share of the output energy), or largest norm without H."""
    saliency = (weight.double() ** 2).sum(dim=0)
    if h is not None:
        saliency = saliency * torch.diagonal(h)
    return torch.sort(torch.argsort(saliency, descending=True)[:count]).values


def vptq_quantize(
    weight: torch.Tensor,
    h: torch.Tensor | None,
    dim: int,
    codebook_size: int,
    residual_codebook_size: int,
    outlier_count: int,
    iterations: int,
    seed: int,
    percdamp: float,
    block_size: int,
    refit: bool = True,
) -> ColumnVectors:
    """VPTQ codes of ``weight`` (R, K) given the Hessian ``h`` (K, K) of its inputs, or None.

    With ``h`` the codebooks are Hessian-weighted k-means fits and every column's error is
    spread onto the later columns (GPTQ's update, ``block_size`` columns eagerly, the rest in
    one matmul per block; ``percdamp`` * mean(diag H) added to the diagonal). The outlier
    columns are visited last, so that they absorb the error of all coded columns before they
    are rounded to fp16. Without ``h`` (no input hook, no calibration) every vector weighs the
    same and no error is spread: plain k-means on column vectors. With ``refit`` the codebooks
    are then re-solved for the codes chosen (:func:`refit_codebooks`; with H = I that is one
    more Lloyd step).
    """
    rows, width = weight.shape
    m = padded_rows(rows, dim)
    w = torch.zeros(m, width, dtype=torch.float64)
    w[:rows] = weight.double()
    outlier_columns = outlier_order(w, h, outlier_count)
    columns = coded_columns(width, outlier_columns)
    if h is None:
        h = torch.eye(width, dtype=torch.float64)
    h = h.double().clone()
    dead = torch.diagonal(h) == 0  # inputs that are always zero: any weight works
    h[dead, dead] = 1.0
    h += percdamp * torch.diagonal(h).mean() * torch.eye(width, dtype=h.dtype)

    def fit(vectors: torch.Tensor, k: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        # one vector weight per column's vectors: H[j, j] of that column
        weights = torch.diagonal(h)[columns].repeat_interleave(m // dim).float()
        return kmeans(vectors, k, iterations, seed + step, weights)

    vectors = w[:, columns].T.reshape(-1, dim).float()  # column after column, R/d vectors each
    codebook, first = fit(vectors, codebook_size, 0)
    residual_codebook = None
    if residual_codebook_size:
        residual_codebook, _ = fit(vectors - codebook.float()[first], residual_codebook_size, 1)

    order = torch.cat([columns, outlier_columns])
    w, h = w[:, order], h[order][:, order]
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)  # H^-1 = U^T U
    codes = torch.zeros(len(columns), m // dim, dtype=torch.int64)
    residual_codes = torch.zeros_like(codes)
    for b0 in range(0, width, block_size):
        b1 = min(b0 + block_size, width)
        block, errors = w[:, b0:b1].clone(), torch.zeros(m, b1 - b0, dtype=w.dtype)
        for j in range(b1 - b0):
            p = b0 + j  # position in the visiting order
            if p >= len(columns):  # an outlier column: kept, rounded to fp16
                q = block[:, j].half().double()
            else:
                vec = block[:, j].float().reshape(-1, dim)
                codes[p] = nearest(vec, codebook.float())
                approx = codebook.float()[codes[p]]
                if residual_codebook is not None:
                    residual_codes[p] = nearest(vec - approx, residual_codebook.float())
                    approx = approx + residual_codebook.float()[residual_codes[p]]
                q = approx.reshape(-1).double()
            errors[:, j] = (block[:, j] - q) / u[p, p]
            block[:, j:] -= errors[:, j : j + 1] * u[p, p:b1][None, :]
            block[:, j] = q  # what is stored (the update above leaves q up to rounding)
        w[:, b0:b1] = block
        w[:, b1:] -= errors @ u[b0:b1, b1:]
    outliers = w[:, len(columns) :]
    books, stages = [codebook], [codes]
    if residual_codebook is not None:
        books, stages = [codebook, residual_codebook], [codes, residual_codes]
    if refit:
        original = torch.zeros(m, width, dtype=torch.float64)
        original[:rows] = weight.double()
        books = refit_codebooks(original, h[:, order.argsort()][order.argsort()], columns, outlier_columns, outliers, books, stages)
    return ColumnVectors(
        codes.reshape(-1),
        books[0],
        residual_codes.reshape(-1) if residual_codebook is not None else None,
        books[1] if residual_codebook is not None else None,
        outlier_columns,
        outliers[:rows].half(),
    )


def refit_codebooks(
    weight: torch.Tensor,
    h: torch.Tensor,
    columns: torch.Tensor,
    outlier_columns: torch.Tensor,
    outliers: torch.Tensor,
    books: list[torch.Tensor],
    stages: list[torch.Tensor],
) -> list[torch.Tensor]:
    """The fp16 codebooks that minimise tr((W - Q) H (W - Q)^T) given the codes (GPTVQ's codebook
    update, arXiv:2402.15319): error feedback chose the codes for weights it had moved, so the
    k-means centroids are no longer the best values for them.

    ``weight`` (M, K) is the original padded weight, ``h`` the damped Hessian in natural column
    order, ``books`` the codebooks (k_s, d) and ``stages`` their codes (n_coded_columns, M/d).
    Q's coded columns are sums of one centroid per stage, so Q is linear in the stacked centroids
    x (sum k_s, d): component t of every vector is a least-squares problem
    (sum_v O_v^T H_cc O_v) x_t = sum_v O_v^T (H_cc w_{v,t} + H_co (w - o)_{v,t}) with O_v the
    one-hot code matrix of vector row v, the same matrix for every t. A small ridge toward
    the current centroids keeps unused ones where they are.
    """
    dim = books[0].shape[1]
    offsets = torch.tensor([0] + [b.shape[0] for b in books]).cumsum(0)
    index = torch.stack([c + int(o) for c, o in zip(stages, offsets)], dim=-1)  # (Kc, V, S)
    total = int(offsets[-1])
    h_cc, h_co = h[columns][:, columns], h[columns][:, outlier_columns]
    gram = torch.zeros(total, total, dtype=torch.float64)
    for v in range(index.shape[1]):
        spread = torch.zeros(len(columns), total, dtype=torch.float64)  # H_cc O_v
        for stage in index[:, v].T:  # (Kc,) codes of vector row v, one stage at a time
            spread.index_add_(1, stage, h_cc)
        for stage in index[:, v].T:
            gram.index_add_(0, stage, spread)  # += O_v^T H_cc O_v
    # rhs for rows r: H_cc w_r[cols] + H_co (w_r[outl] - o_r)
    target = weight[:, columns] @ h_cc + (weight[:, outlier_columns] - outliers) @ h_co.T  # (M, Kc)
    target = target.reshape(-1, dim, len(columns)).permute(2, 0, 1)  # (Kc, V, d)
    rhs = torch.zeros(total, dim, dtype=torch.float64)
    for s in range(index.shape[2]):
        rhs.index_add_(0, index[:, :, s].reshape(-1), target.reshape(-1, dim))
    current = torch.cat([b.double() for b in books])
    ridge = 1e-6 * float(torch.diagonal(gram).mean()) + 1e-12
    solved = torch.linalg.solve(gram + ridge * torch.eye(total, dtype=gram.dtype), rhs + ridge * current)
    return [part.half() for part in solved.split([b.shape[0] for b in books])]
