"""A short torch.profiler capture on request, summarised into shares and suggestions."""

from __future__ import annotations

import logging
from typing import Any

import torch

logger = logging.getLogger(__name__)


class ProfileCapture:
    """Profile ``steps`` training steps and summarise top operators and where time went."""

    def __init__(self, decision_id: str, steps: int, top: int = 10) -> None:
        self.decision_id = decision_id
        self.steps = steps
        self.top = top
        self.done_steps = 0
        self.step_time = 0.0
        self.data_wait = 0.0
        self.comm_wait = 0.0
        activities = [torch.profiler.ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self._prof = torch.profiler.profile(activities=activities, record_shapes=False)
        self._prof.__enter__()

    def add_step(self, step_time: float, data_wait: float, comm_wait: float) -> bool:
        """Count one profiled step; True when the capture is complete."""
        self.done_steps += 1
        self.step_time += step_time
        self.data_wait += data_wait
        self.comm_wait += comm_wait
        return self.done_steps >= self.steps

    def finish(self, context: dict[str, Any] | None = None) -> dict[str, Any]:
        """Stop the profiler and return the summary sent as profile_result."""
        self._prof.__exit__(None, None, None)
        use_cuda = torch.cuda.is_available()
        rows = []
        for evt in self._prof.key_averages():
            t = evt.self_device_time_total if use_cuda else evt.self_cpu_time_total
            if t > 0:
                rows.append((evt.key, float(t)))
        total = sum(t for _, t in rows) or 1.0
        rows.sort(key=lambda r: -r[1])
        top_ops = [[name, round(t / total, 4)] for name, t in rows[:self.top]]
        step = self.step_time or 1e-12
        summary = {
            "steps": self.done_steps,
            "step_time_s": self.step_time / max(self.done_steps, 1),
            "top_ops": top_ops,
            "data_loader_share": round(min(self.data_wait / step, 1.0), 4),
            "comm_share": round(min(self.comm_wait / step, 1.0), 4),
        }
        summary["suggestions"] = suggest(summary, context or {})
        return summary


def suggest(summary: dict[str, Any], context: dict[str, Any]) -> list[str]:
    """Concrete, rule-based suggestions from a profile summary and the run's settings."""
    out: list[str] = []
    data = summary["data_loader_share"]
    comm = summary["comm_share"]
    if data > 0.1:
        out.append(f"data loading stalls {data:.0%} of each step: raise prefetch depth or loader "
                   "workers, keep the data set in memory or use pinned memory")
    if comm > 0.2:
        hook = context.get("compression", "none")
        if hook == "none":
            out.append(f"communication waits {comm:.0%} of each step: try compression.hook = "
                       "\"powersgd\" or \"topk\", or a larger batch per step")
        else:
            out.append(f"communication waits {comm:.0%} of each step even with {hook}: use gradient "
                       "accumulation to all-reduce less often")
    names = [name for name, _ in summary["top_ops"][:3]]
    matmul = any(n in ("aten::mm", "aten::addmm", "aten::bmm", "aten::convolution",
                       "aten::cudnn_convolution") for n in names)
    if matmul and context.get("precision", "fp32") == "fp32" and context.get("device") == "cuda":
        out.append("matrix products dominate in fp32: set train.precision = \"bf16\" (or \"fp16\")")
    if any(n in ("aten::copy_", "aten::to", "aten::_to_copy") for n in names):
        out.append("tensor copies are among the top operators: move data to the device once, "
                   "with pinned memory and non_blocking copies")
    if not out:
        out.append("no bottleneck beyond compute found; a larger batch may raise throughput if memory allows")
    return out
