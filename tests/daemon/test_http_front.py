"""The bounded HTTP front of /metrics: idle floods, timeouts, aborted scrapes, TLS and basic auth."""

from __future__ import annotations

import base64
import errno
import logging
import selectors
import socket
import ssl
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from gputuned.daemon.core.config import ConfigError, ExporterConfig
from gputuned.daemon.core.exporter import MetricsRenderer, MetricsServer
from gputuned.daemon.core.fd_budget import FdBudget
from gputuned.daemon.core.http_wire import Request, Response, format_response, parse_head
from gputuned.daemon.core.store import Store
from gputuned.daemon.core.web_config import load_web_config


class BigRenderer(MetricsRenderer):
    """A renderer whose body is large enough that a client gone away makes the write fail."""

    def render(self, **_: object) -> bytes:
        return b"x" * (32 << 20)


class SlowRenderer(MetricsRenderer):
    """A renderer that takes 0.2 s a body, so that requests outnumber the workers."""

    def render(self, **_: object) -> bytes:
        time.sleep(0.2)
        return b"slow\n"


def _server(renderer_cls: type[MetricsRenderer] = MetricsRenderer, **limits: float) -> MetricsServer:
    store = Store(10)
    kw = {"max_connections": 8, "workers": 2, "read_timeout_seconds": 5.0, **limits}
    return MetricsServer(("127.0.0.1", 0), renderer_cls(store, {}), limits=ExporterConfig(**kw))  # type: ignore[arg-type]


@pytest.fixture
def server() -> Iterator[MetricsServer]:
    s = _server()
    s.start()
    yield s
    s.stop()


def _http_threads() -> int:
    return sum(t.name.startswith("gputuned-http") for t in threading.enumerate())


def _half_open(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never finished
        socks.append(s)
    return socks


def test_fifty_idle_connections_do_not_stop_a_scrape_and_threads_stay_bounded(server: MetricsServer) -> None:
    threads_before = threading.active_count()
    socks = _half_open(server.server_address[1], 50)
    try:
        time.sleep(0.3)
        t0 = time.monotonic()
        with urllib.request.urlopen(server.url, timeout=5) as r:  # noqa: S310 - loopback
            assert r.status == 200
        assert time.monotonic() - t0 < 2.0
        assert server.front.connections <= 8
        assert _http_threads() == 1 + 2
        assert threading.active_count() == threads_before
        assert server.front.stats["evicted"] >= 50 - 8
    finally:
        for s in socks:
            s.close()


def test_an_idle_connection_is_closed_after_the_read_timeout() -> None:
    server = _server(read_timeout_seconds=0.5)
    server.start()
    try:
        s = socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=5)
        t0 = time.monotonic()
        s.sendall(b"GET /metrics HTTP/1.1\r\n")
        assert s.recv(100) == b""  # closed by the server, no response
        assert 0.4 <= time.monotonic() - t0 < 2.0
        assert server.front.stats["timed_out"] == 1
        s.close()
    finally:
        server.stop()


def test_an_aborted_scrape_logs_one_line_and_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    server = _server(BigRenderer)
    server.start()
    caplog.set_level(logging.DEBUG)
    try:
        s = socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=5)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(64).startswith(b"HTTP/1.1 200")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset, not a clean close
        s.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (server.front.stats["aborted"] or server.front.stats["write_failed"]):
            time.sleep(0.02)
        assert server.front.stats["aborted"] == 1
        with urllib.request.urlopen(server.url.replace("/metrics", "/healthz"), timeout=5) as r:  # noqa: S310
            assert r.read() == b"ok\n"
    finally:
        server.stop()
    http = [r for r in caplog.records if r.name.startswith("gputuned.daemon.core")]
    assert not any(r.exc_info for r in http)
    assert not any("Traceback" in r.getMessage() for r in http)
    assert len([r for r in http if "went away" in r.getMessage()]) == 1


def test_keep_alive_serves_several_requests_on_one_connection(server: MetricsServer) -> None:
    s = socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=5)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while data.count(b"ok\n") < 2:
        chunk = s.recv(4096)
        assert chunk
        data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 2
    s.close()


