"""Check dashboards and rules against a live Prometheus: which expressions return no data.

Every panel target is sent as Grafana would send it: template variables are resolved
first (each ``label_values(selector, label)`` query against the Prometheus series API over
the checked time range, in declaration order, so ``$gpu`` sees the resolved ``$instance``),
then ``$__rate_interval``, ``$__interval`` and ``$__range`` are substituted and the
expression is run as a range query. Alert and recording rule expressions are run as they
are. ``gputuned dashboards check --prometheus URL`` uses this, and so does the live test.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gputuned.dashboards.promql import label_values_query, metric_names, regex_of, substitute
from gputuned.dashboards.rules import Rule

logger = logging.getLogger(__name__)

#: Series Prometheus itself adds to every scrape; rules may select them.
PROMETHEUS_SERIES = frozenset(
    {"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_series_added", "scrape_samples_post_metric_relabeling"}
)


@dataclass(frozen=True)
class Expression:
    """One PromQL expression and where it comes from (dashboard and panel, or rule file and rule)."""

    where: str
    expr: str


class PrometheusAPI:
    """The few Prometheus HTTP API calls the check needs."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _get(self, path: str, params: list[tuple[str, str]]) -> Any:
        q = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}{path}?{q}", timeout=self.timeout) as r:  # noqa: S310
                body = json.loads(r.read())
        except urllib.error.HTTPError as e:  # Prometheus answers bad queries with 400 and a JSON error
            body = json.loads(e.read() or b"{}")
        if body.get("status") != "success":
            raise ValueError(f"{body.get('errorType', 'error')}: {body.get('error', body)}")
        return body["data"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        """Range query; the result matrix."""
        data = self._get("/api/v1/query_range", [("query", expr), ("start", f"{start:.3f}"), ("end", f"{end:.3f}"),
                                                 ("step", f"{step:g}")])
        return list(data["result"])

    def label_values(self, selector: str, label: str, start: float, end: float) -> list[str]:
        """Values of ``label`` over the series matching ``selector`` in [start, end]."""
        data = self._get("/api/v1/series", [("match[]", selector), ("start", f"{start:.3f}"), ("end", f"{end:.3f}")])
        return sorted({s[label] for s in data if label in s}, key=lambda v: (len(v), v))

    def rules(self) -> list[dict[str, Any]]:
        """Every rule Prometheus loaded, flattened over groups."""
        data = self._get("/api/v1/rules", [])
        return [r for grp in data["groups"] for r in grp["rules"]]


def dashboard_expressions(dashboards: Mapping[str, Mapping[str, Any]]) -> list[Expression]:
    """Every panel target of every dashboard."""
    out = []
    for stem, d in dashboards.items():
        for p in d["panels"]:
            for t in p.get("targets", []):
                out.append(Expression(f"{stem}: {p['title']} [{t['refId']}]", t["expr"]))
    return out


def variable_expressions(dashboards: Mapping[str, Mapping[str, Any]]) -> list[Expression]:
    """The selectors of every ``label_values`` template variable."""
    out = []
    for stem, d in dashboards.items():
        for v in d["templating"]["list"]:
            lv = label_values_query(v["query"]) if v["type"] == "query" else None
            if lv:
                out.append(Expression(f"{stem}: variable ${v['name']}", lv[0]))
    return out


def rule_expressions(rules: Iterable[Rule]) -> list[Expression]:
    """Every rule's expression."""
    return [Expression(f"{r.file}: {r.name}", r.expr) for r in rules]


def unknown_names(exprs: Iterable[Expression], served: Iterable[str], extra: Iterable[str] = ()) -> dict[str, set[str]]:
    """Expression location -> metric names it selects that are neither served nor Prometheus' own."""
    known = set(served) | PROMETHEUS_SERIES | set(extra)
    out = {}
    for e in exprs:
        missing = metric_names(e.expr) - known
        if missing:
            out[e.where] = missing
    return out


def resolve_variables(
    api: PrometheusAPI, dashboard: Mapping[str, Any], start: float, end: float, builtins: Mapping[str, str]
) -> dict[str, str]:
    """Template variable values as Grafana would set them by default ("All" where offered)."""
    values = dict(builtins)
    for v in dashboard["templating"]["list"]:
        name = v["name"]
        if v["type"] == "datasource":
            values[name] = "prometheus"
            continue
        lv = label_values_query(v["query"])
        if not lv:
            values[name] = str(v.get("current", {}).get("value") or "")
            continue
        found = api.label_values(substitute(lv[0], values), lv[1], start, end)
        if v.get("includeAll") and v.get("allValue"):
            values[name] = v["allValue"]
        elif v.get("includeAll") or v.get("multi"):
            values[name] = regex_of(found) if found else "__none__"
        else:
            default = str(v.get("current", {}).get("value") or "")
            values[name] = default if default in found or not found else found[0]
    return values


def check(
    api: PrometheusAPI,
    dashboards: Mapping[str, Mapping[str, Any]],
    rules: Iterable[Rule],
    start: float,
    end: float,
    *,
    step: float = 1.0,
    rate_interval: str = "1m",
) -> list[tuple[Expression, str]]:
    """(expression, problem) for every panel target, variable and rule that errs or returns no data."""
    builtins = {"__rate_interval": rate_interval, "__interval": f"{step:g}s", "__range": f"{max(1, int(end - start))}s"}
    problems: list[tuple[Expression, str]] = []

    def run(e: Expression, expr: str) -> None:
        try:
            result = api.query_range(expr, start, end, step)
        except ValueError as err:
            problems.append((e, str(err)))
            return
        if not any(r.get("values") for r in result):
            problems.append((e, "no data"))

    for stem, d in dashboards.items():
        values = resolve_variables(api, d, start, end, builtins)
        for e in variable_expressions({stem: d}):
            run(e, substitute(e.expr, values))
        for e in dashboard_expressions({stem: d}):
            run(e, substitute(e.expr, values))
    for e in rule_expressions(rules):
        run(e, e.expr)
    logger.info("checked %d dashboards and their rules: %d problems", len(dashboards), len(problems))
    return problems
