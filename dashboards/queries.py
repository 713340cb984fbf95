"""The PromQL pieces the dashboards share: label matchers, Grafana's windows, per-GPU queries."""

from __future__ import annotations

from dataclasses import dataclass

#: Label matchers of node-level series (host, daemon, network).
NODE = 'instance=~"$instance"'
#: Label matchers of per-GPU series.
GPU = 'instance=~"$instance", gpu=~"$gpu"'
#: Grafana's rate window: at least four scrape intervals, so rate() always has two samples.
RATE = "$__rate_interval"
#: Grafana's dashboard time range, for increase() over what is on screen.
RANGE = "$__range"


@dataclass(frozen=True)
class Query:
    """One PromQL target of a panel and its legend."""

    expr: str
    legend: str = ""


def on_gpus(*series: tuple[str, str]) -> list[Query]:
    """One query per (metric, legend suffix) over the selected GPUs, legend ``GPU <n> <suffix>``."""
    return [Query(f"{metric}{{{GPU}}}", f"GPU {{{{gpu}}}} {suffix}".rstrip()) for metric, suffix in series]


def gpu_ratio(numerator: str, denominator: str) -> list[Query]:
    """One query of each selected GPU's ``numerator / denominator`` metric."""
    return [Query(f"{numerator}{{{GPU}}} / {denominator}{{{GPU}}}", "GPU {{gpu}}")]
