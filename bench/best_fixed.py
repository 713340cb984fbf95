"""The best fixed (batch size, power limit, SM-clock lock) setting within a slowdown budget, on the simulator.

Usage:
  python bench/best_fixed.py [--profile P] [--gpus N] [--workloads a,b] [--budget X] [--no-clocks] [--seed S]

A hindsight bound (an oracle read from the simulator's steady state, ``measure_fixed``: 300
simulated seconds after a 30 s warm-up; not something the daemon could do): the least energy to
target whose time to target is within ``budget`` of the default's (batch b0, default limit,
unlocked). The search is coarse, then refined:

1. every batch size the tuner reaches (b0/16 to 64 b0, doubling) at the maximum limit, unlocked:
   a size already slower than the budget there stays slower under any lower limit or clock;
2. for each size within the budget, power limits on a 10% grid of the range and SM-clock locks
   [f, f] on a 10% grid of the clock range (at the maximum limit), each walked down until the
   budget is exceeded;
3. around the best: the limits one 5% step either side, and locks every 15 MHz within 5% of the
   clock range either side, each lock also with the neighbouring limits.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from typing import Any

from _common import BenchParser, gpu_profile, positive_float, positive_int, workload_list

Setting = tuple[float, float, int | None]  # batch multiple, power limit (W), SM-clock lock (MHz; None: unlocked)
MULTS = (1.0, *(2.0 ** k for k in range(-4, 7) if k))


def best_fixed(profile: str, gpus: int, workload: str, seed: int, budget: float, clocks: bool = True) -> dict[str, Any]:
    """The best fixed setting within ``budget``: energy and time to target over the default's, and the setting."""
    from gputuned.collectors.sim.node import measure_fixed
    from gputuned.collectors.sim.state import load_profile
    from gputuned.collectors.sim.workload import load_workload

    prof, b0 = load_profile(profile), load_workload(workload).default_batch_size
    seen: dict[Setting, tuple[float, float] | None] = {}

    def run(s: Setting) -> tuple[float, float] | None:
        if s not in seen:
            seen[s] = measure_fixed(profile, gpus, workload, seed, batch_size=max(1, int(b0 * s[0])),
                                    power_limit_w=s[1], sm_clock_mhz=s[2])
        return seen[s]

    base = run((1.0, prof.power_limit_default_w, None))
    assert base is not None
    limit_ok = base[1] * (1.0 + budget)
    top_w, lo_w, step_w = prof.power_limit_max_w, prof.power_limit_min_w, 0.05 * (prof.power_limit_max_w - prof.power_limit_min_w)
    top_f, lo_f = prof.sm_clock_max_mhz, prof.sm_clock_min_mhz
    span_f = top_f - lo_f

    def walk(settings: Iterable[Setting]) -> None:
        for s in settings:  # slowest last: stop at the first setting over the budget
            r = run(s)
            if r is None or r[1] > limit_ok:
                return

    sizes = [m for m in MULTS if (r := run((m, top_w, None))) is not None and r[1] <= limit_ok]
    for m in sizes:
        walk((m, top_w - 2 * k * step_w, None) for k in range(1, 11))
        if clocks:
            walk((m, top_w, int(top_f - k * 0.1 * span_f) // 15 * 15) for k in range(1, 10))
    m, w, f = _best(seen, limit_ok)
    limits = [x for x in (w - step_w, w, w + step_w) if lo_w - 1e-6 <= x <= top_w + 1e-6]
    locks: list[int | None] = [None]
    if clocks:
        centre = f if f is not None else top_f
        locks += sorted({min(top_f, max(lo_f, centre // 15 * 15 + 15 * k)) for k in range(-int(0.05 * span_f / 15), int(0.05 * span_f / 15) + 1)})
    for lock in locks:
        for x in limits:
            run((m, x, lock))
    m, w, f = _best(seen, limit_ok)
    e, t = seen[(m, w, f)]  # type: ignore[misc]
    return {"energy_to_target": e / base[0], "time_to_target": t / base[1], "batch_multiplier": m,
            "power_limit_w": w, "sm_clock_mhz": f, "settings_run": len(seen)}


def _best(seen: dict[Setting, tuple[float, float] | None], limit_ok: float) -> Setting:
    ok = [(r[0], s) for s, r in seen.items() if r is not None and r[1] <= limit_ok]
    return min(ok, key=lambda x: x[0])[1]


def describe(sw: dict[str, Any]) -> str:
    """One table cell: energy, time (batch, limit, lock)."""
    lock = f", {sw['sm_clock_mhz']} MHz" if sw.get("sm_clock_mhz") else ""
    return (f"{sw['energy_to_target']:.3f}, {sw['time_to_target']:.3f} (batch x{sw['batch_multiplier']:g}, "
            f"{sw['power_limit_w']:.0f} W{lock})")


def share(tuned_energy: float, best_energy: float) -> float | None:
    """The tuner's saving over the best fixed setting's (None where the best saves under 2%)."""
    top = 1.0 - best_energy
    return None if top < 0.02 else (1.0 - tuned_energy) / top


def median_or_none(values: Iterable[float | None]) -> float | None:
    """Median of the values that are not None."""
    got = [v for v in values if v is not None]
    return statistics.median(got) if got else None


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> int:
    """Print the best fixed setting of each workload."""
    ap = BenchParser(description=__doc__)
    ap.add_argument("--profile", type=gpu_profile, default="a100", help="simulated GPU model")
    ap.add_argument("--gpus", type=positive_int, default=4, help="simulated GPUs of the node")
    ap.add_argument("--workloads", type=workload_list, default="vit-b16-imagenet,gpt2-small-openwebtext,dlrm-criteo",
                    help="comma-separated workloads")
    ap.add_argument("--budget", type=positive_float, default=0.03, help="slowdown budget (fraction)")
    ap.add_argument("--no-clocks", action="store_true", help="power limits and batch sizes only")
    ap.add_argument("--seed", type=int, default=0, help="seed of the simulated node")
    a = ap.parse_args(argv)
    for wl in a.workloads.split(","):
        sw = best_fixed(a.profile, a.gpus, wl, a.seed, a.budget, clocks=not a.no_clocks)
        out(f"{wl} ({a.gpus} x {a.profile}): {describe(sw)}, {sw['settings_run']} settings run")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
