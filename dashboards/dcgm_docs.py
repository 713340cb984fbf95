"""docs/dashboards.md's dcgm-exporter section: the mapping from gputuned's families to DCGM's fields.

Generated from the metric catalog's DCGM equivalents (:class:`gputuned.collectors.families.DcgmName`),
so the table is what the exporter serves.
"""

from __future__ import annotations

from collections.abc import Mapping

from gputuned.collectors.families import DCGM_NOT_SERVED, Family

_INTRO = """\
## dcgm-exporter compatibility

With `[exporter] metric_names = "dcgm"` every GPU family below is served a second time under
dcgm-exporter's name, type, help text, unit and label set, so the official dcgm-exporter dashboard
(grafana/dcgm-exporter-dashboard.json) and DCGM alert rules work unchanged: all 8 of its panels return
data from a real Prometheus scraping a simulated 8 x H100 node (tests/daemon/test_dcgm_compat.py,
which also diffs the served fields against dcgm-exporter's etc/default-counters.csv).

The series copy a dcgm-exporter release, `[exporter] dcgm_version` (default `4.5.3-4.8.2`). Labels, in
dcgm-exporter's order: `gpu`, `UUID`, `pci_bus_id`, `device` (`nvidia<gpu>`), `modelName`, the host
name (`Hostname` up to 4.5.3-4.8.2; releases after it write `hostname`), `DCGM_FI_DRIVER_VERSION` (the
default CSV's label field), then the gputuned series' other labels (pod, namespace, container where
the kubelet collector gives them); `DCGM_FI_DEV_XID_ERRORS` adds `err_code` and `err_msg`.

dcgm-exporter's counters carry no `_total`: they are typed `counter` in the text format as its CSV
says (promtool complains of those names and of the camelCase labels, as it does of dcgm-exporter's
own output), and `unknown` under OpenMetrics, which requires `_total` on counter samples.
`DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL` is what DCGM serves under that name: a throughput in KiB/s
(typed counter by the CSV), from gputuned's NVLink byte counters over the last interval.

Profiling fields (`DCGM_FI_PROF_*` activity) come from NVML's GPU Performance Monitoring, which
Hopper and later GPUs have; on A100 and older they need DCGM's own profiling module, so gputuned
serves nothing for them there rather than a stand-in. The simulated NVML offers GPM on its
Hopper profiles (H100).

| DCGM field | type | gputuned family | DCGM value = value x | selects |
|---|---|---|---|---|"""


def _scale(x: float) -> str:
    for text, v in (("1/2^20 (MiB)", 1 / 2**20), ("1/1024 (KiB)", 1 / 1024)):
        if x == v:
            return text
    return f"{x:g}"


def render_dcgm_section(catalog: Mapping[str, Family]) -> list[str]:
    """The section's lines: the mapping table and the default counters not served, with why."""
    rows = sorted((d.name, "counter" if d.counter else "gauge", fam.name, _scale(d.scale),
                   ", ".join(f"{k}={v}" for k, v in d.where)) for fam in catalog.values() for d in fam.dcgm)
    out = [_INTRO]
    out += [f"| `{n}` | {k} | `{f}` | {s} | {w} |" for n, k, f, s, w in rows]
    out += ["", "Default counters not served:", ""]
    out += [f"- `{name}`: {why}." for name, why in sorted(DCGM_NOT_SERVED.items())]
    return out
