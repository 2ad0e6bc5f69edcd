"""A synthetic pre-training corpus: KernelSynth Gaussian-process draws and ForecastPFN-style
trend x seasonality x noise series, with TTM's multi-resolution views and Chronos's TSMix.

Pre-trained forecasters (Chronos, TTM, Time-MoE) learn from far more series than any one data
set holds; much of it synthetic. Two families, in a proportion set by ``kernel_share``:

- **KernelSynth** (Ansari et al. 2024, Chronos, arXiv:2403.07815, appendix): a series is one
  draw of a zero-mean Gaussian process whose kernel is a random composition of 1 to
  ``max_kernels`` kernels drawn (with replacement) from ``bank``, folded left to right with a
  random ``+`` or ``*``. Each bank kernel draws its own parameters from ``PARAMS`` (periods
  from ``periods``, in steps; length scales as fractions of the generated length N).
- **ForecastPFN** (Dooley et al. 2023, arXiv:2311.01933): trend (linear times exponential)
  times seasonality (one sine factor per period of ``pfn_periods``: daily, weekly, yearly in
  hours, random amplitude and phase) times multiplicative Weibull noise.

Sampling a GP exactly by a Cholesky factor costs O(N^3) (Chronos limits N to 1024). Here
every kernel is first written as a sum of separable terms a * x^d x'^d * s(t - t'), with x =
t/N and s stationary: the linear kernel c + x x' is two such terms, the others one, and a
product of kernels multiplies terms pairwise. A GP with that kernel is the sum of independent
draws sqrt(a) x^d g(t), g stationary with covariance s, exactly. Each g is drawn by circulant
embedding (Dietrich & Newsam 1997; Wood & Chan 1994): the N x N Toeplitz covariance is the
corner of a circulant of size M >= 2N (a multiple of the term's periods), whose eigenvalues
are one FFT; when none is negative the draw is exact, in O(M log M). M is doubled up to
``EMBED_DOUBLINGS`` times until the smallest eigenvalue is above -``EMBED_TOL`` times the
largest (those rounding-level negatives are set to 0); a term whose embedding stays indefinite
is drawn from the eigendecomposition of its Toeplitz matrix instead, O(N^3), and counted
(``dense_fallbacks`` in meta.json). ``sampler: dense`` draws every series from the
eigendecomposition of its whole N x N kernel matrix, Chronos's way, as a reference.

Every series is a function of (seed, index) alone (its own random stream), so asking for more
series appends series and never changes the first ones. Channels are series (the corpus is
used channel-independent); see ``KernelSynthSource.load`` for the downsampled views and mixes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial, reduce
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from seqcomp.data._common import hourly_frame
from seqcomp.registry import check

if TYPE_CHECKING:
    import polars as pl

# A GP draw shorter than this shows little of the bank (the daily period fits under 3 times).
MIN_LENGTH = 64
# ``sampler: dense`` factorises an N x N matrix per series: beyond this N it takes minutes.
DENSE_MAX = 4096
# Circulant embedding: eigenvalues above -EMBED_TOL * largest count as nonnegative (rounding);
# M is doubled at most EMBED_DOUBLINGS times; a multiple of the periods above EMBED_MAX is not sought.
EMBED_TOL = 1e-8
EMBED_DOUBLINGS = 4
EMBED_MAX = 1 << 21
# The random streams of a seed: base series and mixes never share one.
SERIES_STREAM, MIX_STREAM = 0, 1

BANK = ("periodic", "linear", "rbf", "rational_quadratic", "white_noise", "constant")
# Each bank kernel's parameter choices (drawn uniformly). Length scales are fractions of the
# generated length N; the rational quadratic's (alpha, scale) pairs are those whose circulant
# embedding is nonnegative definite (heavier tails with longer scales are not: see docs/data.md).
PARAMS: dict[str, list[Any]] = {
    "periodic_length": [0.5, 1.0, 2.0],  # exp(-2 sin^2(pi tau / p) / l^2)
    "linear_offset": [0.0, 0.1, 1.0],  # c + x x'
    "rbf_scale": [0.01, 0.1, 0.5],  # exp(-tau^2 / (2 (l N)^2))
    "rational_quadratic": [(0.1, 0.01), (1.0, 0.01), (1.0, 0.1), (10.0, 0.01), (10.0, 0.1), (10.0, 0.5)],
    "white_noise_variance": [0.01, 0.1, 1.0],
    "constant_variance": [0.1, 1.0],
}
# ForecastPFN family: trend (1 + a x) exp(b x), a ~ N(0, TREND_STD) clipped at -0.9 so the
# trend keeps its sign; seasonal amplitude ~ U(0, SEASON_MAX) per period; noise 1 + m (w - E w),
# w ~ Weibull(k), k ~ U(WEIBULL_SHAPE), m ~ U(0, NOISE_MAX): positive, since w - E w >= -1 for k >= 1.
TREND_STD = 0.5
SEASON_MAX = 0.5
WEIBULL_SHAPE = (1.0, 3.0)
NOISE_MAX = 0.2


def periodic_cov(tau: np.ndarray, period: int, length: float) -> np.ndarray:
    return np.exp(-2.0 * np.sin(np.pi * tau / period) ** 2 / length**2)


def rbf_cov(tau: np.ndarray, scale: float) -> np.ndarray:
    return np.exp(-0.5 * (tau / scale) ** 2)


def rational_quadratic_cov(tau: np.ndarray, alpha: float, scale: float) -> np.ndarray:
    return (1.0 + tau**2 / (2.0 * alpha * scale**2)) ** -alpha


def white_cov(tau: np.ndarray) -> np.ndarray:
    return (tau == 0).astype(np.float64)


@dataclass(frozen=True)
class Term:
    """One separable summand of a kernel: ``scale * x^degree * x'^degree * prod(f(t - t') for f
    in lags)``; ``periods`` are the periods among ``lags`` (the circulant size is their multiple)."""

    scale: float
    degree: int = 0
    lags: tuple[Callable[[np.ndarray], np.ndarray], ...] = ()
    periods: tuple[int, ...] = ()

    def __mul__(self, other: Term) -> Term:
        return Term(self.scale * other.scale, self.degree + other.degree, self.lags + other.lags,
                    self.periods + other.periods)

    def stationary(self, tau: np.ndarray) -> np.ndarray:
        return reduce(np.multiply, (f(tau) for f in self.lags), np.ones_like(tau))


@dataclass(frozen=True)
class Kernel:
    """A kernel as a sum of separable terms, and its formula (for meta.json)."""

    terms: tuple[Term, ...]
    text: str

    def __add__(self, other: Kernel) -> Kernel:
        return Kernel(self.terms + other.terms, f"({self.text} + {other.text})")

    def __mul__(self, other: Kernel) -> Kernel:
        return Kernel(tuple(a * b for a in self.terms for b in other.terms), f"{self.text} * {other.text}")

    def matrix(self, n: int) -> np.ndarray:
        """The (n, n) covariance on the grid t = 0..n-1 (x = t / n)."""
        x = np.arange(n) / n
        tau = np.abs(np.subtract.outer(np.arange(n), np.arange(n))).astype(np.float64)
        return sum(t.scale * np.outer(x**t.degree, x**t.degree) * t.stationary(tau) for t in self.terms)


def bank_kernel(name: str, rng: np.random.Generator, n: int, periods: list[int]) -> Kernel:
    """One kernel of the bank with its parameters drawn from ``PARAMS`` (and ``periods``)."""
    if name == "periodic":
        period, length = int(rng.choice(periods)), float(rng.choice(PARAMS["periodic_length"]))
        return Kernel((Term(1.0, 0, (partial(periodic_cov, period=period, length=length),), (period,)),),
                      f"periodic(p={period}, l={length:g})")
    if name == "linear":
        c = float(rng.choice(PARAMS["linear_offset"]))
        return Kernel((Term(c), Term(1.0, 1)) if c else (Term(1.0, 1),), f"linear(c={c:g})")
    if name == "rbf":
        scale = float(rng.choice(PARAMS["rbf_scale"])) * n
        return Kernel((Term(1.0, 0, (partial(rbf_cov, scale=scale),)),), f"rbf(l={scale:g})")
    if name == "rational_quadratic":
        alpha, fraction = PARAMS["rational_quadratic"][rng.integers(len(PARAMS["rational_quadratic"]))]
        scale = fraction * n
        return Kernel((Term(1.0, 0, (partial(rational_quadratic_cov, alpha=alpha, scale=scale),)),),
                      f"rational_quadratic(alpha={alpha:g}, l={scale:g})")
    if name == "white_noise":
        variance = float(rng.choice(PARAMS["white_noise_variance"]))
        return Kernel((Term(variance, 0, (white_cov,)),), f"white_noise({variance:g})")
    variance = float(rng.choice(PARAMS["constant_variance"]))
    return Kernel((Term(variance),), f"constant({variance:g})")


def random_kernel(rng: np.random.Generator, n: int, bank: list[str], max_kernels: int, periods: list[int]) -> Kernel:
    """1..max_kernels bank kernels folded left to right by random + and *; drawn again while all
    are ``constant`` (a flat series, which no scaler can take)."""
    while True:
        names = [str(k) for k in rng.choice(bank, size=int(rng.integers(1, max_kernels + 1)))]
        if any(k != "constant" for k in names):
            break
    kernels = [bank_kernel(k, rng, n, periods) for k in names]
    ops = rng.integers(0, 2, size=len(kernels) - 1)
    return reduce(lambda acc, pair: acc * pair[1] if pair[0] else acc + pair[1], zip(ops, kernels[1:]), kernels[0])


def embedding_size(periods: tuple[int, ...], n: int) -> int:
    """The smallest multiple of the periods' lcm that is >= 2n (a periodic kernel's circulant is
    nonnegative definite only on a whole number of periods), or 2n if that multiple is too large."""
    base = math.lcm(*periods) if periods else 1
    size = base * math.ceil(2 * n / base)
    return size if size <= EMBED_MAX else 2 * n


def stationary_draw(term: Term, n: int, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """One draw (n,) of the zero-mean stationary GP with covariance ``term.stationary``, and
    whether it needed the dense fallback (see the module docstring)."""
    size = embedding_size(term.periods, n)
    for _ in range(EMBED_DOUBLINGS + 1):
        k = np.arange(size)
        eig = np.fft.rfft(term.stationary(np.minimum(k, size - k).astype(np.float64))).real  # symmetric: real
        if eig.min() >= -EMBED_TOL * eig.max():
            eig = np.concatenate([eig, eig[1:(size + 1) // 2][::-1]])  # the full spectrum, from its half
            z = rng.standard_normal(size) + 1j * rng.standard_normal(size)
            # Re(F (sqrt(eig / M) z)) has covariance exactly the circulant (so its corner, the Toeplitz)
            return np.fft.fft(np.sqrt(np.clip(eig, 0.0, None) / size) * z).real[:n], False
        size *= 2
    from scipy.linalg import toeplitz  # lazy: the registry imports nothing heavy

    return _eig_draw(toeplitz(term.stationary(np.arange(n, dtype=np.float64))), rng), True


def _eig_draw(cov: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A draw of N(0, cov) from its eigendecomposition (cov may be singular: linear, constant)."""
    w, v = np.linalg.eigh(cov)
    return v @ (np.sqrt(np.clip(w, 0.0, None)) * rng.standard_normal(len(w)))


