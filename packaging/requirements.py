#!/usr/bin/env python3
"""What the Debian package's venv (/opt/gputuned) carries, read from pyproject.toml.

The daemon's dependencies and the extras a node needs (pod attribution, TLS/basic auth for
/metrics) are carried; what only training, policy training or dashboard generation needs is
left out, each with its reason, so the package stays a node daemon and not a training stack.
Run as a script it prints one requirement per line for ``pip install``; ``--explain`` prints
what is left out and why. Runs under Debian 12's system python3 (tomllib, no third-party modules).
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"

#: Extras installed into the package's venv.
CARRIED_EXTRAS = ("kubernetes", "web")

#: Dependencies of the project left out of the package, with the reason.
LEFT_OUT = {
    "torch": "the trainer plugin (gputuned.trainer_plugin) runs in the training job's own environment",
    "stable-baselines3": "training a tuner policy; the daemon runs the exported policy with numpy",
    "gymnasium": "the tuner's training environment (gputuned.tuner.sim_env)",
    "grafanalib": "regenerating the dashboards; the generated JSON and provisioning files ship in the package",
}


def name_of(requirement: str) -> str:
    """The normalised project name of a requirement line (PEP 503)."""
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if m is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", m.group(1)).lower()


def carried(pyproject: Path = PYPROJECT) -> list[str]:
    """Requirement lines of everything the package's venv carries besides gputuned itself."""
    project = tomllib.loads(pyproject.read_text())["project"]
    extras = project.get("optional-dependencies", {})
    missing = [e for e in CARRIED_EXTRAS if e not in extras]
    if missing:
        raise KeyError(f"pyproject.toml has no extra {', '.join(missing)}")
    lines = list(project["dependencies"]) + [r for e in CARRIED_EXTRAS for r in extras[e]]
    unknown = set(LEFT_OUT) - {name_of(r) for r in project["dependencies"]}
    if unknown:  # a stale entry would hide that a new dependency is carried by default
        raise KeyError(f"LEFT_OUT names no dependency of pyproject.toml: {', '.join(sorted(unknown))}")
    return [r for r in lines if name_of(r) not in LEFT_OUT]


def main(argv: list[str]) -> int:
    """Print the carried requirement lines, or with ``--explain`` what is left out and why."""
    if argv[1:] == ["--explain"]:
        for name, why in LEFT_OUT.items():
            sys.stdout.write(f"{name}: {why}\n")
        return 0
    sys.stdout.write("".join(f"{r}\n" for r in carried()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
