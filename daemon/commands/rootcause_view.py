"""The root-cause section of ``gputuned status``: each job's last capture, its shares and suggestions."""

from __future__ import annotations

from typing import Any

PART_WORDS = (("compute", "compute"), ("data_loader", "data loader"), ("communication", "communication"),
              ("straggler_wait", "straggler wait"))


def root_cause_lines(st: dict[str, Any]) -> list[str]:
    """Lines for the jobs' last root-cause captures (none when the daemon has no root-cause part)."""
    rc = st.get("root_cause")
    if not rc:
        return []
    captures = rc.get("captures", {})
    head = (f"root cause: {captures.get('alert', 0)} captures on alerts, {captures.get('tuner', 0)} after the "
            f"tuner's own moves, {rc.get('pending', 0)} pending")
    out = [head]
    for job, s in rc.get("jobs", {}).items():
        shares = s.get("shares") or {}
        split = ", ".join(f"{words} {float(shares.get(part, 0.0)):.0%}" for part, words in PART_WORDS)
        out.append(f"  job {job}: {s.get('cause_text')} ({split}) after {s.get('alert')}")
        out += [f"    - {line}" for line in s.get("suggestions", [])]
        out += [f"    trace rank {rank}: {path}" for rank, path in sorted(s.get("traces", {}).items())]
    return out