def test_an_idle_keep_alive_connection_does_not_wake_the_selector(server: MetricsServer) -> None:
    selects: list[float | None] = []
    select = server.front._sel.select

    def counted(timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        selects.append(timeout)
        return select(timeout)

    server.front._sel.select = counted
    s = socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=5)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(4096).endswith(b"ok\n")
        time.sleep(0.2)  # the worker's answer handed back
        n = len(selects)
        time.sleep(1.0)
        assert server.front.connections == 1
        assert len(selects) - n <= 1  # held for 1 s of its 5 s read timeout: one sleep, not one per sweep
    finally:
        s.close()


def _switches(thread: threading.Thread) -> int:
    """Context switches of ``thread`` so far: every time it slept (or was put aside) and ran again."""
    with open(f"/proc/self/task/{thread.native_id}/status") as f:
        return sum(int(line.split()[1]) for line in f if "ctxt_switches" in line)


def test_a_request_wakes_one_worker_and_the_other_workers_sleep_on(server: MetricsServer) -> None:
    workers = [t for t in threading.enumerate() if t.name.startswith("gputuned-http-")]
    s = socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=5)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(4096).endswith(b"ok\n")
        before = [_switches(t) for t in workers]
        for _ in range(10):
            time.sleep(0.02)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(4096).endswith(b"ok\n")
        woke = [_switches(t) - n for t, n in zip(workers, before, strict=True)]
        assert len(workers) == 2 and sorted(woke)[0] == 0, woke  # one shared queue woke both on every request
    finally:
        s.close()


def test_requests_beyond_the_workers_wait_and_are_all_answered() -> None:
    server = _server(SlowRenderer)
    server.start()
    try:
        socks = [socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=5) for _ in range(5)]
        t0 = time.monotonic()
        for s in socks:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert all(s.recv(4096).endswith(b"slow\n") for s in socks)
        assert time.monotonic() - t0 >= 0.55  # 2 workers: 3 rounds of 0.2 s
        for s in socks:
            s.close()
    finally:
        server.stop()


