"""Small-sample statistics for the numbers the tuner reports: every speedup and every loss
comes with a confidence interval, and the decisions taken on them (stop timing, prune a
configuration, call two configurations equal) are stated here as tests on those intervals.

Pure Python: the results readers (`tuner show`, `tuner report`) import this without torch.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

CONFIDENCE = 0.95


# -- Student's t ------------------------------------------------------------------------------


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                   -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                     + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


@functools.lru_cache(maxsize=4096)  # every interval asks it, mostly at a few (p, df)
def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t distribution with `df` degrees of freedom."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        high *= 2.0
    for _ in range(100):  # bisection: monotone, and exact to double precision
        mid = (low + high) / 2.0
        if mid in (low, high):  # no double between them: done
            break
        if t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
    return (low + high) / 2.0


# -- intervals --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval, from `n` observations."""

    value: float
    low: float
    high: float
    n: int

    @property
    def relative_half_width(self) -> float:
        """The larger distance from the estimate to a bound, relative to the estimate."""
        if not self.value or not math.isfinite(self.high) or not math.isfinite(self.low):
            return math.inf
        return max(self.value - self.low, self.high - self.value) / abs(self.value)

    def overlaps(self, other: Interval) -> bool:
        return self.low <= other.high and other.low <= self.high

    def within(self, low: float, high: float) -> Interval:
        """Cut to the range the quantity can take: its coverage is unchanged (a true value
        inside the range is in the cut interval exactly when it is in this one)."""
        return Interval(min(max(self.value, low), high), max(self.low, low),
                        min(self.high, high), self.n)

    def undecided(self, threshold: float) -> bool:
        """Wider than `threshold` itself and holding it: the observations cannot tell on which
        side of it the quantity lies (a loss interval wider than the loss budget)."""
        return self.low <= threshold <= self.high and self.high - self.low > abs(threshold)

    def samples_to_decide(self, threshold: float, *, confidence: float = CONFIDENCE,
                          at_most: int = 100_000) -> int | None:
        """About how many observations would put `threshold` outside a mean's t-interval, if
        the estimate and the spread stayed as they are: the half-width t_(n-1) s / sqrt(n)
        shrinks to the estimate's distance from it. None when the estimate is on it, or more
        than `at_most` would be needed."""
        distance = abs(self.value - threshold)
        half = max(self.value - self.low, self.high - self.value)
        if self.n < 2 or distance == 0 or not math.isfinite(half):
            return None
        quantile = 0.5 + confidence / 2
        spread = half * math.sqrt(self.n) / t_quantile(quantile, self.n - 1)
        n = self.n
        while t_quantile(quantile, n - 1) * spread / math.sqrt(n) > distance:
            n = max(n + 1, int(n * 1.1))
            if n > at_most:
                return None
        return n

    def __str__(self) -> str:
        return f"{self.value:.3g} [{self.low:.3g}, {self.high:.3g}]"


@dataclass(frozen=True)
class Prior:
    """What earlier samples of the same kind say about the variance of one observation:
    `variance`, worth `df` degrees of freedom (see `mean_interval`)."""

    variance: float
    df: float

    def __post_init__(self):
        if self.variance < 0 or self.df < 0:
            raise ValueError(f"need variance >= 0 and df >= 0, got {self.variance}, {self.df}")


def ratio_interval(ratios: Sequence[float], confidence: float = CONFIDENCE,
                   prior: Prior | None = None, **options) -> Interval:
    """Geometric mean of speedup ratios with a t-interval on their logarithms (`prior`: of the
    variance of one log ratio; `options`: those of `mean_interval`, on the log scale).

    Ratios of latencies are log-normal rather than normal, and on the log scale a speedup and
    its inverse are symmetric. For log-symmetric noise the geometric mean is the median; unlike
    the sample median it has a usable interval at 3-8 observations. Untrusted measurements are
    set aside before (timing.Brackets), which is what the median's robustness was for.
    """
    if not ratios or min(ratios) <= 0:
        raise ValueError(f"need positive ratios, got {list(ratios)}")
    logs = mean_interval([math.log(r) for r in ratios], confidence, prior, **options)
    return Interval(math.exp(logs.value), math.exp(logs.low), math.exp(logs.high), logs.n)


def speedup_interval(trusted: Sequence[float], everything: Sequence[float],
                     prior: Prior | None = None, **options) -> Interval | None:
    """A speedup's interval from its trusted ratios (with `prior` and `ratio_interval`'s
    `options`); when none could be trusted, the value of all of them with an interval that
    says it is unknown (0, inf); None without any ratio. What timing.Brackets measures, and
    what a stored SpeedEstimate is computed again from."""
    if trusted:
        return ratio_interval(trusted, prior=prior, **options)
    if not everything:
        return None
    return Interval(ratio_interval(everything).value, 0.0, math.inf, len(everything))