def gp_draw(kernel: Kernel, n: int, rng: np.random.Generator, sampler: str) -> tuple[np.ndarray, int]:
    """One draw (n,) of GP(0, kernel) on t = 0..n-1, and how many terms fell back to a dense draw."""
    if sampler == "dense":
        return _eig_draw(kernel.matrix(n), rng), 0
    x = np.arange(n) / n
    out, fallbacks = np.zeros(n), 0
    for term in kernel.terms:
        if term.lags:
            g, dense = stationary_draw(term, n, rng)
            fallbacks += dense
        else:  # constant in the lag: one Gaussian for the whole series
            g = rng.standard_normal()
        out += math.sqrt(term.scale) * x**term.degree * g
    return out, fallbacks


def pfn_draw(rng: np.random.Generator, n: int, periods: list[int]) -> tuple[np.ndarray, dict[str, Any]]:
    """A ForecastPFN-style series (n,): trend x seasonality x Weibull noise, and its parameters."""
    t = np.arange(n, dtype=np.float64)
    x = t / n
    a, b = max(float(rng.normal(0.0, TREND_STD)), -0.9), float(rng.normal(0.0, TREND_STD))
    values = (1.0 + a * x) * np.exp(b * x)
    seasons = []
    for period in periods:
        amp, phase = float(rng.uniform(0.0, SEASON_MAX)), float(rng.uniform(0.0, 2 * np.pi))
        values *= 1.0 + amp * np.sin(2 * np.pi * t / period + phase)
        seasons.append({"period": period, "amplitude": amp, "phase": phase})
    shape, m = float(rng.uniform(*WEIBULL_SHAPE)), float(rng.uniform(0.0, NOISE_MAX))
    values *= 1.0 + m * (rng.weibull(shape, n) - math.gamma(1.0 + 1.0 / shape))
    return values, {"trend": {"linear": a, "exponential": b}, "seasons": seasons,
                    "noise": {"weibull_shape": shape, "weight": m}}


