"""CallGate: a hung call downs its GPU once, later calls fail at once, one worker thread throughout."""

from __future__ import annotations

import threading
import time

import pytest

from gputuned.collectors.calls import CallGate, GPUHungError
from gputuned.collectors.device import NotSupportedError


def _workers(name: str) -> int:
    return sum(1 for t in threading.enumerate() if t.name == f"gputuned-nvml-{name}")


def test_results_and_errors_come_back_from_the_worker() -> None:
    gate = CallGate("gpu 7", 1.0)
    assert gate.call("power", lambda: 42) == 42
    with pytest.raises(NotSupportedError):
        gate.call("fan", lambda: (_ for _ in ()).throw(NotSupportedError("no fan")))
    assert gate.call("nested", lambda: gate.call("inner", lambda: threading.current_thread().name)) == "gputuned-nvml-gpu 7"
    gate.close()


def test_a_hung_call_downs_the_gpu_until_it_returns_and_queued_calls_never_run_late() -> None:
    gate = CallGate("gpu 8", 0.2)
    release = threading.Event()
    ran: list[str] = []
    hung = gate.submit("set power limit", lambda: release.wait(5))
    queued = gate.submit("lock sm clocks", lambda: ran.append("late set"))
    t0 = time.monotonic()
    with pytest.raises(GPUHungError, match="set power limit has not returned within 0.2 s"):
        gate.wait(hung)
    with pytest.raises(GPUHungError):
        gate.wait(queued, 0.0)
    assert 0.15 < time.monotonic() - t0 < 1.0
    assert gate.down_reason is not None and gate.hangs == 1
    t1 = time.monotonic()
    for _ in range(20):  # while hung: at once, and no new worker
        with pytest.raises(GPUHungError):
            gate.call("power", lambda: 1.0)
    assert time.monotonic() - t1 < 0.1 and _workers("gpu 8") == 1
    release.set()
    deadline = time.monotonic() + 2
    while gate.down_reason is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gate.down_reason is None and gate.call("power", lambda: 2.0) == 2.0
    assert ran == []  # the call queued behind the hang was given up on and never ran
    gate.close()
