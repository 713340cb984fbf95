"""Online anomaly detector: a streaming robust baseline plus an optional forecast interval.

Pure standard library (``math``) so it runs in the daemon's lean core process at a few
microseconds per sample. Each new sample is judged only against state built from the
samples before it, then folded into that state; nothing looks ahead.

The baseline is scale-free: a Huber-clipped EWMA of the level and of the mean absolute
deviation (sigma = 1.2533 * MAD for normal noise), with time constants counted in typical
sample spacings so irregular sampling and gaps are handled (a gap speeds adaptation, up to a
cap). Three deviations are scored, each in its own sigmas:

* point: ``x - level`` (spikes),
* short mean: a fast EWMA of ``x`` against the level, normalised by how far that fast mean
  usually strays (self-calibrating under autocorrelation; catches small level shifts),
* spread: log of the short-term mean absolute deviation over the long one, normalised the
  same way (variance increases only; scored only when both directions count).

With a forecast (Prophet's yhat and its interval turned into a sigma) the forecast deviation
beyond 2 sigma is scored too, and combined with the baseline by a geometric mean, so
expected seasonality does not alarm while both views must agree. Scores map to [0, 1]. Daily
and weekly likelihoods (:mod:`.likelihood`) score a usual value at an unusual time; the alert
takes the larger score, the baseline learns from its own.
"""

from __future__ import annotations

import logging
import math
from bisect import bisect_left, insort
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from gputuned.tuner.forecast.alerts import AlertState, Transition
from gputuned.tuner.forecast.likelihood import DAY_S, WEEK_S, SeasonalLikelihood, score_of

logger = logging.getLogger(__name__)

Direction = Literal["both", "up", "down"]
_SIGMA_PER_MAD = 1.2533  # sigma / mean absolute deviation for normal noise


