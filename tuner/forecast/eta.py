"""Degradation ahead: predicted seconds until a trending series crosses its limit.

Samples are averaged into fixed buckets; when a bucket closes, a least-squares line through
the last ``window`` bucket means gives the trend and its standard error. Only a trend that is
significant (``|slope| / se >= t_min``) and heads towards the limit yields a finite time,
unless the trend decelerates towards a plateau short of the limit (a temperature settling
after a load change); otherwise the time is +inf. A series already past its limit has time 0.

Limits are absolute (temperature to its slowdown point), relative to another series of the
same device (memory used to memory total) or a fraction of the series' own baseline
(throughput down to 90 % of what it usually is; the baseline is a quantile of the bucket
means of the last hours).

Where a forecast exists (:meth:`DegradationEta.set_forecast`) and the last bucket mean lies
inside its 2-sigma band, the time is read off the forecast's path instead: the first time its
yhat reaches the limit (a daily peak that stays short of the limit gives +inf, however steep
the morning rise). A bucket outside the band means the forecast no longer describes the
series (a new fault): the local trend decides. Pure numpy and standard library.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from gputuned.tuner.forecast.alerts import Transition
from gputuned.tuner.forecast.band import Grid, crossing_eta, forecast_at, outside

if TYPE_CHECKING:
    import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EtaConfig:
    """Bucket size, trend window and the alert horizon of the degradation-ahead estimate."""

    bucket_s: float = 60.0
    window: int = 30
    min_buckets: int = 8
    t_min: float = 4.0
    horizon_s: float = 1800.0
    clear_factor: float = 2.0
    confirm: int = 2
    clear_after: int = 3
    baseline_buckets: int = 360

    def __post_init__(self) -> None:
        if self.bucket_s <= 0 or self.horizon_s <= 0:
            raise ValueError("bucket_s and horizon_s must be positive")
        if not 3 <= self.min_buckets <= self.window:
            raise ValueError("need 3 <= min_buckets <= window")


@dataclass(frozen=True)
class Limit:
    """Where a series degrades: ``kind`` absolute (value), reference (fraction of another
    series with the same labels, named by ``reference``) or baseline (fraction of its own)."""

    direction: Literal["up", "down"]
    kind: Literal["absolute", "reference", "baseline"]
    value: float
    reference: str = ""

    def __post_init__(self) -> None:
        if self.kind == "reference" and not self.reference:
            raise ValueError("a reference limit needs the reference family name")
        if self.kind in ("reference", "baseline") and self.value <= 0:
            raise ValueError("a fractional limit must be positive")


class DegradationEta:
    """Streaming time-to-limit estimate with its own hysteresis alert."""

    def __init__(self, limit: Limit, config: EtaConfig | None = None) -> None:
        self.limit = limit
        self.config = config or EtaConfig()
        self.eta_s = math.inf
        self.limit_value = math.nan
        self.active = False
        self.since = math.nan
        self._bucket_start = math.nan
        self._sum = 0.0
        self._n = 0
        self._ref = math.nan
        self._t: deque[float] = deque(maxlen=self.config.window)
        self._y: deque[float] = deque(maxlen=self.config.window)
        self._history: deque[float] = deque(maxlen=self.config.baseline_buckets)
        self._near = 0
        self._far = 0
        self._grid: Grid = {}
        self._z_iw = 1.0
        self.from_forecast = False

    def set_forecast(self, grid: Grid, z_iw: float) -> None:
        """Use this forecast grid (times, yhat, lo, hi; ``z_iw`` turns lo..hi into sigmas) from now on."""
        self._grid, self._z_iw = grid, z_iw

    def update(self, t: float, x: float, reference: float | None = None) -> Transition | None:
        """Fold in one sample; when a bucket closes, re-estimate and step the alert."""
        if not math.isfinite(x):
            return None
        if reference is not None and math.isfinite(reference):
            self._ref = reference
        b = self.config.bucket_s
        if not math.isfinite(self._bucket_start):
            self._bucket_start = t - t % b
        transition = None
        if t >= self._bucket_start + b and self._n:
            mid = self._bucket_start + 0.5 * b
            self._close(mid, self._sum / self._n)
            transition = self._step(t)
            self._bucket_start = t - t % b
            self._sum, self._n = 0.0, 0
        self._sum += x
        self._n += 1
        return transition

    def _close(self, t_mid: float, mean: float) -> None:
        self._t.append(t_mid)
        self._y.append(mean)
        self._history.append(mean)
        self.limit_value = self._limit_value()
        self.eta_s = self._estimate()

    def _limit_value(self) -> float:
        lim = self.limit
        if lim.kind == "absolute":
            return lim.value
        if lim.kind == "reference":
            return lim.value * self._ref if math.isfinite(self._ref) else math.nan
        if len(self._history) < self.config.min_buckets:
            return math.nan
        q = 0.9 if lim.direction == "down" else 0.5
        import numpy as np  # deferred: the daemon's config reads this module; only the forecaster fits

        return lim.value * float(np.quantile(np.fromiter(self._history, float), q))

    def _estimate(self) -> float:
        c, lim = self.config, self.limit_value
        if not math.isfinite(lim) or len(self._y) < c.min_buckets:
            return math.inf
        import numpy as np

        t = np.fromiter(self._t, float)
        y = np.fromiter(self._y, float)
        t0 = t - t[-1]
        tm, ym = t0.mean(), y.mean()
        sxx = float(((t0 - tm) ** 2).sum())
        if sxx <= 0.0:
            return math.inf
        slope = float(((t0 - tm) * (y - ym)).sum()) / sxx
        now_fit = ym + slope * (0.0 - tm)
        up = self.limit.direction == "up"
        if (up and y[-1] >= lim) or (not up and y[-1] <= lim):
            return 0.0
        fc = forecast_at(self._grid, float(t[-1]), self._z_iw, c.bucket_s)
        self.from_forecast = fc is not None and not outside(float(y[-1]), fc, "both")
        if self.from_forecast:
            return crossing_eta(self._grid, float(t[-1]), lim, up)
        resid = y - (ym + slope * (t0 - tm))
        dof = max(len(y) - 2, 1)
        se = math.sqrt(float((resid**2).sum()) / dof / sxx)
        toward = slope > 0.0 if up else slope < 0.0
        if not toward or (se > 0.0 and abs(slope) / se < c.t_min):
            return math.inf
        if self._plateau_short_of(y, lim, up):
            return math.inf
        return max((lim - now_fit) / slope, 0.0)

    @staticmethod
    def _plateau_short_of(y: np.ndarray, lim: float, up: bool) -> bool:
        """True when a decelerating trend levels off before the limit.

        A temperature settling after a load change approaches its plateau exponentially;
        a straight line through it would cross any limit. With the window's thirds' means
        m1, m2, m3 and steps d1, d2 shrinking by r = d2 / d1, the plateau is
        m3 + d2 * r / (1 - r) (a geometric series).
        """
        k = len(y) // 3
        if k < 2:
            return False
        y = y[-3 * k :]  # equal thirds, so both steps span the same time
        m1, m2, m3 = float(y[:k].mean()), float(y[k : 2 * k].mean()), float(y[2 * k :].mean())
        d1, d2 = m2 - m1, m3 - m2
        if d1 == 0.0 or d2 / d1 <= 0.0 or d2 / d1 >= 0.9:
            return False
        r = d2 / d1
        plateau = m3 + d2 * r / (1.0 - r)
        return plateau < lim if up else plateau > lim

    def _step(self, t: float) -> Transition | None:
        c = self.config
        if not self.active:
            self._near = self._near + 1 if self.eta_s < c.horizon_s else 0
            if self._near >= c.confirm:
                self.active, self.since, self._far = True, t, 0
                return "raised"
            return None
        self._far = self._far + 1 if self.eta_s > c.clear_factor * c.horizon_s else 0
        if self._far >= c.clear_after:
            self.active, self._near = False, 0
            return "cleared"
        return None
