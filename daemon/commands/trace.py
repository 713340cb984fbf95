"""``gputuned record``, ``replay`` and ``trace``: record samples, serve them again, convert."""

from __future__ import annotations

import argparse
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from gputuned import EXIT_USAGE, __version__
from gputuned.daemon.commands.argtypes import output_file, positive_float
from gputuned.daemon.commands.run import add_config_flags, live_owner_of, load_or_report
from gputuned.daemon.core.config import ConfigError
from gputuned.progress import ProgressLine, add_progress_flag

if TYPE_CHECKING:
    from gputuned.daemon.record.trace import TraceWriter

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``10m``, ``2h``, ``1d`` to seconds; ValueError naming the text."""
    m = _DURATION.match(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (use e.g. 30s, 10m, 2h)")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def _record(args: argparse.Namespace) -> int:
    cfg = load_or_report(args)
    if cfg is None:
        return 2
    owner = live_owner_of(cfg)
    if owner is not None:  # attach read-only: the daemon's socket, state file and GPU settings stay its own
        print(f"gputuned record: {owner.line()}; recording without actuation or control socket", file=sys.stderr)
        cfg = cfg.model_copy(update={"control": cfg.control.model_copy(update={"enabled": False}),
                                     "actuation": cfg.actuation.model_copy(update={"enabled": False})})
    from gputuned.daemon.app.daemon import Daemon
    from gputuned.daemon.record.trace import Recorder, TraceWriter

    try:
        daemon = Daemon(cfg, serve=False)
    except ValueError as e:  # a config value only the parts can check, e.g. sim.profile from the file
        print(f"gputuned: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        writer = TraceWriter(args.output, {"interval_seconds": cfg.daemon.interval_seconds, "source": daemon.describe()})
    except OSError as e:  # checked while parsing; this is the folder changing since
        print(f"gputuned record: cannot write {args.output}: {e.strerror or e}", file=sys.stderr)
        return EXIT_USAGE
    if owner is not None:
        daemon.actuator.defer_to(owner)  # also when it has changed nothing yet (found by its socket)
    daemon.store.subscribe(Recorder(writer))
    print(f"gputuned {__version__}: recording {args.duration:g} s of {daemon.describe()} to {args.output}", file=sys.stderr)
    # The whole daemon runs (control socket included), so trainer reports are recorded too; next to
    # a live daemon its actuator is attached read-only (it finds the state file's writer alive).
    done = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        daemon.start()
        _wait(done, args.duration, writer, args.progress)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        daemon.stop()
        writer.close()
    print(
        f"wrote {writer.samples_written} samples, {writer.bytes_written} bytes "
        f"({writer.bytes_written / max(writer.samples_written, 1):.2f} bytes/sample)",
        file=sys.stderr,
    )
    return 0


def _wait(done: threading.Event, duration: float, writer: TraceWriter, flag: bool | None) -> None:
    """Wait ``duration`` seconds or until ``done``, drawing the recording's progress on stderr."""
    deadline = time.monotonic() + duration
    with ProgressLine("recording", total=duration, flag=flag) as line:
        while not done.is_set() and (left := deadline - time.monotonic()) > 0:
            done.wait(min(left, 0.5) if line.shown else left)
            line.update(duration - max(deadline - time.monotonic(), 0.0),
                        description=f"recording, {writer.samples_written} samples")


