"""The Prometheus exporter: a custom collector over the store, and the HTTP endpoint.

Scrapes never touch hardware: they render what the collection loop last published.
The rendered text is cached per store generation, so a scrape between two ticks costs a
dictionary lookup and a socket write. With ``dcgm=True`` every GPU family that has a
dcgm-exporter equivalent is served a second time under DCGM's name, labels and units.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric

from gputuned.collectors.families import Catalog, Family, Labels
from gputuned.daemon.core.store import Store

logger = logging.getLogger(__name__)

_GENERIC = Family("", "gauge", "")


def _dcgm_labels(labels: Labels, hostname: str) -> dict[str, str]:
    lab = dict(labels)
    gpu = lab.get("gpu", "")
    return {
        "gpu": gpu,
        "UUID": lab.get("uuid", ""),
        "pci_bus_id": lab.get("pci_bus_id", ""),
        "device": f"nvidia{gpu}",
        "modelName": lab.get("model", ""),
        "Hostname": hostname,
    }


class StoreCollector:
    """prometheus_client collector yielding fresh metric families from the store, typed by the catalog."""

    def __init__(self, store: Store, catalog: Catalog, *, dcgm: bool = False, hostname: str | None = None) -> None:
        self._store = store
        self._catalog = catalog
        self._dcgm = dcgm
        self._hostname = hostname or socket.gethostname()

    def collect(self) -> Iterator[Metric]:
        _, sources = self._store.snapshot()
        by_family: dict[str, list[tuple[Labels, float]]] = {}
        for _, _, samples in sources:
            for name, labels, value in samples:
                by_family.setdefault(name, []).append((labels, value))
        dcgm: dict[str, Metric] = {}
        for name in sorted(by_family):
            fam = self._catalog.get(name, _GENERIC)
            items = by_family[name]
            if fam.kind == "counter":
                # Metric family names of counters drop the _total their samples carry.
                metric = Metric(name[:-6], fam.help, "counter")
            else:
                metric = Metric(name, fam.help or name, "gauge" if fam is not _GENERIC else "unknown")
            for labels, value in items:
                metric.add_sample(name, dict(labels), value)
            yield metric
            if self._dcgm and fam.dcgm:
                self._add_dcgm(fam, items, dcgm)
        yield from dcgm.values()

    def _add_dcgm(self, fam: Family, items: list[tuple[Labels, float]], out: dict[str, Metric]) -> None:
        for d in fam.dcgm:
            metric = out.get(d.name)
            if metric is None:
                # dcgm-exporter's counters have no _total suffix; serving them untyped keeps
                # their names exactly as existing DCGM dashboards query them.
                metric = out[d.name] = Metric(d.name, f"{fam.help} (dcgm-exporter name)", "unknown" if d.counter else "gauge")
            for labels, value in items:
                if d.where and not all(pair in labels for pair in d.where):
                    continue
                metric.add_sample(d.name, _dcgm_labels(labels, self._hostname), value * d.scale)


class MetricsRenderer:
    """Renders the exposition text, once per store generation.

    ``catalog`` gives each served family its type and help text (a series whose family it
    lacks is served untyped); the composition root passes the catalog of every declaring module.
    """

    def __init__(self, store: Store, catalog: Catalog, *, dcgm: bool = False, hostname: str | None = None) -> None:
        self._store = store
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StoreCollector(store, catalog, dcgm=dcgm, hostname=hostname))
        self._lock = threading.Lock()
        self._generation = -1
        self._body = b""
        self.renders = 0

    def render(self) -> bytes:
        with self._lock:
            gen = self._store.generation
            if gen != self._generation:
                self._body = generate_latest(self.registry)
                self._generation = gen
                self.renders += 1
            return self._body


class _Handler(BaseHTTPRequestHandler):
    server: MetricsServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, self.server.renderer.render(), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._send(200, b"ok\n", "text/plain; charset=utf-8")
        elif path == "/":
            self._send(200, b'<html><body><a href="/metrics">/metrics</a></body></html>\n', "text/html")
        else:
            self._send(404, b"not found\n", "text/plain; charset=utf-8")

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        logger.debug("http %s - %s", self.address_string(), format % args)


class MetricsServer(ThreadingHTTPServer):
    """HTTP server for /metrics on its own threads."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], renderer: MetricsRenderer) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)
        self.renderer = renderer
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else str(host))
        return f"http://{shown}:{port}/metrics"

    @property
    def where(self) -> str:
        """Where /metrics is served, as bound: a wildcard address is named, with the URL to use on this host."""
        host, port = self.server_address[:2]
        if host in ("0.0.0.0", "", "::"):
            bound = f"[::]:{port}" if host == "::" else f"0.0.0.0:{port}"
            return f"/metrics on {bound} (all interfaces; on this host {self.url})"
        return self.url

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, name="gputuned-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
