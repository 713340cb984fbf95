"""CallGate: a hung call downs its GPU once, later calls fail at once, one worker thread throughout."""

from __future__ import annotations

import threading
import time

import pytest

from gputuned.collectors.calls import CallGate, GPUHungError, Lane
from gputuned.collectors.device import NotSupportedError


def _workers(name: str) -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith(f"gputuned-nvml-{name}"))


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
        gate.wait(queued)
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


def test_gpus_sharing_a_lane_run_on_one_thread_in_order() -> None:
    lane = Lane("lane a")
    gates = [CallGate(f"gpu {i}", 1.0, lane=lane) for i in range(8)]
    order: list[tuple[int, str]] = []
    jobs = [g.submit("read", lambda i=i: order.append((i, threading.current_thread().name))) for i, g in enumerate(gates)]
    for g, job in zip(gates, jobs, strict=True):
        g.wait(job)
    assert order == [(i, "gputuned-nvml-lane a") for i in range(8)] and _workers("lane a") == 1
    gates[0].close()


def test_a_hang_on_a_shared_lane_downs_its_gpu_alone_and_the_calls_behind_it_move_on() -> None:
    lane = Lane("lane b")
    hung_gpu, other = CallGate("gpu 3", 0.3, lane=lane), CallGate("gpu 4", 0.3, lane=lane)
    release = threading.Event()
    ran: list[str] = []
    hung = hung_gpu.submit("set power limit", lambda: release.wait(5))
    behind_own = hung_gpu.submit("lock sm clocks", lambda: ran.append("late set"))
    behind_other = other.submit("readings", lambda: threading.current_thread().name)
    raised: list[float] = []

    def own_waiter() -> None:  # the setter's thread, waiting on the hung call itself
        t = time.monotonic()
        with pytest.raises(GPUHungError, match="gpu 3: NVML call set power limit has not returned within 0.3 s"):
            hung_gpu.wait(hung)
        raised.append(time.monotonic() - t)

    setter = threading.Thread(target=own_waiter)
    setter.start()
    t0 = time.monotonic()
    assert other.wait(behind_other) == "gputuned-nvml-lane b"  # read on a new worker, not hidden by gpu 3
    assert 0.25 < time.monotonic() - t0 < 1.0
    setter.join(2.0)
    assert raised and raised[0] < 1.0
    with pytest.raises(GPUHungError):
        hung_gpu.wait(behind_own)
    assert hung_gpu.down_reason is not None and other.down_reason is None and hung_gpu.hangs == 1
    assert other.call("power", lambda: 5) == 5
    with pytest.raises(GPUHungError):
        hung_gpu.call("power", lambda: 1)
    assert _workers("lane b") == 1 and _workers("gpu 3 (hung)") == 1
    release.set()
    deadline = time.monotonic() + 2
    while (hung_gpu.down_reason is not None or _workers("gpu 3")) and time.monotonic() < deadline:
        time.sleep(0.01)  # the left thread ends once its call returns
    assert hung_gpu.down_reason is None and _workers("gpu 3") == 0
    assert hung_gpu.call("power", lambda: threading.current_thread().name) == "gputuned-nvml-lane b"
    assert ran == []
    other.close()


def test_close_with_calls_queued_runs_them_and_later_ones_on_the_same_thread_in_order() -> None:
    lane = Lane("lane c")
    gate = CallGate("gpu 5", 1.0, lane=lane)
    release, ran = threading.Event(), []
    first = gate.submit("slow", lambda: release.wait(1))
    queued = [gate.submit(f"read {i}", lambda i=i: ran.append(i)) for i in range(3)]
    gate.close()  # at shutdown, or a collector closed while another thread still calls
    later = gate.submit("read 3", lambda: ran.append(3))
    assert _workers("lane c") == 1  # no second worker beside the one still busy
    release.set()
    for job in (first, *queued, later):
        gate.wait(job)
    assert ran == [0, 1, 2, 3]
    gate.close()
    deadline = time.monotonic() + 2
    while _workers("lane c") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _workers("lane c") == 0  # closed and idle: it ends
