"""The Prometheus exporter: the store's latest samples over HTTP, rendered once per store generation.

Scrapes never touch hardware: they serve what the collection loop last published. A body is
rendered once per store generation for each format (Prometheus text or OpenMetrics, as the
``Accept`` header asks), encoding (gzip when ``Accept-Encoding`` allows it) and ``collect[]``
filter, so a scrape between two ticks costs a dictionary lookup and a socket write; a gzip body
compresses the identity body of its generation, so the text is rendered once whichever
encodings are asked for; rendering formats only values, each series' name and labels being kept
from the previous render, and a family whose values did not change keeps its text too
(:mod:`.exposition`). The endpoint sits behind a bounded front (a connection cap, timeouts, a
worker pool and a reserve of file descriptors); the web config file adds TLS and basic auth.
With ``dcgm=True`` every GPU family that has a dcgm-exporter equivalent is served a second time
under DCGM's name, labels and units, as the configured dcgm-exporter release serves them.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterable
from functools import lru_cache
from urllib.parse import parse_qs

from isal import igzip

from gputuned.collectors import families as F
from gputuned.collectors.families import Catalog, Sample
from gputuned.daemon.core.config import ExporterConfig
from gputuned.daemon.core.dcgm import DEFAULT_VERSION, DcgmLabels
from gputuned.daemon.core.exposition import OPENMETRICS, TEXT, Encoder
from gputuned.daemon.core.http_front import HttpFront
from gputuned.daemon.core.http_wire import Request, Response
from gputuned.daemon.core.store import Store
from gputuned.daemon.core.web_config import WebConfig, load_web_config

logger = logging.getLogger(__name__)

EXPORTER_SOURCE = "exporter"
SCRAPES = F.declare("gputuned_exporter_scrapes_total", "counter", "Scrapes of /metrics answered, by format and encoding.")
RESPONSE_BYTES = F.declare("gputuned_exporter_response_bytes_total", "counter", "Bytes of /metrics bodies sent.")
RENDERS = F.declare("gputuned_exporter_renders_total", "counter", "Bodies made (at most one per store generation, format, encoding and filter; a gzip body compresses the identity one).")
RENDER_SECONDS = F.declare("gputuned_exporter_render_seconds_total", "counter", "CPU time spent rendering and compressing bodies.")
#: The exporter's own families, served under the source name ``exporter`` (as of the render that serves them).
SELF_FAMILIES = F.catalog([SCRAPES, RESPONSE_BYTES, RENDERS, RENDER_SECONDS])
#: Compression level of gzip bodies, by ISA-L's igzip (levels 0-3; 2, its default): 5x faster than zlib's
#: level 3 on exposition text, at its size for 8 GPUs (7.2 kB of 89 kB) and a third larger for 64 (32 kB against
#: 24.7 kB; docs/benchmarks.md, "Exposition cost: gzip by ISA-L, ...").
GZIP_LEVEL = 2
#: A body asked for in at least POLLED_TICKS of the last POLL_WINDOW ticks is made at the end of each tick, on
#: the collection loop's thread, ahead of its scrape: a scraper polling every tick, one tick skipped now and then
#: as its period drifts against the ticks' (a 2 s or 15 s scraper: on demand).
POLLED_TICKS, POLL_WINDOW = 3, 4


_Key = tuple[bool, bool, tuple[str, ...]]  # OpenMetrics, gzip, collect[] sources


class MetricsRenderer:
    """Renders /metrics bodies, once per store generation for each format, encoding and ``collect[]`` filter.

    ``catalog`` gives each served family its type and help text (a series whose family it
    lacks is served untyped); the composition root passes the catalog of every declaring module.
    """

    def __init__(self, store: Store, catalog: Catalog, *, dcgm: bool = False, hostname: str | None = None,
                 dcgm_version: str = DEFAULT_VERSION) -> None:
        self._store = store
        full = {**catalog, **SELF_FAMILIES}
        labels = DcgmLabels(hostname or socket.gethostname(), dcgm_version) if dcgm else None
        self._encoders = {om: Encoder(full, openmetrics=om, dcgm=labels) for om in (False, True)}
        self._lock = threading.Lock()  # the bodies and the encoders
        self._count_lock = threading.Lock()  # the scrape counts
        self._generation = -1
        self._bodies: dict[_Key, bytes] = {}
        self._asked: set[_Key] = set()  # the bodies asked for since the last tick ended
        self._polled: dict[_Key, int] = {}  # by body: a bit for each of the last POLL_WINDOW ticks, set if asked for
        self.renders = 0
        self.render_seconds = 0.0
        self.scrapes: dict[tuple[str, str], int] = {}
        self.response_bytes = 0

    def sources(self) -> list[str]:
        """What ``collect[]`` may name: the store's sources and the exporter itself."""
        return sorted({*self._store.sources(), EXPORTER_SOURCE})

    def render(self, *, openmetrics: bool = False, gzipped: bool = False, collect: Iterable[str] = ()) -> bytes:
        """The body for one format, encoding and filter (empty ``collect``: every source), rendered at most once a generation."""
        key = (openmetrics, gzipped, tuple(sorted(set(collect))))
        with self._lock:
            self._asked.add(key)
            return self._current(key)

    def tick_ended(self) -> None:
        """Make now the bodies asked for in :data:`POLLED_TICKS` of the last :data:`POLL_WINDOW` ticks: their
        scrapes then find them made (a render on the loop's thread, its data fresh in cache, and no wait for a worker)."""
        with self._lock:
            asked, self._asked = self._asked, set()
            window = (1 << POLL_WINDOW) - 1
            polled = {key: ((self._polled.get(key, 0) << 1) | (key in asked)) & window for key in {*self._polled, *asked}}
            self._polled = {key: bits for key, bits in polled.items() if bits}
            for key, bits in self._polled.items():
                if bits.bit_count() >= POLLED_TICKS:
                    self._current(key)

    def made(self, *, openmetrics: bool, gzipped: bool) -> bytes | None:
        """The unfiltered body of the store's generation now if it is made already (and noted as asked
        for), else None; never waits for a render in progress."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            key: _Key = (openmetrics, gzipped, ())
            body = self._bodies.get(key) if self._store.generation == self._generation else None
            if body is not None:
                self._asked.add(key)
            return body
        finally:
            self._lock.release()

    def _current(self, key: _Key) -> bytes:
        """The body for ``key`` of the store's generation now (lock held)."""
        gen = self._store.generation
        if gen != self._generation:
            self._bodies.clear()
            self._generation = gen
        return self._body(key)

    def _body(self, key: _Key) -> bytes:
        """The body for ``key``, made once a generation; gzip compresses the same generation's identity body (lock held)."""
        body = self._bodies.get(key)
        if body is None:
            openmetrics, gzipped, collect = key
            plain = self._body((openmetrics, False, collect)) if gzipped else b""
            t0 = time.thread_time()
            body = igzip.compress(plain, GZIP_LEVEL, mtime=0) if gzipped else self._render(openmetrics, collect).encode()
            self.render_seconds += time.thread_time() - t0
            self.renders += 1
            self._bodies[key] = body
        return body

    def count(self, fmt: str, encoding: str, nbytes: int) -> None:
        """Note one scrape answered (the exporter's own series; never waits for a render)."""
        with self._count_lock:
            self.scrapes[(fmt, encoding)] = self.scrapes.get((fmt, encoding), 0) + 1
            self.response_bytes += nbytes

    def _render(self, openmetrics: bool, collect: tuple[str, ...]) -> str:
        _, snapshot = self._store.snapshot()
        samples: list[Sample] = []
        for source, _, smp in snapshot:
            if not collect or source in collect:
                samples.extend(smp)
        if not collect or EXPORTER_SOURCE in collect:
            samples.extend(self._self_samples())
        return self._encoders[openmetrics].render(samples)

    def _self_samples(self) -> list[Sample]:
        with self._count_lock:
            out: list[Sample] = [(SCRAPES, (("format", f), ("encoding", e)), float(n))
                                 for (f, e), n in sorted(self.scrapes.items())]
            out.append((RESPONSE_BYTES, (), float(self.response_bytes)))
        return [*out, (RENDERS, (), float(self.renders)),
                (RENDER_SECONDS, (), self.render_seconds)]


