"""Answers made already, sent by the HTTP front's selector thread: no worker woken, the rest handed over."""

from __future__ import annotations

import gzip
import socket
import threading
import time
from collections.abc import Callable

from gputuned.collectors import families as F
from gputuned.daemon.core.config import ExporterConfig
from gputuned.daemon.core.exporter import MetricsRenderer, MetricsServer
from gputuned.daemon.core.http_front import HttpFront
from gputuned.daemon.core.http_wire import Request, Response
from gputuned.daemon.core.store import Store

BIG = b"y" * (16 << 20)  # more than a loopback socket takes at once


def _front(ready_body: bytes) -> tuple[HttpFront, list[str]]:
    handled: list[str] = []

    def handler(req: Request) -> Response:
        handled.append(req.path)
        return Response(200, b"worker\n")

    def ready(req: Request) -> Response | None:
        return Response(200, ready_body) if req.path == "/ready" else None

    front = HttpFront(("127.0.0.1", 0), handler, ExporterConfig(workers=2, read_timeout_seconds=5.0), ready=ready)
    front.start()
    return front, handled


def _read_response(s: socket.socket, buf: bytearray) -> bytes:
    """One response's body off ``s`` (Content-Length framed); what follows stays in ``buf``."""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(65536)
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    buf[:] = rest
    while len(buf) < length:
        buf += s.recv(1 << 20)
    body, buf[:] = bytes(buf[:length]), buf[length:]
    return body


def test_made_answers_go_out_from_the_selector_and_the_rest_to_a_worker() -> None:
    front, handled = _front(b"made\n")
    try:
        s = socket.create_connection(front.server_address, timeout=5)
        buf = bytearray()
        for _ in range(5):
            s.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _read_response(s, buf) == b"made\n"
        # pipelined: two made answers, then one for a worker, then a made one after it, in order
        s.sendall(b"GET /ready HTTP/1.1\r\n\r\nGET /ready HTTP/1.1\r\n\r\nGET /other HTTP/1.1\r\n\r\nGET /ready HTTP/1.1\r\n\r\n")
        assert [_read_response(s, buf) for _ in range(4)] == [b"made\n", b"made\n", b"worker\n", b"made\n"]
        assert handled == ["/other"] and _eventually(lambda: front.stats["requests"] == 9)
        s.close()
    finally:
        front.stop()


def test_a_made_answer_the_socket_takes_in_part_is_finished_by_a_worker() -> None:
    front, handled = _front(BIG)
    try:
        s = socket.create_connection(front.server_address, timeout=10)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        buf = bytearray()
        s.sendall(b"GET /ready HTTP/1.1\r\n\r\n")
        time.sleep(0.2)  # the selector has sent what the socket took
        assert _read_response(s, buf) == BIG
        s.sendall(b"GET /ready HTTP/1.1\r\n\r\n")  # the connection is kept after the worker's part
        assert _read_response(s, buf) == BIG and handled == []
        s.close()
    finally:
        front.stop()


def test_a_made_answer_that_fails_is_answered_by_a_worker_and_the_selector_lives_on() -> None:
    calls: list[str] = []

    def ready(req: Request) -> Response | None:
        calls.append(req.path)
        if len(calls) == 1:
            raise ValueError("no body")
        return None

    front = HttpFront(("127.0.0.1", 0), lambda req: Response(200, b"worker\n"), ExporterConfig(workers=2), ready=ready)
    front.start()
    try:
        for _ in range(2):
            s = socket.create_connection(front.server_address, timeout=5)
            s.sendall(b"GET /ready HTTP/1.1\r\n\r\n")
            assert _read_response(s, bytearray()) == b"worker\n"
            s.close()
        assert calls == ["/ready", "/ready"]
    finally:
        front.stop()


def test_a_scrape_polled_every_tick_is_answered_without_a_worker() -> None:
    fam = F.declare("gputuned_test_ready_watts", "gauge", "Power.")
    store = Store(8)
    renderer = MetricsRenderer(store, F.catalog([fam]))
    server = MetricsServer(("127.0.0.1", 0), renderer, limits=ExporterConfig(workers=2))
    before = set(threading.enumerate())
    server.start()
    workers = [t for t in threading.enumerate() if t not in before and t.name.startswith("gputuned-http-")]
    assert len(workers) == 2
    try:
        s = socket.create_connection(server.server_address, timeout=5)
        buf, answered_by_workers = bytearray(), []
        for tick in range(8):
            store.publish("gpu", float(tick), [(fam, (("gpu", "0"),), float(tick))])
            renderer.tick_ended()
            switches = _switches(workers)
            s.sendall(b"GET /metrics HTTP/1.1\r\nAccept-Encoding: gzip\r\n\r\n")
            body = gzip.decompress(_read_response(s, buf))
            assert f'gputuned_test_ready_watts{{gpu="0"}} {float(tick)!r}'.encode() in body
            answered_by_workers.append(_switches(workers) > switches)
        assert answered_by_workers == [True] * 3 + [False] * 5, answered_by_workers
        assert renderer.scrapes[("text", "gzip")] == 8 and _eventually(lambda: server.front.stats["requests"] == 8)
        s.close()
    finally:
        server.stop()


def _eventually(cond: Callable[[], bool]) -> bool:
    """Whether ``cond`` holds within 2 s (a worker counts its request after the client has the answer)."""
    deadline = time.monotonic() + 2
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.01)
    return cond()


def _switches(threads: list[threading.Thread]) -> int:
    """Voluntary context switches of ``threads`` so far (each wake-up of a worker is one)."""
    total = 0
    for t in threads:
        with open(f"/proc/self/task/{t.native_id}/status") as f:
            total += next(int(x.split()[1]) for x in f if x.startswith("voluntary_ctxt_switches"))
    return total
