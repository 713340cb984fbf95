"""Damage a running daemon's state file (deleted, corrupted, zeroed, crafted) after it changed
some GPUs, then end the run with SIGTERM or `gputuned restore`: every GPU must be back at its
exact original and no other GPU touched; then `gputuned restore --offline` (the unit's
ExecStopPost) must find nothing to do and change nothing. The changes are the operator's
(`set` pins what it sets): their pins file outlives a SIGTERM (the next start would apply the
pins again) and `gputuned restore` clears it; no other file may be left in the state directory.

Each trial is a real `gputuned run` child process on a simulated 4-GPU node whose settings
persist in a file (like hardware, across processes). The GPUs start at non-default power
limits (random per trial), so a reset to the driver's default is seen; 2 of the 4 are changed
(power limit and locked SM clocks); the config's bounds are 300 W and 600 MHz at least, and
the crafted file lists all 4 GPUs with "originals" of 200 W and 345 MHz. The damage lands
either right before the end (the daemon's check before a restore) or after some ticks.

    .venv/bin/python bench/state_file_trials.py [--trials 20]
"""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from gputuned.daemon.record.child import DaemonProcess, run_gputuned, runtime_config

DAMAGES = ("deleted", "corrupted", "zeroed", "crafted")
ENDINGS = ("sigterm", "restore")
GPUS = 4
BOUNDS = {"power_limit_min_w": 300.0, "sm_clock_min_mhz": 600}
PINS = "pins.json"  # the operator's pins, beside the state file


def _uuids(tmp: Path) -> list[str]:
    """The simulated node's GPU uuids (a daemon started once, changing nothing)."""
    d = DaemonProcess(tmp, config=runtime_config(tmp, gpus=GPUS))
    try:
        d.wait_ready()
        return sorted(d.sim_settings())
    finally:
        d.stop()
        d.close()


def _seed_node(path: Path, uuids: list[str], rng: random.Random) -> None:
    """GPU settings before the daemon starts: non-default power limits (the originals to come back)."""
    gpus = {u: {"power_limit_mw": rng.randrange(450, 691) * 1000, "locked_sm_clocks_mhz": None,
                "locked_memory_clocks_mhz": None, "applications_clocks_mhz": None} for u in uuids}
    path.write_text(json.dumps({"gpus": gpus}))


def _crafted(uuids: list[str], pid: int) -> bytes:
    """A well-formed state file naming every GPU, with originals below the configured bounds."""
    gpus = {u: {"index": i, "uuid": u, "changed": ["locked_sm_clocks", "power_limit"],
                "originals": {"power_limit": 200_000, "locked_sm_clocks": [345, 345],
                              "locked_memory_clocks": None, "applications_clocks": None},
                "targets": {}} for i, u in enumerate(uuids)}
    return json.dumps({"version": 1, "pid": pid, "updated": time.time(), "gpus": gpus}).encode()


def damage(state_path: Path, how: str, uuids: list[str], pid: int, rng: random.Random) -> None:
    """Damage the state file and its copy as ``how`` says, in place (as an outside writer would)."""
    for p in (state_path, state_path.with_name(state_path.name + ".1")):
        if how == "deleted":
            p.unlink(missing_ok=True)
            continue
        size = p.stat().st_size if p.exists() else 64
        if how == "corrupted":
            text = p.read_bytes() if p.exists() else b"{}"
            body = text[: rng.randrange(1, max(2, len(text)))] + bytes(rng.randrange(256) for _ in range(16))
        elif how == "zeroed":
            body = b"" if rng.random() < 0.5 else b"\0" * size
        else:
            body = _crafted(uuids, pid)
        with open(p, "r+b" if p.exists() else "wb") as f:  # in place: same inode, as an editor or a bad disk
            f.truncate(0)
            f.write(body)


def _pins(path: Path) -> int:
    """How many pins the pins file holds (0 when it is absent)."""
    return len(json.loads(path.read_text())["pins"]) if path.exists() else 0


def _change(d: DaemonProcess, rng: random.Random) -> list[int]:
    """Change 2 random GPUs (power limit, locked SM clocks); returns their indices."""
    chosen = sorted(rng.sample(range(GPUS), 2))
    for gpu in chosen:
        r = d.admin("set", gpu=gpu, knob="power_limit", value=rng.randrange(300, 450) * 1000)
        assert r["ok"], r
        lo = rng.randrange(600, 1500)
        r = d.admin("set", gpu=gpu, knob="locked_sm_clocks", value=[lo, lo + rng.randrange(0, 400)])
        assert r["ok"], r
    return chosen


