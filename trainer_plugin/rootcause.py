"""Where a job's step time goes, from every rank's timing in one capture, and what to do about it.

Standard library only: the trainer plugin's leader summarises a capture with it, and the
daemon summarises the same capture again with what only it knows (the tuner's recent moves).

Each rank measures, per step of the capture: the wall time from one step's end to the next
(``period_s``), the time it waited for its data loader (``data_wait_s``) and the time it waited
in gradient communication (``comm_s``: the all-reduce's exposed time plus waits in the plugin's
own exchange). Ranks of a data-parallel job run in lock step, so a rank that takes longer
(its ``busy`` time, period minus waits) makes every other rank wait for it inside the
all-reduce. That wait is not communication: the rank that arrives last waits least, and its
wait is what the transfer itself costs. So, seen from a typical rank, the step splits into

* communication: its wait, less what it waits for the straggler;
* straggler wait: the slowest rank's busy time beyond the typical rank's, less its data wait
  beyond the typical rank's (waiting for a rank that waits for its loader is data-loader time);
* data loader: its data wait, plus that part of the straggler's;
* compute: the rest of its period;

and the four shares sum to 1.
"""

from __future__ import annotations

import statistics
from typing import Any

PARTS = ("compute", "data_loader", "communication", "straggler_wait")
#: a part is named as the cause from this share of the step on
CAUSE_AT = {"straggler_wait": 0.15, "data_loader": 0.15, "communication": 0.25}
#: compression hooks the shipped trainer has (compression.hook); those that pay at any world size first
HOOKS = ("bf16", "powersgd", "int8", "topk")


def rank_timing(rank: int, steps: int, period_s: float, step_s: float, data_wait_s: float, comm_s: float,
                device: str, gpu: int | None) -> dict[str, Any]:
    """One rank's means per step over a capture, as sent in ``profile_result.summary.ranks``."""
    n = max(steps, 1)
    return {"rank": rank, "steps": steps, "period_s": period_s / n, "step_s": step_s / n,
            "data_wait_s": data_wait_s / n, "comm_s": comm_s / n, "device": device, "gpu": gpu}


def _busy(r: dict[str, Any]) -> float:
    return max(0.0, float(r["period_s"]) - float(r["comm_s"]))


def split(ranks: list[dict[str, Any]]) -> dict[str, Any]:
    """Shares of the step (summing to 1), the straggling rank (None when none) and the rank seen from."""
    if not ranks:
        return {"shares": dict.fromkeys(PARTS, 0.0), "straggler": None, "seen_from": None}
    slow = max(ranks, key=_busy)
    others = [r for r in ranks if r is not slow]
    if others:
        typical_busy = statistics.median_low([_busy(r) for r in others])
        view = min(others, key=lambda r: abs(_busy(r) - typical_busy))
        lag = max(0.0, _busy(slow) - typical_busy)
    else:
        view, lag = slow, 0.0
    wait = max(0.0, float(view["comm_s"]))
    straggler = min(wait, lag)
    # waiting for a rank that was itself waiting for its data loader is data-loader time
    data_lag = min(straggler, max(0.0, float(slow["data_wait_s"]) - float(view["data_wait_s"])))
    parts = {
        "compute": max(0.0, float(view["period_s"]) - wait - float(view["data_wait_s"])),
        "data_loader": max(0.0, float(view["data_wait_s"])) + data_lag,
        "communication": wait - straggler,
        "straggler_wait": straggler - data_lag,
    }
    total = sum(parts.values())
    shares = {k: (v / total if total > 0 else 0.0) for k, v in parts.items()}
    return {"shares": shares, "straggler": slow if others else None, "seen_from": view["rank"],
            "period_s": float(view["period_s"])}


def where(r: dict[str, Any]) -> str:
    """A rank and its GPU in words: ``rank 1 (GPU 1)``."""
    gpu = r.get("gpu")
    return f"rank {r['rank']} (GPU {gpu})" if gpu is not None else f"rank {r['rank']} ({r.get('device', 'cpu')})"


def describe_shares(summary: dict[str, Any]) -> str:
    """The shares in one phrase: ``compute 40%, data loader 5%, communication 5%, straggler wait 50%``."""
    shares = summary.get("shares", {})
    return ", ".join(f"{p.replace('_', ' ')} {float(shares.get(p, 0.0)):.0%}" for p in PARTS)