@dataclass
class KernelSynthConfig:
    n_series: int = 64
    length: int = 1024  # rows of the table: every channel's length
    seed: int = 0
    kernel_share: float = 0.5  # share of KernelSynth series; the rest are ForecastPFN-style
    max_kernels: int = 5  # J: a KernelSynth kernel composes 1..J bank kernels
    bank: list[str] = field(default_factory=lambda: list(BANK))
    periods: list[int] = field(default_factory=lambda: [4, 6, 7, 12, 14, 24, 30, 48, 52, 60, 96, 168, 336, 365, 720])
    sampler: str = "circulant"  # or dense (O(N^3) per series, N <= DENSE_MAX)
    downsample: list[int] = field(default_factory=list)  # TTM: each series also at these coarser factors
    mixes: int = 0  # TSMix: this many convex combinations of corpus series, appended
    mix_max: int = 3  # a mix combines 2..mix_max series
    mix_alpha: float = 1.5  # Dirichlet concentration of a mix's weights
    pfn_periods: list[int] = field(default_factory=lambda: [24, 168, 8766])  # daily, weekly, yearly (hours)

    def __post_init__(self) -> None:
        for key in ("n_series", "max_kernels"):
            check(getattr(self, key) >= 1, key, f"must be at least 1, got {getattr(self, key)}")
        check(self.length >= MIN_LENGTH, "length", f"must be at least {MIN_LENGTH} steps, got {self.length}")
        check(0.0 <= self.kernel_share <= 1.0, "kernel_share", f"must lie in [0, 1], got {self.kernel_share}")
        check(bool(self.bank) or self.kernel_share == 0, "bank", f"is empty; list kernels of {', '.join(BANK)}")
        unknown = [k for k in self.bank if k not in BANK]
        check(not unknown, "bank", f"unknown kernel(s) {unknown}; valid kernels: {', '.join(BANK)}")
        check(self.kernel_share == 0 or any(k != "constant" for k in self.bank), "bank",
              f"{self.bank} draws only flat series; add a non-constant kernel ({', '.join(BANK[:-1])})")
        check(all(p >= 2 for p in self.periods), "periods", f"must all be >= 2 steps, got {self.periods}")
        check(bool(self.periods) or "periodic" not in self.bank, "periods", "is empty but the bank has periodic")
        check(all(p >= 2 for p in self.pfn_periods), "pfn_periods", f"must all be >= 2 steps, got {self.pfn_periods}")
        check(self.sampler in ("circulant", "dense"), "sampler", f"must be circulant or dense, got {self.sampler!r}")
        check(all(f >= 2 for f in self.downsample), "downsample",
              f"factors must be >= 2 (1 is the series itself, always kept), got {self.downsample}")
        check(len(set(self.downsample)) == len(self.downsample), "downsample", f"repeats a factor: {self.downsample}")
        check(self.sampler != "dense" or self.generated_length <= DENSE_MAX, "sampler",
              f"dense factorises an N x N matrix per series: N = length x the largest downsample factor = "
              f"{self.generated_length} > {DENSE_MAX}; use circulant")
        check(self.mixes >= 0, "mixes", f"must be >= 0, got {self.mixes}")
        if self.mixes:
            check(2 <= self.mix_max <= self.n_series, "mix_max",
                  f"must lie in [2, n_series = {self.n_series}] (a mix combines distinct series), got {self.mix_max}")
            check(self.mix_alpha > 0, "mix_alpha", f"must be > 0, got {self.mix_alpha}")

    @property
    def factors(self) -> list[int]:
        """The resolutions each series is seen at, 1 (itself) first."""
        return [1, *sorted(self.downsample)]

    @property
    def generated_length(self) -> int:
        """N: steps drawn per series, so that its coarsest view still has ``length`` steps."""
        return self.length * max(self.factors)


