"""Just enough PromQL to check expressions: the metric names they select, and Grafana variables.

:func:`metric_names` strips what cannot be a metric name (string literals, label matchers,
range and subquery brackets, grouping label lists, numbers and durations), then keeps the
identifiers that are neither PromQL keywords nor followed by ``(`` (functions and
aggregations). Selectors written as ``{__name__="x"}`` are read from the matcher.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

KEYWORDS = frozenset(
    {
        "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
        "offset", "bool", "atan2", "inf", "nan", "start", "end",
    }
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_NAME_MATCHER = re.compile(r'__name__\s*=\s*"([a-zA-Z_:][a-zA-Z0-9_:]*)"')
_BRACES = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE)
_IDENT = re.compile(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])(\s*\()?")
_VARIABLE = re.compile(r"\$(?:\{([a-zA-Z_][a-zA-Z0-9_]*)(?::[a-z]+)?\}|([a-zA-Z_][a-zA-Z0-9_]*))")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(.*?)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$", re.DOTALL)


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (Grafana variables must be substituted or harmless)."""
    text = _VARIABLE.sub("VAR", expr)
    named = set(_NAME_MATCHER.findall(text))
    text = _STRING.sub('""', text)
    text = _BRACES.sub(" ", text)
    prev = None
    while prev != text:  # nested subqueries
        prev, text = text, _BRACKETS.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names = set(named)
    for m in _IDENT.finditer(text):
        ident, call = m.group(1), m.group(2)
        if call or ident.lower() in KEYWORDS:
            continue
        names.add(ident)
    return names


def label_values_query(query: str) -> tuple[str, str] | None:
    """``label_values(expr, label)`` (a Grafana variable query) as (expr, label), else None."""
    m = _LABEL_VALUES.match(query)
    return (m.group(1), m.group(2)) if m else None


def variables(expr: str) -> set[str]:
    """Names of the Grafana variables an expression uses (``$x`` and ``${x}``)."""
    return {a or b for a, b in _VARIABLE.findall(expr)}


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """Replace Grafana variables as Grafana would before sending the query; KeyError if one is unknown."""

    def repl(m: re.Match[str]) -> str:
        return values[m.group(1) or m.group(2)]

    return _VARIABLE.sub(repl, expr)


def regex_of(values: list[str]) -> str:
    """A multi-value variable's regex as Grafana builds it: ``(a|b|c)`` with regex metacharacters escaped."""
    escaped = [re.sub(r"([\\.^$|?*+()\[\]{}])", r"\\\\\1", v) for v in values]
    return "(" + "|".join(escaped) + ")" if len(escaped) != 1 else escaped[0]