def analyse(summary: dict[str, Any], tuner_move: dict[str, Any] | None = None) -> dict[str, Any]:
    """``summary`` with shares, the measured cause and suggestions filled in from its ``ranks``.

    ``tuner_move``: the tuner's latest knob change shortly before the capture (a Change as a
    dict), named as the cause when nothing else explains the slowdown.
    """
    out = dict(summary)
    got = split(list(summary.get("ranks", [])))
    shares = got["shares"]
    out["shares"] = {k: round(v, 4) for k, v in shares.items()}
    out["data_loader_share"] = out["shares"]["data_loader"]
    out["comm_share"] = out["shares"]["communication"]
    slow = got["straggler"]
    named = [p for p in ("straggler_wait", "data_loader", "communication") if shares[p] >= CAUSE_AT[p]]
    named.sort(key=lambda p: -shares[p])
    out["straggler"] = ({"rank": slow["rank"], "gpu": slow.get("gpu"), "device": slow.get("device")}
                        if slow is not None and "straggler_wait" in named else None)
    cause = named[0] if named else ("tuner" if tuner_move is not None else "compute")
    out["cause"] = cause
    out["suggestions"] = [_suggestion(p, shares, slow, got, summary) for p in named]
    if tuner_move is not None:
        out["tuner_move"] = tuner_move
        out["suggestions"].append(_tuner_line(tuner_move, primary=not named))
    if not named:
        out["suggestions"] += compute_hints(summary)
    return out


def _suggestion(part: str, shares: dict[str, float], slow: dict[str, Any] | None, got: dict[str, Any],
                summary: dict[str, Any]) -> str:
    share = shares[part]
    if part == "straggler_wait" and slow is not None:
        return (f"{where(slow)} is the straggler: the other ranks wait for it {share:.0%} of each step in the "
                f"all-reduce (it is busy {_busy(slow) * 1000:.1f} ms per step, they {got['period_s'] * 1000:.1f} ms "
                "per step in all); check that GPU's clocks, temperature and power limit (gputuned status), other "
                "processes on it, and that rank's data loader")
    if part == "data_loader":
        return (f"the data loader stalls {share:.0%} of each step (loading or transforming batches on the CPU): "
                "raise data.prefetch or the loader workers, keep the data set in memory, use pinned memory")
    hook = summary.get("context", {}).get("compression", "none")
    if hook in ("none", None):
        return (f"communication takes {share:.0%} of each step: try compression.hook = "
                + " or ".join(f'"{h}"' for h in HOOKS) + ", or a larger batch per step")
    return (f"communication takes {share:.0%} of each step even with compression.hook = \"{hook}\": accumulate "
            "gradients (train.accumulation_steps) to all-reduce less often")


def _tuner_line(move: dict[str, Any], primary: bool) -> str:
    on = f"GPU {move['gpu']}" if move.get("gpu") is not None else f"job {move.get('job')}"
    text = f"the tuner changed {move['knob']} on {on} from {move.get('previous')} to {move.get('new')} just before"
    if primary:
        return text + ": the slowdown follows the tuner's own move (its guard rolls back a move that costs too much)"
    return text + "; the cause above is measured, not that move"


def compute_hints(summary: dict[str, Any]) -> list[str]:
    """Hints from the top operators of a compute-bound step."""
    context = summary.get("context", {})
    names = [name for name, _ in summary.get("top_ops", [])[:3]]
    out = []
    matmul = {"aten::mm", "aten::addmm", "aten::bmm", "aten::convolution", "aten::cudnn_convolution"}
    if matmul & set(names) and context.get("precision", "fp32") == "fp32" and context.get("device") == "cuda":
        out.append("matrix products dominate in fp32: set train.precision = \"bf16\" (or \"fp16\")")
    if {"aten::copy_", "aten::to", "aten::_to_copy"} & set(names):
        out.append("tensor copies are among the top operators: move data to the device once, "
                   "with pinned memory and non_blocking copies")
    if not out:
        out.append("compute-bound: no wait beyond compute measured; a larger batch may raise throughput "
                   "if memory allows")
    return out