def state_trial(tmp: Path, how: str, ending: str, seed: int, uuids: list[str]) -> dict[str, Any]:
    """One trial; returns what was found (``ok`` True when every GPU came back and nothing else moved)."""
    rng = random.Random(f"{how}-{ending}-{seed}")
    tmp.mkdir(parents=True, exist_ok=True)
    data = runtime_config(tmp, gpus=GPUS, actuation=dict(BOUNDS))
    _seed_node(Path(data["sim"]["settings_file"]), uuids, rng)
    d = DaemonProcess(tmp, config=data)
    out: dict[str, Any] = {"damage": how, "ending": ending, "seed": seed}
    try:
        d.wait_ready()
        originals = d.sim_settings()
        out["changed"] = _change(d, rng)
        late = rng.random() < 0.5  # after some ticks, or right before the end
        damage(d.state_path, how, uuids, d.proc.pid, rng)
        if late:
            time.sleep(rng.uniform(0.3, 0.8))
        out["late"] = late
        if ending == "restore":
            res = run_gputuned("restore", "--config", str(d.config_path))
            out["restore_rc"] = res.returncode
            out["after_restore"] = d.sim_settings() == originals
        out["stop_rc"] = d.stop()
        out["after_stop"] = d.sim_settings() == originals
        post = run_gputuned("restore", "--offline", "--config", str(d.config_path))
        out["stop_post_rc"] = post.returncode
        out["stop_post"] = post.stdout.strip()
        out["after_stop_post"] = d.sim_settings() == originals
        left = sorted(p.name for p in d.state_path.parent.iterdir()) if d.state_path.parent.exists() else []
        out["state_left"] = [name for name in left if name != PINS]
        out["pins_left"] = _pins(d.state_path.with_name(PINS))
        out["ok"] = (out["after_stop"] and out["after_stop_post"] and out["stop_rc"] == 0 and out["stop_post_rc"] == 0
                     and out.get("restore_rc", 0) == 0 and out.get("after_restore", True) and not out["state_left"]
                     and out["pins_left"] == (0 if ending == "restore" else 2 * len(out["changed"])))
        if not out["ok"]:
            out["log_tail"] = d.log()[-1500:]
    finally:
        d.close()
    return out


def run_trials(root: Path, trials: int, damages: tuple[str, ...] = DAMAGES,
               endings: tuple[str, ...] = ENDINGS) -> list[dict[str, Any]]:
    """``trials`` trials of each damage and ending under ``root``."""
    uuids = _uuids(root / "probe")
    results = []
    for how, ending, seed in itertools.product(damages, endings, range(trials)):
        results.append(state_trial(root / f"{how}-{ending}-{seed}", how, ending, seed, uuids))
        brief = {k: results[-1].get(k) for k in ("damage", "ending", "seed", "late", "ok")}
        # one line a trial on stderr, so a run stopped early still says what it found
        print(json.dumps({**brief, "load_1m": round(os.getloadavg()[0], 2)}), file=sys.stderr, flush=True)
    return results


def main() -> int:
    from _common import BenchParser, positive_int

    ap = BenchParser(description=__doc__)
    ap.add_argument("--trials", type=positive_int, default=20, help="trials of each damage and each ending")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="gputuned-statefile-"))
    t0 = time.monotonic()
    try:
        results = run_trials(root, args.trials)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    by = Counter((r["damage"], r["ending"]) for r in results if r["ok"])
    summary = {
        "trials": len(results), "seconds": round(time.monotonic() - t0, 1), "load_1m_at_end": round(os.getloadavg()[0], 2),
        "exact_restores": {f"{how}/{end}": f"{by[(how, end)]}/{args.trials}" for how in DAMAGES for end in ENDINGS},
        "damaged_late": sum(r["late"] for r in results),
        "failures": [r for r in results if not r["ok"]],
    }
    print(json.dumps(summary, indent=1))
    ok = not summary["failures"]
    print("PASS" if ok else "FAIL", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.exit(main())