def _replay(args: argparse.Namespace) -> int:
    import threading

    from gputuned.daemon.app.catalog import served_catalog
    from gputuned.daemon.app.config import Config, parse_config
    from gputuned.daemon.core.exporter import MetricsRenderer, MetricsServer
    from gputuned.daemon.core.store import Store
    from gputuned.daemon.record.replay import Replayer
    from gputuned.daemon.record.trace import TraceError, read_trace

    try:
        trace = read_trace(args.file, strict=False)
    except (TraceError, OSError) as e:
        print(f"gputuned: {e}", file=sys.stderr)
        return 2
    if trace.error:
        print(f"gputuned: warning: {trace.error}; replaying the {len(trace.events)} intact events", file=sys.stderr)
    try:
        cfg = parse_config({"exporter": {k: v for k, v in {
            "listen_address": args.listen, "listen_port": args.port, "metric_names": args.metric_names,
        }.items() if v is not None}}, "command line")
    except ConfigError as e:
        print(f"gputuned: config error: {e}", file=sys.stderr)
        return 2
    assert isinstance(cfg, Config)
    store = Store(cfg.store.history_samples, cfg.store.forget_after_s)
    address = (cfg.exporter.listen_address, cfg.exporter.listen_port)
    try:
        server = MetricsServer(address, MetricsRenderer(store, served_catalog(), dcgm=cfg.exporter.metric_names == "dcgm",
                                                        dcgm_version=cfg.exporter.dcgm_version))
    except OSError as e:
        print(f"gputuned replay: cannot serve /metrics on {address[0]}:{address[1]}: {e.strerror or e}", file=sys.stderr)
        return EXIT_USAGE
    server.start()
    print(f"gputuned {__version__}: replaying {args.file} ({trace.sample_count} samples) at {args.speed}x; "
          f"serving {server.where}", flush=True)
    replayer = Replayer(trace, store, args.speed)
    thread = threading.Thread(target=replayer.run, daemon=True)
    thread.start()
    try:
        thread.join()
        if not args.exit:
            threading.Event().wait()  # keep serving the final state until interrupted
    except KeyboardInterrupt:
        replayer.stop()
    finally:
        server.stop()
    return 0


def _export(args: argparse.Namespace) -> int:
    from gputuned.daemon.record.trace import TraceError, read_trace, to_openmetrics

    try:
        trace = read_trace(args.file, strict=not args.partial)
    except (TraceError, OSError) as e:
        print(f"gputuned: {e}", file=sys.stderr)
        return 2
    out = sys.stdout if args.output in (None, "-") else open(args.output, "w")  # noqa: SIM115
    try:
        n = to_openmetrics(trace, out)
    finally:
        if out is not sys.stdout:
            out.close()
    print(f"wrote {n} samples", file=sys.stderr)
    return 0


def _info(args: argparse.Namespace) -> int:
    from gputuned.daemon.record.trace import TraceError, read_trace

    t0 = time.perf_counter()
    try:
        trace = read_trace(args.file, strict=False)
    except (TraceError, OSError) as e:
        print(f"gputuned: {e}", file=sys.stderr)
        return 2
    dt = time.perf_counter() - t0
    size = Path(args.file).stat().st_size
    n = trace.sample_count
    print(f"file: {args.file}\nmeta: {trace.meta}\nseries: {len(trace.series)}\nevents: {len(trace.events)}\n"
          f"samples: {n}\nbytes/sample: {size / max(n, 1):.2f}\nload: {n / dt:,.0f} samples/s")
    if trace.error:
        print(f"damaged: {trace.error}")
        return 1
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("record", help="run the collectors and write every sample to a trace file")
    add_config_flags(p)
    p.add_argument("--duration", type=parse_duration, default=60.0, help="how long, e.g. 30s, 10m (default 60s)")
    p.add_argument("-o", "--output", type=output_file, required=True, help="trace file to write, e.g. node.gttrace")
    add_progress_flag(p)
    p.set_defaults(func=_record)

    p = sub.add_parser("replay", help="serve a recorded trace through the exporter")
    p.add_argument("file", help="trace file")
    p.add_argument("--speed", type=positive_float, default=1.0,
                   help="replay speed factor, > 0 (default 1; inf: as fast as possible)")
    p.add_argument("--listen", help="address for /metrics")
    p.add_argument("--port", type=int, help="port for /metrics")
    p.add_argument("--metric-names", choices=["gputuned", "dcgm"])
    p.add_argument("--exit", action="store_true", help="exit when the trace ends instead of serving its last state")
    p.set_defaults(func=_replay)

    p = sub.add_parser("trace", help="inspect or convert trace files")
    tsub = p.add_subparsers(dest="trace_command", metavar="ACTION", required=True)
    e = tsub.add_parser("export", help="convert to OpenMetrics text (for promtool tsdb create-blocks-from openmetrics)")
    e.add_argument("file")
    e.add_argument("-o", "--output", help="output file (default stdout)")
    e.add_argument("--partial", action="store_true", help="export the intact part of a damaged file")
    e.set_defaults(func=_export)
    i = tsub.add_parser("info", help="summarise a trace file and time its loading")
    i.add_argument("file")
    i.set_defaults(func=_info)