@dataclass(frozen=True)
class DetectorConfig:
    """Tuning of one series' detector; all counts are in typical sample spacings."""

    warmup: int = 60
    tau_long: float = 300.0
    tau_short: float = 5.0
    tau_spread: float = 20.0
    tau_scale: float = 1800.0
    tail_ref: float = 4.0
    tail_cap: float = 30.0
    tail_tau: float = 6000.0
    learn_below: float = 3.0
    clip: float = 3.0
    gap_factor: float = 4.0
    gap_cap: float = 20.0
    z_start: float = 2.0
    z_half: float = 5.0
    spread_weight: float = 1.0
    direction: Direction = "both"
    accept_after: float = 200.0
    raise_at: float = 0.5
    raise_now: float = 0.8
    confirm: int = 2
    clear_at: float = 0.15
    clear_after: int = 30
    window: int = 1024
    window_lag: int = 128
    gate_q: float = 0.002
    gate_margin: float = 0.5
    gate_gain: float = 4.0
    gate_span: float = 0.05
    seasons: tuple[tuple[float, int, int], ...] = ((DAY_S, 48, 3), (WEEK_S, 168, 2))  # (period s, slots, visits)

    def __post_init__(self) -> None:
        if self.warmup < 3:
            raise ValueError("warmup must be at least 3 samples")
        for name in ("tau_long", "tau_short", "tau_spread", "clip", "gap_factor", "gap_cap"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if not 0.0 <= self.z_start < self.z_half:
            raise ValueError("need 0 <= z_start < z_half")
        if not 0 <= self.window_lag < self.window or not 0.0 <= self.gate_q < 0.5:
            raise ValueError("need 0 <= window_lag < window and 0 <= gate_q < 0.5")
        if self.direction not in ("both", "up", "down"):
            raise ValueError(f"direction must be both, up or down, not {self.direction!r}")


@dataclass
class Judgement:
    """What the detector concluded about one sample."""

    score: float
    alert: bool
    transition: Transition | None
    z: float


@dataclass
class _State:
    n: int = 0
    t_last: float = math.nan
    log_dt: float = math.nan
    warm: list[float] = field(default_factory=list)
    level: float = 0.0
    mad: float = 0.0
    short: float = 0.0
    short_mad: float = 0.0
    spread: float = 0.0
    spread_mad: float = 0.0
    resolution: float = math.inf
    x_last: float = math.nan
    anomalous_run: float = 0.0
    z_short: float = 0.0
    tail: float = 0.0
    n_scale: int = 0
    z_spread: float = 0.0
    z_innovation: float = 0.0
    local_mad: float = 0.0
    in_range: bool = False


class _LaggedRange:
    """Sorted values of the samples from ``window`` to ``lag`` samples ago, for the seen-before gate."""

    def __init__(self, window: int, lag: int, q: float) -> None:
        self.size, self.lag = window - lag, lag
        self.pending: deque[float] = deque()
        self.order: deque[float] = deque()
        self.sorted: list[float] = []
        self.q = q
        self.range: tuple[float, float] | None = None

    def push(self, x: float) -> None:
        pending = self.pending
        pending.append(x)
        if len(pending) > self.lag:
            y = pending.popleft()
            vals = self.sorted
            insort(vals, y)
            self.order.append(y)
            if len(self.order) > self.size:
                del vals[bisect_left(vals, self.order.popleft())]
            n = len(vals)
            if n >= 32:  # the q and 1-q quantiles by rank, kept for the samples until the next push
                k = int(self.q * n)
                self.range = (vals[k], vals[n - 1 - k])


class OnlineDetector:
    """Streaming anomaly score and stateful alert for one series."""

    #: smoothing factors by weight per set of time constants, shared: bounded for all series, not each
    _ALPHAS: dict[tuple[float, ...], dict[float, tuple[float, float, float, float, float]]] = {}

    def __init__(self, config: DetectorConfig | None = None) -> None:
        self.config = config or DetectorConfig()
        self._s = _State()
        c = self.config
        self._values = _LaggedRange(c.window, c.window_lag, c.gate_q)
        self._shorts = _LaggedRange(c.window, c.window_lag, c.gate_q)
        self._cache = self._ALPHAS.setdefault((c.tau_long, c.tau_short, c.tau_spread, c.tau_scale, c.tail_tau), {})
        self._seasons = [SeasonalLikelihood(p, k, v) for p, k, v in c.seasons]
        self.alert = AlertState(
            self.config.raise_at, self.config.raise_now, self.config.confirm,
            self.config.clear_at, self.config.clear_after,
        )

    @property
    def samples_seen(self) -> int:
        """Samples folded into the baseline so far."""
        return self._s.n

    def level(self) -> float:
        """Current baseline level (NaN during warm-up)."""
        return self._s.level if self._s.n >= self.config.warmup else math.nan

    def update(self, t: float, x: float, forecast: tuple[float, float] | None = None) -> Judgement:
        """Judge sample ``x`` at time ``t`` (seconds), then learn from it.

        ``forecast`` is ``(yhat, sigma)`` at ``t`` when a fresh forecast exists.
        """
        if not math.isfinite(x):
            return Judgement(0.0, self.alert.active, None, 0.0)
        s, c = self._s, self.config
        w = self._weight(t)
        if s.n < c.warmup:
            self._warm(x)
            s.n += 1
            return Judgement(0.0, False, None, 0.0)
        seasonal = self._seasonal_score(t, x)
        z, base = self._baseline_score(x, w)
        score = base
        if forecast is not None and forecast[1] > 0.0 and math.isfinite(forecast[0]):
            zf = self._directed((x - forecast[0]) / forecast[1])
            score = math.sqrt(base * score_of(zf, c.z_start, c.z_half))
        transition = self.alert.step(t, max(score, seasonal))
        self._learn(x, w, score)  # the baseline learns from its own score only
        s.n += 1
        return Judgement(max(score, seasonal), self.alert.active, transition, z)

    # --- intended changes (the forecast service's settle windows) -----------------------
    def rebase(self, level: float) -> None:
        """Take ``level`` as the new normal after an intended change (a tuner or operator move).

        The baseline and the fast mean move to ``level`` (during warm-up: the samples gathered
        so far move by the same step, keeping their count and spread); the scales, the tail and
        the alert stay. The seen-before ranges start again, so levels visited on the way to it
        are not later taken as normal.
        """
        s, c = self._s, self.config
        if not math.isfinite(level):
            return
        if s.n < c.warmup:
            if s.warm:
                shift = level - sorted(s.warm)[len(s.warm) // 2]
                s.warm = [x + shift for x in s.warm]
        else:
            s.level = s.short = level
            s.anomalous_run = 0.0
        s.x_last = math.nan  # the step to the new level is the change's, not the series' resolution
        for season in self._seasons:
            season.reset_recent()
        self._values = _LaggedRange(c.window, c.window_lag, c.gate_q)
        self._shorts = _LaggedRange(c.window, c.window_lag, c.gate_q)

    # --- internals ---------------------------------------------------------------------
    def _weight(self, t: float) -> float:
        """Elapsed time in typical sample spacings (1 for regular sampling), capped for gaps."""
        s, c = self._s, self.config
        dt = t - s.t_last if math.isfinite(s.t_last) else math.nan
        s.t_last = t
        if not math.isfinite(dt) or dt <= 0.0:
            return 1.0
        if not math.isfinite(s.log_dt):
            s.log_dt = math.log(dt)
            return 1.0
        typical = math.exp(s.log_dt)
        w = dt / typical
        if w < c.gap_factor:  # gaps do not teach the spacing
            s.log_dt += 0.05 * (math.log(dt) - s.log_dt)
        return round(min(max(w, 0.05), c.gap_cap), 3)  # quantised: the smoothing factors are cached

    def _alphas(self, w: float) -> tuple[float, float, float, float, float]:
        """Smoothing factors (long, short, spread, scale, tail decay) for weight ``w``."""
        a = self._cache.get(w)
        if a is None:
            c = self.config
            if len(self._cache) > 4096:
                self._cache.clear()
            a = self._cache[w] = (1.0 - math.exp(-w / c.tau_long), 1.0 - math.exp(-w / c.tau_short),
                                  1.0 - math.exp(-w / c.tau_spread), 1.0 - math.exp(-w / c.tau_scale),
                                  math.exp(-w / c.tail_tau))
        return a

    def _seasonal_score(self, t: float, x: float) -> float:
        """The largest seasonal likelihood score of ``x`` against the baseline before it."""
        s = self._s
        sigma = max(_SIGMA_PER_MAD * s.mad, self._floor())
        spacing = math.exp(s.log_dt) if math.isfinite(s.log_dt) else 1.0
        return max((season.update(t, x, s.level, sigma, spacing) for season in self._seasons), default=0.0)

    def _floor(self) -> float:
        s = self._s
        res = s.resolution if math.isfinite(s.resolution) else 0.0
        return max(0.5 * res, 1e-6 * abs(s.level), 1e-12)

    def _directed(self, z: float) -> float:
        d = self.config.direction
        if d == "up":
            return z
        if d == "down":
            return -z
        return abs(z)

    def _baseline_score(self, x: float, w: float) -> tuple[float, float]:
        s, c = self._s, self.config
        floor = self._floor()
        sigma = max(_SIGMA_PER_MAD * s.mad, floor)
        z_point = (x - s.level) / sigma
        # heavy-tailed series: a point counts in units of the largest recent normal deviation
        z_point = self._gate(z_point, x, self._values, sigma)
        # the same sample against the fast mean, in the short-term noise's own scale: a jump
        # stands out even where a slow pattern (a daily cycle) has widened the level's scale
        local_sigma = max(_SIGMA_PER_MAD * s.local_mad, floor)
        z_local = (x - s.short) / local_sigma
        s.z_innovation = abs(z_local)
        z_local = self._gate(z_local, x, self._values, local_sigma)
        if self._directed(z_local) > self._directed(z_point):
            z_point = z_local
        z_point *= c.tail_ref / max(c.tail_ref, s.tail)
        _, a_short, a_sp, _, _ = self._alphas(w)
        b = self._values.range
        # the fast mean resists outliers (Huber clip), but not values the series has shown before
        s.in_range = b is not None and b[0] <= x <= b[1]
        bound = math.inf if s.in_range else c.clip * sigma
        short = s.short + a_short * max(-bound, min(bound, x - s.short))
        short_sigma = max(_SIGMA_PER_MAD * s.short_mad, floor)
        z_short = (short - s.level) / short_sigma
        s.z_short = abs(z_short)
        z_short = self._gate(z_short, short, self._shorts, short_sigma)
        best = max(self._directed(z_point), self._directed(z_short))
        zs = 0.0
        if c.direction == "both" and s.spread_mad > 0.0 and s.mad > 0.0:
            dev = min(abs(x - s.level), 10.0 * sigma)
            spread = s.spread + a_sp * (dev - s.spread)
            log_ratio = math.log(max(spread, 1e-300) / s.mad)
            zs = c.spread_weight * log_ratio / (_SIGMA_PER_MAD * s.spread_mad)
        s.z_spread = zs
        if zs > 0.0:  # a wider spread made of values seen before is not news either
            zs = min(zs, self._gate(zs, x, self._values, sigma), -self._gate(-zs, x, self._values, sigma))
        z = max(best, zs)
        return z, score_of(z, c.z_start, c.z_half)

    def _gate(self, z: float, x: float, seen: _LaggedRange, sigma: float) -> float:
        """Cap a deviation by how far ``x`` lies beyond the range of values seen recently.

        A value within what the series did between ``window`` and ``window_lag`` samples ago
        (a daily cycle, a recurring load pattern, a regime already accepted) is not news,
        whatever the baseline level says; beyond it, the cap grows with the distance.
        """
        c = self.config
        b = seen.range
        if b is None:
            return z
        margin = max(c.gate_margin * sigma, c.gate_span * (b[1] - b[0]))
        if z > 0.0:
            return min(z, c.z_start + c.gate_gain * max(x - b[1] - margin, 0.0) / sigma)
        return max(z, -(c.z_start + c.gate_gain * max(b[0] - margin - x, 0.0) / sigma))

    def _warm(self, x: float) -> None:
        s, c = self._s, self.config
        self._note_resolution(x)
        self._values.push(x)
        s.warm.append(x)
        if len(s.warm) < c.warmup:
            return
        xs = sorted(s.warm)
        mid = len(xs) // 2
        med = xs[mid] if len(xs) % 2 else 0.5 * (xs[mid - 1] + xs[mid])
        s.level = s.short = med
        s.mad = sum(abs(v - med) for v in xs) / len(xs)
        s.spread = s.mad
        tail = s.warm[-c.warmup // 2 :]
        short_dev = abs(sum(tail) / len(tail) - med)
        s.short_mad = max(short_dev, s.mad / math.sqrt(2.0 * c.tau_short))
        s.spread_mad = 0.25
        steps = [abs(b - a) for a, b in zip(s.warm, s.warm[1:], strict=False)]
        s.local_mad = max(0.8 * sum(steps) / len(steps), s.mad / math.sqrt(2.0 * c.tau_short))
        # the warm-up's own extremes start the tail estimate: a heavy tail seen early is known
        s.tail = max(abs(v - med) for v in xs) / max(_SIGMA_PER_MAD * s.mad, self._floor())
        s.warm = []
        s.n_scale = c.warmup

    def _note_resolution(self, x: float) -> None:
        s = self._s
        if math.isfinite(s.x_last):
            d = abs(x - s.x_last)
            if 0.0 < d < s.resolution:
                s.resolution = d
        s.x_last = x

    def _learn(self, x: float, w: float, score: float) -> None:
        s, c = self._s, self.config
        self._note_resolution(x)
        self._values.push(x)
        floor = self._floor()
        sigma = max(_SIGMA_PER_MAD * s.mad, floor)
        a_long, a_short, a_sp, a_scale, tail_decay = self._alphas(w)
        # warm start: the scales average their first samples plainly, then forget slowly
        a_scale = max(a_scale, 1.0 / (s.n_scale + 2.0))
        s.anomalous_run = s.anomalous_run + w if score >= c.clear_at else 0.0
        err = x - s.level
        bound = c.clip * sigma
        if s.anomalous_run > c.accept_after:
            # a regime that has lasted this long is the new normal: follow it quickly
            s.level += a_short * err
        else:
            s.level += a_long * max(-bound, min(bound, err))
        innovation = abs(x - s.short)
        s.short += a_short * max(-bound, min(bound, x - s.short)) if not s.in_range else a_short * (x - s.short)
        self._shorts.push(s.short)
        s.spread += a_sp * (min(abs(err), 10.0 * sigma) - s.spread)
        s.tail *= tail_decay
        if s.z_spread < c.clip:  # a spread increase is an anomaly, not a heavier tail
            # the tail is that of the jumps from the fast mean: a slow pattern is not a heavy tail
            s.tail = max(s.tail, min(s.z_innovation, c.tail_cap))
        if s.z_short >= c.learn_below or score >= c.clear_at:
            return  # scales learn only from normal stretches, so a drift cannot hide in them
        s.n_scale += 1
        s.mad += a_scale * (min(abs(err), bound) - s.mad)
        local_sigma = max(_SIGMA_PER_MAD * s.local_mad, floor)
        s.local_mad += a_scale * (min(innovation, c.clip * local_sigma) - s.local_mad)
        short_sigma = max(_SIGMA_PER_MAD * s.short_mad, floor)
        s.short_mad += a_scale * (min(abs(s.short - s.level), c.clip * short_sigma) - s.short_mad)
        if s.mad > 0.0 and s.spread > 0.0:
            lr = abs(math.log(s.spread / s.mad))
            s.spread_mad += a_scale * (min(lr, 3.0 * s.spread_mad + 0.05) - s.spread_mad)