def mean_interval(values: Sequence[float], confidence: float = CONFIDENCE,
                  prior: Prior | None = None, *, adjacent: int = 0, correlation: float = 0.0,
                  floor: float = 0.0, between: float = 0.0,
                  between_df: float = math.inf) -> Interval:
    """Mean with a t-interval; with a `prior`, a moderated one (see `mean_variance` for the
    other options). `between`: a variance added to the mean's (one known from elsewhere, e.g.
    between moments), estimated with `between_df` degrees of freedom: the t quantile's degrees
    of freedom are then Welch-Satterthwaite's for the sum (Satterthwaite 1946, "An approximate
    distribution of estimates of variance components")."""
    if not values:
        raise ValueError("no values")
    n, mean = len(values), statistics.fmean(values)
    if n < 2:  # one value says nothing of its own error, however alike the others were
        return Interval(mean, -math.inf, math.inf, n)
    variance, df = mean_variance(values, prior, adjacent=adjacent, correlation=correlation,
                                 floor=floor)
    # A `between` given as known (a floor, a guess) keeps the within part's degrees of
    # freedom: the guess is not worth more than the data beside it.
    if between > 0 and math.isfinite(between_df):
        df = (variance + between) ** 2 / (variance ** 2 / df + between ** 2 / max(between_df, 1))
    half = t_quantile(0.5 + confidence / 2, df) * math.sqrt(variance + between)
    return Interval(mean, mean - half, mean + half, n)


def mean_variance(values: Sequence[float], prior: Prior | None = None, *, adjacent: int = 0,
                  correlation: float = 0.0, floor: float = 0.0) -> tuple[float, float]:
    """The variance of the mean of `values` (at least two), and its degrees of freedom.

    * `prior`: with 3 observations the sample variance is so uncertain that the t quantile is
      4.3, and a configuration needs many more runs than its noise calls for. When many
      configurations are measured on one machine their variances are alike, so the sample
      variance is shrunk toward the pooled one: s2 = (d0 s0^2 + (n-1) s^2) / (d0 + n - 1), with
      d0 + n - 1 degrees of freedom: Smyth's moderated t statistic (Smyth 2004, "Linear models
      and empirical Bayes methods for assessing differential expression in microarray
      experiments", the same problem: thousands of genes, few replicates each). The caller
      estimates d0 and caps it (timing.PlainRuns.prior), because configurations do differ in
      noise.
    * `adjacent` of the values are correlated with the value after them by `correlation`, the
      others independent (bracketed ratios that share a plain run: about 1/6). Then the sample
      variance underestimates the variance of one value by the factor 1 - 2 rho m / (n (n-1))
      and the mean's variance is sigma^2 (1 + 2 rho m / n) / n (the variance of the mean of a
      stationary series, e.g. Box, Jenkins and Reinsel, "Time Series Analysis", sec. 2.1.5,
      with m = n - 1 there): both are corrected.
    * `floor`: the variance of one value is at least this (a bound known from elsewhere: the
      machine's own run-to-run jitter, which the sample may understate when its slowest
      values were set aside).
    """
    n = len(values)
    m = min(max(adjacent, 0), n - 1)
    df = float(n - 1)
    own = statistics.variance(values) / (1 - 2 * correlation * m / (n * (n - 1)))
    squares = df * own
    if prior is not None and prior.df > 0:
        df, squares = df + prior.df, squares + prior.df * prior.variance
    one = max(squares / df, floor)
    return one * (1 + 2 * correlation * m / n) / n, df


def relative_loss_interval(base: Sequence[float], accelerated: Sequence[float],
                           confidence: float = CONFIDENCE) -> Interval:
    """The relative loss (mean(base) - mean(accelerated)) / mean(base) from paired scores.

    The images are paired (same prompt, same seed), so the interval comes from the per-image
    differences d_i = b_i - a_i: the loss L = mean(d) / mean(b) is a ratio estimator whose
    standard error is sd(d_i - L * b_i) / (sqrt(n) * mean(b)) (the delta method). Pairing
    removes the prompt-to-prompt variation of the scores, which is much larger than the
    effect of an accelerator.
    """
    if len(base) != len(accelerated) or not base:
        raise ValueError(f"need paired scores, got {len(base)} and {len(accelerated)}")
    n, mean_base = len(base), statistics.fmean(base)
    if mean_base <= 0:
        return Interval(0.0, 0.0, 0.0, n)
    loss = (mean_base - statistics.fmean(accelerated)) / mean_base
    if n < 2:
        return Interval(loss, -math.inf, 1.0, 1)
    residuals = [(b - a) - loss * b for b, a in zip(base, accelerated)]
    se = statistics.stdev(residuals) / (math.sqrt(n) * mean_base)
    half = t_quantile(0.5 + confidence / 2, n - 1) * se
    # Scores are never negative, so no loss exceeds 100 %: the interval stops there.
    return Interval(loss, loss - half, loss + half, n).within(-math.inf, 1.0)


def sequential_confidence(looks: int, alpha: float = 1 - CONFIDENCE) -> float:
    """The two-sided confidence whose lower bound is a one-sided test at alpha / looks.

    Looking at an accumulating sample after every batch and stopping at the first "over budget"
    would make a false stop far likelier than alpha. Splitting alpha evenly over the planned
    looks (Bonferroni: a conservative form of Pocock's group-sequential boundaries, Pocock 1977)
    keeps the chance of any false stop under alpha. optuna's WilcoxonPruner applies the same
    idea, a test after every step on the paired values so far, against the best trial.
    """
    return 1 - 2 * alpha / max(1, looks)


def relative_spread(samples: Sequence[float]) -> float:
    """(max - min) / median."""
    if not samples:
        return 0.0
    median = statistics.median(samples)
    return (max(samples) - min(samples)) / median if median else 0.0


__all__ = ["CONFIDENCE", "Interval", "Prior", "mean_interval", "mean_variance", "ratio_interval",
           "relative_loss_interval", "relative_spread", "sequential_confidence",
           "speedup_interval", "t_cdf", "t_quantile"]
