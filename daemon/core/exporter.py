"""The Prometheus exporter: a custom collector over the store, and the HTTP endpoint.

Scrapes never touch hardware: they render what the collection loop last published.
The rendered text is cached per store generation, so a scrape between two ticks costs a
dictionary lookup and a socket write. The endpoint sits behind a bounded front (a connection
cap, timeouts, a worker pool and a reserve of file descriptors); the web config file adds TLS and
basic auth. With ``dcgm=True`` every GPU family that has a
dcgm-exporter equivalent is served a second time under DCGM's name, labels and units.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric

from gputuned.collectors.families import Catalog, Family, Labels
from gputuned.daemon.core.config import ExporterConfig
from gputuned.daemon.core.http_front import HttpFront, Request, Response
from gputuned.daemon.core.store import Store
from gputuned.daemon.core.web_config import WebConfig, load_web_config

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


_INDEX = b'<html><body><a href="/metrics">/metrics</a></body></html>\n'
_UNAUTHORIZED = Response(401, b"unauthorized\n", headers=(("WWW-Authenticate", 'Basic realm="gputuned"'),))


class MetricsServer:
    """/metrics, /healthz and an index page behind a bounded HTTP front (see :mod:`.http_front`)."""

    def __init__(self, address: tuple[str, int], renderer: MetricsRenderer, *, limits: ExporterConfig | None = None,
                 web: WebConfig | None = None) -> None:
        self.renderer = renderer
        self.web = web or WebConfig()
        self.front = HttpFront(address, self._answer, limits, self.web.ssl_context)
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
        path = req.path.split("?", 1)[0]
        if path == "/metrics":
            return Response(200, self.renderer.render(), CONTENT_TYPE_LATEST)
        if path == "/healthz":
            return Response(200, b"ok\n")
        if path == "/":
            return Response(200, _INDEX, "text/html")
        return Response(404, b"not found\n")

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