def views(series: np.ndarray, length: int, factors: list[int]) -> list[np.ndarray]:
    """The series at each factor f: the means of its last ``length * f`` steps in blocks of f,
    ``length`` steps each (f = 1: its last ``length`` steps). All views end at the same time."""
    return [series[len(series) - length * f:].reshape(length, f).mean(axis=1) for f in factors]


class KernelSynthSource:
    Config = KernelSynthConfig

    def __init__(self, cfg: KernelSynthConfig, base_dir: Path | None = None, where: str = "dataset"):
        self.cfg = cfg

    def n_rows(self) -> int:
        return self.cfg.length

    def identity(self) -> str:
        return f"kernel_synth:{self.cfg}"

    def series(self, index: int) -> tuple[np.ndarray, dict[str, Any]]:
        """Base series ``index`` (generated_length,) float64 and its record: a function of
        (seed, index) and the generation settings, never of ``n_series``."""
        c, n = self.cfg, self.cfg.generated_length
        rng = np.random.default_rng([c.seed, SERIES_STREAM, index])
        if rng.random() < c.kernel_share:
            kernel = random_kernel(rng, n, c.bank, c.max_kernels, c.periods)
            values, fallbacks = gp_draw(kernel, n, rng, c.sampler)
            return values, {"family": "kernel_synth", "kernel": kernel.text, "dense_fallbacks": fallbacks}
        values, params = pfn_draw(rng, n, c.pfn_periods)
        return values, {"family": "forecast_pfn", **params}

    def mix(self, index: int, base: list[np.ndarray]) -> tuple[np.ndarray, dict[str, Any]]:
        """Mix ``index`` (TSMix): sum_i w_i x_i / mean|x_i| over 2..mix_max distinct base series,
        w ~ Dirichlet(mix_alpha); each component mean-scaled first so no one dominates by its units."""
        c = self.cfg
        rng = np.random.default_rng([c.seed, MIX_STREAM, index])
        k = int(rng.integers(2, c.mix_max + 1))
        parts = sorted(int(i) for i in rng.choice(c.n_series, size=k, replace=False))
        weights = rng.dirichlet(np.full(k, c.mix_alpha))
        values = sum(w * base[i] / np.abs(base[i]).mean() for w, i in zip(weights, parts))
        return values, {"family": "mix", "components": [f"s{i}" for i in parts], "weights": weights.tolist()}

    def generate(self) -> tuple[np.ndarray, list[str], dict[str, Any]]:
        """(length, channels) float32, the channel names, and each series' record.

        One channel per (series, factor): ``s{i}`` and ``m{j}`` at full resolution, ``s{i}_x{f}``
        at factor f; mixes ``m{j}`` follow the base series.
        """
        c = self.cfg
        base, records = [], {}
        for i in range(c.n_series):
            values, records[f"s{i}"] = self.series(i)
            base.append(values)
        whole = list(base)
        for j in range(c.mixes):
            values, records[f"m{j}"] = self.mix(j, base)
            whole.append(values)
        names = [*records]
        columns, channel_names = [], []
        for name, values in zip(names, whole):
            for f, view in zip(c.factors, views(values, c.length, c.factors)):
                columns.append(view)
                channel_names.append(name if f == 1 else f"{name}_x{f}")
        return np.stack(columns, axis=1).astype(np.float32), channel_names, records

    def load(self) -> tuple[pl.DataFrame, dict]:
        """The hourly table (channels renamed from ``ch{k}`` to the series' names) and what
        meta.json records: the generated length, the factors, each channel's series and factor,
        and each series' kernel formula or ForecastPFN parameters or mix weights."""
        values, names, records = self.generate()
        frame = hourly_frame(values).rename({f"ch{k}": name for k, name in enumerate(names)})
        c = self.cfg
        channels = {name: {"series": name.partition("_x")[0], "factor": int(name.partition("_x")[2] or 1)}
                    for name in names}
        info = {"kernel_synth": {
            "generated_length": c.generated_length, "sampler": c.sampler, "factors": c.factors,
            "dense_fallbacks": sum(r.get("dense_fallbacks", 0) for r in records.values()),
            "channels": channels, "series": records,
        }}
        return frame, info
