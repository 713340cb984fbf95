"""Record the small traces shipped under tests/data/ from scripted simulated nodes.

Deterministic GPU values (scripted, virtual clock); host values are whatever this machine
reads. Run: .venv/bin/python bench/make_core_traces.py [--seconds 60]
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from _common import BenchParser, positive_int

from gputuned.collectors.gpu import GPUCollector
from gputuned.collectors.host import HostCollector
from gputuned.collectors.nvml import open_gpus, open_nvml
from gputuned.collectors.sim import nvml as sim_nvml
from gputuned.collectors.sim.state import VirtualClock, scripted_from_spec
from gputuned.daemon.core.loop import CollectionLoop
from gputuned.daemon.core.store import Store
from gputuned.daemon.record.trace import Recorder, TraceWriter

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def record(spec_path: Path, out: Path, seconds: int) -> None:
    clock = VirtualClock()
    sim_nvml.attach(scripted_from_spec(tomllib.loads(spec_path.read_text()), clock=clock))
    nvml, _ = open_nvml("sim", sim_nvml)
    store = Store(0)
    loop = CollectionLoop([GPUCollector(open_gpus(nvml), "550.54.15", "sim"), HostCollector()], store, 1.0,
                          wallclock=lambda: T0 + clock.now())
    writer = TraceWriter(out, {"interval_seconds": 1.0, "source": f"scripted node {spec_path.name}"})
    store.subscribe(Recorder(writer))
    for _ in range(seconds):
        loop.tick()
        clock.advance(1.0)
    writer.close()
    print(f"{out}: {writer.samples_written} samples, {writer.bytes_written} bytes, "
          f"{writer.bytes_written / writer.samples_written:.2f} bytes/sample")


def main() -> int:
    ap = BenchParser(description=__doc__)
    ap.add_argument("--seconds", type=positive_int, default=60, help="1 s ticks to record")
    ap.add_argument("-o", "--output", type=Path, default=DATA / "scripted_node_8xh100.gttrace", help="trace file to write")
    args = ap.parse_args()
    record(DATA / "scripted_node.toml", args.output, args.seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
