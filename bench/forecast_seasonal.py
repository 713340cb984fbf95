"""Does a forecast change alerts on seasonal series? Prophet, the linear fitter and the detector alone.

    .venv/bin/python bench/forecast_seasonal.py [--seeds 3] [--band-samples 10] [--nab PATH | --no-nab]

Every series runs through the daemon's own ``ForecastService`` (online detector, degradation
ETA, band rule), with fits done in-process by ``InlineWorker`` on the sample clock, so a run
is deterministic and every mode sees the same fits at the same times. Modes:

* ``detector alone``: ``fitter = "none"``;
* ``linear`` and ``prophet``: that fitter's forecast feeds the detector and the ETA;
* ``... + band``: the same, with the band rule (outside the 2-sigma band for N samples) on.

Series: the synthetic seasonal set of ``forecast_seasonal_synth`` (utilisation and temperature,
8 days at 1 sample/min, faults none, night_load, step, ramp; ``--seeds`` of each) and, from the
NAB mirror, the two real series with daily cycles and labelled failures (nyc_taxi: half-hourly
taxi demand with daily and weekly cycles; ambient_temperature_system_failure: hourly room
temperature). Counted: alerts raised (any kind), faults detected (a raise from the fault's start
to 1 h after its end; NAB: inside its labelled window), delay of the first such raise, and
false alerts (raises outside every window). Config as shipped except: one history point per
sample (downsample = the sampling step), first fit after ``--first-fit-h`` hours, refit every
``--refit-h`` hours (NAB: 15 days of history so weekly seasonality can be fitted, a refit every
``--nab-refit-d`` days). ``--fit-cache`` keeps the fits, so other band settings rerun in seconds.
"""

from __future__ import annotations

import json
import logging
import pickle
import statistics
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from io import StringIO

from _common import BenchParser, positive_float, positive_int, progress
from forecast_seasonal_synth import BACKGROUNDS, DAY_S, FAMILY, KINDS, STEP_S, make_seasonal

from gputuned.tuner.forecast.config import ForecastConfig, SeriesSpec
from gputuned.tuner.forecast.csvio import read_series
from gputuned.tuner.forecast.eta import Limit
from gputuned.tuner.forecast.service import ForecastService
from gputuned.tuner.forecast.worker import InlineWorker

T0 = 1.7040672e9  # a Monday, 00:00 UTC
GPU = (("gpu", "0"), ("uuid", "GPU-0"), ("model", "Sim"), ("pci_bus_id", "0000:01:00.0"))
NAB_FILES = ("realKnownCause/nyc_taxi.csv", "realKnownCause/ambient_temperature_system_failure.csv")
SPECS = {
    "utilisation": SeriesSpec(FAMILY["utilisation"], "both"),
    "temperature": SeriesSpec(FAMILY["temperature"], "up", Limit("up", "absolute", 85.0)),
}


@dataclass
class Tally:
    """One mode's counts over a set of series: series, faults, detected, raised, false; delays; detected by fault."""

    n: Counter[str] = field(default_factory=Counter)
    delays_min: list[float] = field(default_factory=list)
    by_kind: Counter[str] = field(default_factory=Counter)

    def add(self, raises: list[tuple[float, str]], windows: list[tuple[float, float]], kind: str) -> None:
        """Fold in one series' raises (time, alert kind) against its fault windows."""
        self.n["series"] += 1
        self.n["raised"] += len(raises)
        self.n["false"] += sum(1 for t, _ in raises if not any(a <= t <= b for a, b in windows))
        for a, b in windows:
            self.n["faults"] += 1
            hits = [t for t, _ in raises if a <= t <= b]
            if hits:
                self.n["detected"] += 1
                self.delays_min.append((min(hits) - a) / 60.0)
                self.by_kind[kind] += 1


def modes(bands: list[int]) -> dict[str, tuple[str, int]]:
    """Mode name: (fitter, band_samples)."""
    out = {"detector alone": ("none", 0)}
    for fitter in ("linear", "prophet"):
        out[fitter] = (fitter, 0)
        out.update({f"{fitter} + band {n}": (fitter, n) for n in bands})
    return out


def run_series(spec: SeriesSpec, t: list[float], x: list[float], cfg: ForecastConfig,
               cache: dict) -> list[tuple[float, str]]:
    """Raises (time, kind) of the service over one series, fits done inline on the sample clock."""
    svc = ForecastService(cfg.model_copy(update={"series": (spec,)}))
    svc.start_inline(InlineWorker(cache))
    raised: list[tuple[float, str]] = []
    svc.add_alert_hook(lambda a: raised.append((a.since, a.kind)))
    fam = spec.family
    for ti, xi in zip(t, x, strict=True):
        svc.observe(ti, [(fam, GPU, xi)])
    return raised