class _FailingListener:
    """A listening socket whose first accept fails as when the process is out of descriptors."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.failed = sock, False

    def __getattr__(self, name: str) -> object:
        return getattr(self.sock, name)

    def accept(self) -> tuple[socket.socket, object]:
        if not self.failed:
            self.failed = True
            raise OSError(errno.EMFILE, "Too many open files")
        return self.sock.accept()


def test_accepting_resumes_when_its_pause_ends_while_a_connection_is_idle() -> None:
    server = _server(read_timeout_seconds=30.0)
    server.front._listener = _FailingListener(server.front._listener)
    server.start()
    idle = socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=5)
    try:
        t0 = time.monotonic()
        with urllib.request.urlopen(server.url.replace("/metrics", "/healthz"), timeout=5) as r:  # noqa: S310
            assert r.read() == b"ok\n"
        assert time.monotonic() - t0 < 1.0  # the pause is 0.1 s; the idle connection's deadline is 30 s away
        assert server.front.stats["accept_errors"] == 1
    finally:
        idle.close()
        server.stop()


def test_a_request_with_a_body_or_a_bad_line_is_refused() -> None:
    assert parse_head(b"POST /metrics HTTP/1.1\r\nContent-Length: 5", "p") is None
    assert parse_head(b"GET /metrics", "p") is None
    req = parse_head(b"GET /metrics HTTP/1.0\r\nHost: x", "p")
    assert isinstance(req, Request) and not req.keep_alive


def test_a_head_parsed_again_is_the_same_request_with_headers_of_its_own() -> None:
    head = b"GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip"
    first = parse_head(head, "a:1")
    assert first is not None
    first.headers["accept-encoding"] = "identity"  # a handler's change stays in its own request
    again = parse_head(head, "b:2")
    assert again == Request("GET", "/metrics?x=1", "HTTP/1.1", {"host": "x", "accept-encoding": "gzip"}, "b:2")
    assert parse_head(b"GET /metrics HTTP/1.1\r\nno colon", "p") is None
    assert parse_head(b"GET /metrics HTTP/1.1\r\nno colon", "p") is None  # a refused head stays refused


def test_a_response_on_the_wire() -> None:
    resp = Response(200, b"ok\n", headers=(("Vary", "Accept-Encoding"),))
    assert format_response(resp, head_only=False, keep_alive=True) == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 3\r\n"
        b"Connection: keep-alive\r\nVary: Accept-Encoding\r\n\r\nok\n")
    assert format_response(Response(404, b"nf"), head_only=True, keep_alive=False) == (
        b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 2\r\n"
        b"Connection: close\r\n\r\n")


def test_a_body_larger_than_the_socket_buffer_is_sent_whole_and_the_connection_kept() -> None:
    server = _server(BigRenderer)
    server.start()
    try:
        s = socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=10)
        for _ in range(2):  # the second request proves the connection went back to the selector
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 4 + (32 << 20):
                chunk = s.recv(1 << 20)
                assert chunk
                data += chunk
            assert data.startswith(b"HTTP/1.1 200 OK") and data.endswith(b"x" * 1000)
            assert len(data) == data.index(b"\r\n\r\n") + 4 + (32 << 20)
        s.close()
    finally:
        server.stop()


def _bcrypt_hash(password: str) -> str:
    bcrypt = pytest.importorskip("bcrypt")
    return str(bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode())


def test_basic_auth_from_an_exporter_toolkit_web_config(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  prom: '{_bcrypt_hash('s3cret')}'\n")
    store = Store(10)
    server = MetricsServer(("127.0.0.1", 0), MetricsRenderer(store, {}), web=load_web_config(web))
    server.start()
    try:
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(server.url, timeout=5)  # noqa: S310
        assert e.value.code == 401
        for password, code in (("wrong", 401), ("s3cret", 200), ("s3cret", 200)):
            token = base64.b64encode(f"prom:{password}".encode()).decode()
            req = urllib.request.Request(server.url, headers={"Authorization": f"Basic {token}"})
            try:
                got = urllib.request.urlopen(req, timeout=5).status  # noqa: S310
            except urllib.error.HTTPError as err:
                got = err.code
            assert got == code, password
    finally:
        server.stop()


def test_tls_from_an_exporter_toolkit_web_config(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                        "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem")],
                       capture_output=True, check=False)
    if r.returncode:
        pytest.skip("openssl cannot make a test certificate")
    web = tmp_path / "web.yml"
    web.write_text("tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n")
    server = MetricsServer(("127.0.0.1", 0), MetricsRenderer(Store(10), {}), web=load_web_config(web))
    server.start()
    try:
        assert server.url.startswith("https://")
        plain = socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=5)  # a client that never handshakes
        ctx = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
        ctx.check_hostname = False
        with urllib.request.urlopen(server.url.replace("/metrics", "/healthz"), timeout=5, context=ctx) as resp:  # noqa: S310
            assert resp.read() == b"ok\n"
        plain.close()
    finally:
        server.stop()


@pytest.mark.parametrize("text, words", [
    ("tls_server_config:\n  cert_file: a\n", "needs cert_file and key_file"),
    ("tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [x]\n", "cipher_suites: not supported"),
    ("basic_auth_users:\n  prom: plaintext\n", "not a bcrypt hash"),
    ("http_server_config:\n  http2: true\n", "http_server_config: not supported"),
])
def test_a_bad_web_config_is_a_config_error_naming_the_key(tmp_path: Path, text: str, words: str) -> None:
    pytest.importorskip("yaml")
    web = tmp_path / "web.yml"
    web.write_text(text)
    with pytest.raises(ConfigError, match=words):
        load_web_config(web)


def test_the_fd_budget_is_low_when_the_process_cannot_count_its_descriptors(tmp_path: Path) -> None:
    assert not FdBudget(reserved=16, fd_dir=str(tmp_path)).low(time.monotonic())
    assert FdBudget(reserved=16, fd_dir=str(tmp_path / "absent")).low(time.monotonic())


def test_short_of_descriptors_a_newcomer_only_replaces_an_idle_connection(server: MetricsServer,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    socks = _half_open(server.server_address[1], 3)
    time.sleep(0.3)
    monkeypatch.setattr(server.front._budget, "low", lambda now: True)
    with urllib.request.urlopen(server.url, timeout=5) as r:  # noqa: S310 - loopback
        assert r.status == 200
    assert server.front.connections <= 3
    for s in socks:
        s.close()
    time.sleep(0.3)
    with pytest.raises(urllib.error.HTTPError) as e:  # nothing idle left to replace: refused, not queued
        urllib.request.urlopen(server.url, timeout=5)  # noqa: S310
    assert e.value.code == 503 and server.front.stats["refused_fds"] >= 1
