"""What the bench scripts share: their argument parser and value types, and process and port
probes. Each script imports it as ``_common`` (its own folder is first on sys.path)."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import socket
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from gputuned import EXIT_USAGE
from gputuned.progress import track

T = TypeVar("T")


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description's line breaks and shows each flag's default (when it has one)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default == []:
            return action.help
        return super()._get_help_string(action)


class BenchParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit status 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        """Print ``PROG: error: MESSAGE`` on one line and exit 2."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {' '.join(message.split())}\n")


def progress(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Yield ``items`` while a progress line on stderr counts them (on a terminal, or with GPUTUNED_PROGRESS=1)."""
    return track(items, description, total)


def _bounded(kind: Callable[[str], Any], name: str, ok: Callable[[Any], bool], what: str) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"needs {name}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    convert.__name__ = name
    return convert


positive_int = _bounded(int, "an integer", lambda v: v >= 1, ">= 1")
nonnegative_int = _bounded(int, "an integer", lambda v: v >= 0, ">= 0")
positive_float = _bounded(float, "a number", lambda v: v > 0 and v == v and v != float("inf"), "> 0 and finite")
fraction = _bounded(float, "a number", lambda v: 0.0 <= v < 1.0, "in [0, 1)")
unit_interval = _bounded(float, "a number", lambda v: 0.0 <= v <= 1.0, "in [0, 1]")


def existing_file(text: str) -> Path:
    """An argparse type: a path that names a readable file."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no file {text}")
    return path


def csv_choices(allowed: list[str] | tuple[str, ...]) -> Callable[[str], str]:
    """An argparse type: a comma-separated list whose every item is one of ``allowed``."""

    def convert(text: str) -> str:
        items = [x for x in text.split(",") if x]
        bad = [x for x in items if x not in allowed]
        if not items or bad:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(bad) or 'empty list'} (choose from {','.join(allowed)})")
        return text

    convert.__name__ = "list"
    return convert


def free_port() -> int:
    """A TCP port on the loopback interface that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of process ``pid`` so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def thread_cpu_seconds(pid: int) -> float:
    """CPU seconds of process ``pid``'s live threads so far, to the nanosecond (/proc/PID/task/*/schedstat;
    :func:`cpu_seconds` counts in 10 ms clock ticks); falls back to that where schedstat is absent."""
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(FileNotFoundError):  # a thread gone meanwhile
                total += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
    except FileNotFoundError:
        return cpu_seconds(pid)
    return total / 1e9


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` in bytes (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def metrics_url(status: dict[str, Any]) -> str:
    """The /metrics address a daemon's admin status names."""
    found = re.search(r"(http://\S+/metrics)", status["node"])
    if found is None:
        raise RuntimeError(f"no /metrics address in the daemon's status: {status['node']!r}")
    return found.group(1)


def sim_nvml_on_clock(gpus: int = 8) -> tuple[Any, Any]:
    """The simulated NVML module over a default ``gpus``-GPU node on a virtual clock: (nvml, clock)."""
    from gputuned.collectors.nvml import open_nvml
    from gputuned.collectors.sim import nvml as sim_nvml
    from gputuned.collectors.sim.state import VirtualClock
    from gputuned.daemon.app.config import parse_config
    from gputuned.daemon.app.daemon import build_sim_backend

    clock = VirtualClock()
    backend = build_sim_backend(parse_config({"sim": {"gpus": gpus}}))
    if hasattr(backend, "clock"):
        backend.clock = clock
    sim_nvml.attach(backend)
    nvml, _ = open_nvml("sim", sim_nvml)
    return nvml, clock



def _number_or_text(text: str) -> object:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def detector_config(parser: argparse.ArgumentParser, items: list[str]) -> Any:
    """DetectorConfig with ``KEY=VALUE`` overrides (numbers or strings); a bad one is a usage error."""
    from dataclasses import fields, replace

    from gputuned.tuner.forecast.detector import DetectorConfig

    base = DetectorConfig()
    known = {f.name for f in fields(base)}
    overrides: dict[str, object] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or key not in known:
            parser.error(f"--set {item}: needs KEY=VALUE with KEY a DetectorConfig field ({', '.join(sorted(known))})")
        overrides[key] = _number_or_text(text)
    try:
        return replace(base, **overrides)
    except (TypeError, ValueError) as e:
        parser.error(f"--set: {e}")


def workload(text: str) -> str:
    """An argparse type: a shipped workload name or a workload TOML file."""
    from gputuned.collectors.sim.workload import available_workloads

    shipped = available_workloads()
    if text in shipped or (text.endswith(".toml") and Path(text).is_file()):
        return text
    raise argparse.ArgumentTypeError(f"unknown workload {text!r} (shipped: {','.join(shipped)}; or a workload .toml file)")


def workload_list(text: str) -> str:
    """An argparse type: comma-separated workloads, each as :func:`workload` accepts."""
    items = [w for w in text.split(",") if w]
    if not items:
        raise argparse.ArgumentTypeError("needs at least one workload")
    for item in items:
        workload(item)
    return text


def gpu_profile(text: str) -> str:
    """An argparse type: a simulated GPU profile (shipped name, alias such as a100, or TOML file)."""
    from gputuned.collectors.sim.state import load_profile

    try:
        load_profile(text)
    except (ValueError, OSError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text
