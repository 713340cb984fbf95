"""The shipped Prometheus rule files and the expressions in them.

The rule files are YAML written by hand. The project has no YAML library, and promtool
already validates the files, so expressions are read with a small line reader for the
two forms rule files use: ``expr: <one line>`` (plain or quoted) and block scalars
``expr: |`` / ``expr: >``. The live test cross-checks the result against the rules the
real Prometheus loaded from the same files.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

#: The shipped rule files (hardware.yml here; forecast.yml from the forecasting work).
RULES_DIR = Path(__file__).resolve().parent / "rules"
#: The example scrape configuration.
PROMETHEUS_CONFIG = Path(__file__).resolve().parent / "prometheus.yml"

_KEY = re.compile(r"^(\s*)(?:-\s+)?(alert|record|expr):\s*(.*?)\s*$")


@dataclass(frozen=True)
class Rule:
    """One alerting or recording rule: its file, name and PromQL expression."""

    file: str
    kind: str  # "alert" or "record"
    name: str
    expr: str


def rule_files(directory: Path = RULES_DIR) -> list[Path]:
    """The rule files shipped in ``directory``, sorted."""
    return sorted(directory.glob("*.yml"))


def _scalar(text: str, where: str) -> str:
    if text.startswith('"'):
        return str(json.loads(text))
    if text.startswith("'"):
        if not text.endswith("'") or len(text) < 2:
            raise ValueError(f"{where}: unterminated single-quoted string")
        return text[1:-1].replace("''", "'")
    return text.split(" #", 1)[0].strip()


def read_rules(path: Path) -> list[Rule]:
    """Every rule of one rule file; ValueError naming the file and line if an expr is missing."""
    lines = path.read_text().splitlines()
    rules: list[Rule] = []
    kind = name = None
    i = 0
    while i < len(lines):
        m = _KEY.match(lines[i])
        i += 1
        if not m:
            continue
        indent, key, value = m.groups()
        where = f"{path.name}:{i}"
        if key in ("alert", "record"):
            if kind is not None:
                raise ValueError(f"{where}: rule {name!r} has no expr")
            kind, name = key, _scalar(value, where)
            continue
        if kind is None:
            raise ValueError(f"{where}: expr outside a rule")
        if value[:1] in ("|", ">"):
            block: list[str] = []
            while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > len(indent)):
                block.append(lines[i].strip())
                i += 1
            expr = ("\n" if value[0] == "|" else " ").join(b for b in block if b)
        else:
            expr = _scalar(value, where)
        rules.append(Rule(path.name, kind, str(name), expr))
        kind = name = None
    if kind is not None:
        raise ValueError(f"{path.name}: rule {name!r} has no expr")
    return rules


def all_rules(directory: Path = RULES_DIR) -> list[Rule]:
    """Every rule of every shipped rule file."""
    return [r for p in rule_files(directory) for r in read_rules(p)]