def synthetic(args, table: dict[str, dict[str, Tally]]) -> None:
    """Run every mode over the synthetic seasonal set."""
    import numpy as np

    base = dict(downsample_s=STEP_S, first_fit_after_s=args.first_fit_h * 3600.0, refit_period_s=args.refit_h * 3600.0)
    cases = [(bg, kind, seed) for bg in BACKGROUNDS for kind in KINDS for seed in range(args.seeds)]
    for bg, kind, seed in progress(cases, "synthetic"):
        s = make_seasonal(np.random.default_rng(1000 * seed + 7 * KINDS.index(kind) + BACKGROUNDS.index(bg)), kind, bg)
        t, x = (T0 + s.t).tolist(), s.x.tolist()
        windows = [] if kind == "none" else [(T0 + s.start, T0 + s.end + 3600.0)]
        cache = args.fits.setdefault((bg, kind, seed, args.first_fit_h, args.refit_h), {})
        for name, (fitter, band) in modes(args.band_samples).items():
            cfg = ForecastConfig(fitter=fitter, band_samples=band, **base)  # type: ignore[arg-type]
            raises = run_series(SPECS[bg], t, x, cfg, cache)
            table[name].setdefault(bg, Tally()).add(raises, windows, kind)


def nab(args, table: dict[str, dict[str, Tally]]) -> None:
    """Run every mode over the NAB series with daily cycles."""
    labels = json.loads(_git_show(args.nab, "labels/combined_windows.json"))
    for rel in progress(NAB_FILES, "nab"):
        series = read_series(StringIO(_git_show(args.nab, f"data/{rel}")), rel, allow_unsorted=True)
        step = statistics.median(b - a for a, b in zip(series.times, series.times[1:], strict=False))
        windows = [tuple(_unix(w) for w in pair) for pair in labels[rel]]
        cfg_base = dict(downsample_s=step, history_s=15 * DAY_S, first_fit_after_s=2 * DAY_S,
                        refit_period_s=args.nab_refit_d * DAY_S)
        spec = SeriesSpec("nab_value", "both")
        cache = args.fits.setdefault((rel, args.nab_refit_d), {})
        for name, (fitter, band) in modes(args.band_samples).items():
            cfg = ForecastConfig(fitter=fitter, band_samples=band, **cfg_base)  # type: ignore[arg-type]
            raises = run_series(spec, series.times, series.values, cfg, cache)
            table[name].setdefault("NAB " + rel.split("/")[1].removesuffix(".csv"), Tally()).add(raises, windows, "nab")


def _git_show(repo: str, rel: str) -> str:
    return subprocess.run(["git", "-C", repo, "show", f"HEAD:{rel}"], check=True, capture_output=True, text=True).stdout


def _unix(text: str) -> float:
    from datetime import UTC, datetime

    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def report(table: dict[str, dict[str, Tally]]) -> None:
    """The table as markdown: one row per mode and series set."""
    print("| series | mode | series run | faults detected | median delay (min) | false alerts | alerts raised |")
    print("|---|---|---:|---:|---:|---:|---:|")
    sets = sorted({s for per in table.values() for s in per})
    for s in sets:
        for name, per in table.items():
            tl = per.get(s)
            if tl is None:
                continue
            delay = f"{statistics.median(tl.delays_min):.0f}" if tl.delays_min else "-"
            kinds = ", ".join(f"{k} {v}" for k, v in sorted(tl.by_kind.items()))
            n = tl.n
            print(f"| {s} | {name} | {n['series']} | {n['detected']}/{n['faults']} ({kinds}) | {delay} | {n['false']} "
                  f"| {n['raised']} |")


def main() -> int:
    """Run the synthetic set and the NAB series, print the table."""
    ap = BenchParser(description=__doc__)
    ap.add_argument("--seeds", type=positive_int, default=1, help="synthetic series per background and fault")
    ap.add_argument("--band-samples", type=lambda v: [int(n) for n in v.split(",")], default=[10, 30],
                    help="N of the band rule in the '+ band' modes, comma-separated")
    ap.add_argument("--first-fit-h", type=positive_float, default=24.0, help="synthetic: first fit after this many hours")
    ap.add_argument("--refit-h", type=positive_float, default=12.0, help="synthetic: refit period in hours")
    ap.add_argument("--nab-refit-d", type=positive_float, default=2.0, help="NAB: refit period in days")
    ap.add_argument("--fit-cache", metavar="PICKLE", help="keep fits here and reuse them (same series, same settings)")
    ap.add_argument("--nab", default="/work/.mirror/numenta+NAB/repo", help="NAB git mirror")
    ap.add_argument("--no-nab", action="store_true", help="synthetic series only")
    ap.add_argument("--no-synthetic", action="store_true", help="NAB series only")
    args = ap.parse_args()
    logging.getLogger("gputuned").setLevel(logging.ERROR)
    args.fits = {}
    if args.fit_cache:
        try:
            with open(args.fit_cache, "rb") as f:
                args.fits = pickle.load(f)
        except FileNotFoundError:
            pass
    table: dict[str, dict[str, Tally]] = {name: {} for name in modes(args.band_samples)}
    began = time.perf_counter()
    if not args.no_synthetic:
        synthetic(args, table)
    if not args.no_nab:
        nab(args, table)
    if args.fit_cache:
        with open(args.fit_cache, "wb") as f:
            pickle.dump(args.fits, f)
    report(table)
    print(f"\n{time.perf_counter() - began:.0f} s; delays are minutes from the fault's start (NAB: window start)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
