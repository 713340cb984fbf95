"""The control socket's thread sleeps while it holds no connection, and still accepts and stops at once."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

from gputuned import protocol as P
from gputuned.daemon.control import server as S
from gputuned.daemon.control.config import ControlConfig
from gputuned.daemon.core.store import Store
from gputuned.daemon.record.child import hello, read_frame


def counted(srv: S.ControlServer) -> list[float]:
    """The timeouts of the selector's waits from now on."""
    waits: list[float] = []
    select = srv._sel.select

    def select_counted(timeout: float | None = None) -> Any:
        waits.append(timeout or 0.0)
        return select(timeout)

    srv._sel.select = select_counted  # type: ignore[method-assign]
    return waits


def test_idle_the_selector_waits_long_and_a_hello_is_answered_at_once(tmp_path: Path) -> None:
    srv = S.ControlServer(ControlConfig(socket_path=tmp_path / "c.sock"), Store(60))
    srv.start()
    try:
        srv._wake()  # the thread is in a wait that started before counting: end it
        waits = counted(srv)
        time.sleep(1.2)
        assert len(waits) <= 2 and set(waits) == {S.IDLE_S}  # was a wake every 0.25 s
        t0 = time.monotonic()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(tmp_path / "c.sock"))
            s.sendall(P.encode(hello(job="j", rank=0, world=1)))
            assert read_frame(s)["type"] == "welcome"
            assert time.monotonic() - t0 < 0.5
            time.sleep(0.3)
            assert waits[-1] == S.SWEEP_S  # a held connection's deadlines are swept
    finally:
        t0 = time.monotonic()
        srv.stop()
    assert time.monotonic() - t0 < 0.5