_INDEX = b'<html><body><a href="/metrics">/metrics</a></body></html>\n'
_UNAUTHORIZED = Response(401, b"unauthorized\n", headers=(("WWW-Authenticate", 'Basic realm="gputuned"'),))
#: Health endpoints as dcgm-exporter's chart (/health), Kubernetes habit (/healthz) and Prometheus (/-/healthy) probe them.
HEALTH_PATHS = frozenset(("/health", "/healthz", "/-/healthy", "/-/ready"))


@lru_cache(maxsize=64)  # a scraper sends the same headers every time
def accepts(header: str, media: str) -> bool:
    """Whether an Accept or Accept-Encoding header lists ``media`` with a non-zero q."""
    for part in header.lower().split(","):
        name, *params = (p.strip() for p in part.split(";"))
        if name == media:
            return not any(p.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000") for p in params)
    return False


class MetricsServer:
    """/metrics, the health endpoints and an index page behind a bounded HTTP front (see :mod:`.http_front`)."""

    def __init__(self, address: tuple[str, int], renderer: MetricsRenderer, *, limits: ExporterConfig | None = None,
                 web: WebConfig | None = None) -> None:
        self.renderer = renderer
        self.web = web or WebConfig()
        self.front = HttpFront(address, self._answer, limits, self.web.ssl_context, ready=self._made)
        self.server_address = self.front.server_address

    @classmethod
    def from_config(cls, cfg: ExporterConfig, renderer: MetricsRenderer) -> MetricsServer:
        """The server the exporter section asks for; raises ConfigError for a bad web config file, OSError if it cannot bind."""
        web = load_web_config(cfg.web_config_file) if cfg.web_config_file else None
        return cls((cfg.listen_address, cfg.listen_port), renderer, limits=cfg, web=web)

    def _answer(self, req: Request) -> Response:
        if not self.web.authorized(req.headers.get("authorization")):
            return _UNAUTHORIZED
        if req.method not in ("GET", "HEAD"):
            return Response(405, b"method not allowed\n", headers=(("Allow", "GET, HEAD"),))
        path, _, query = req.path.partition("?")
        if path == "/metrics":
            return self._metrics(req, parse_qs(query).get("collect[]", []) if query else [])
        if path in HEALTH_PATHS:
            return Response(200, b"ok\n")
        if path == "/":
            return Response(200, _INDEX, "text/html")
        return Response(404, b"not found\n")

    def _made(self, req: Request) -> Response | None:
        """A scrape's answer when its body is made already (the front sends it from its selector thread);
        None for any other request, and where a password must be checked (bcrypt takes milliseconds)."""
        if self.web.users or req.method != "GET" or req.path != "/metrics":
            return None
        om, gz = self._negotiated(req)
        body = self.renderer.made(openmetrics=om, gzipped=gz)
        return None if body is None else self._scrape(om, gz, body)

    def _negotiated(self, req: Request) -> tuple[bool, bool]:
        """Whether ``req`` asks for OpenMetrics, and for gzip."""
        return (accepts(req.headers.get("accept", ""), "application/openmetrics-text"),
                accepts(req.headers.get("accept-encoding", ""), "gzip"))

    def _scrape(self, om: bool, gz: bool, body: bytes) -> Response:
        """A scrape's response with ``body``, counted."""
        self.renderer.count("openmetrics" if om else "text", "gzip" if gz else "identity", len(body))
        headers = (("Content-Encoding", "gzip"), ("Vary", "Accept-Encoding")) if gz else (("Vary", "Accept-Encoding"),)
        return Response(200, body, OPENMETRICS if om else TEXT, headers=headers)

    def _metrics(self, req: Request, collect: list[str]) -> Response:
        unknown = sorted(set(collect) - set(self.renderer.sources())) if collect else []
        if unknown:
            known = ", ".join(self.renderer.sources())
            return Response(400, f"unknown collector {', '.join(unknown)}; known: {known}\n".encode())
        om, gz = self._negotiated(req)
        return self._scrape(om, gz, self.renderer.render(openmetrics=om, gzipped=gz, collect=collect))

    @property
    def url(self) -> str:
        """The URL to scrape on this host (a wildcard address named by its loopback)."""
        host, port = self.server_address[:2]
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else str(host))
        if ":" in shown and not shown.startswith("["):
            shown = f"[{shown}]"
        scheme = "https" if self.web.ssl_context else "http"
        return f"{scheme}://{shown}:{port}/metrics"

    @property
    def where(self) -> str:
        """Where /metrics is served, as bound: a wildcard address is named, with the URL to use on this host."""
        host, port = self.server_address[:2]
        extra = f" with {self.web.describe()}" if self.web.ssl_context or self.web.users else ""
        if host in ("0.0.0.0", "", "::"):
            bound = f"[::]:{port}" if host == "::" else f"0.0.0.0:{port}"
            return f"/metrics on {bound} (all interfaces; on this host {self.url}){extra}"
        return self.url + extra

    def start(self) -> None:
        """Start serving on the front's own threads."""
        self.front.start()

    def stop(self) -> None:
        """Stop serving and close every connection."""
        self.front.stop()
