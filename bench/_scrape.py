"""A scraper as Prometheus scrapes: one HTTP/1.1 connection kept alive across scrapes (opened again
when the server closed it), or with ``new_connections`` a new connection per scrape (urllib, as the
exposition bench scraped before). Standard library only, so that a scraper process starts light.

Run as a script it scrapes ``URL`` once a second ``N`` times:
``python bench/_scrape.py URL N ACCEPT [--new-connections]`` (gzip asked for, the body read whole).
"""

from __future__ import annotations

import http.client
import sys
import time
import urllib.parse
import urllib.request


class Scraper:
    """GETs one URL with fixed headers, over one kept connection unless ``new_connections``."""

    def __init__(self, url: str, headers: dict[str, str], new_connections: bool = False) -> None:
        self.url, self.headers, self.new_connections = url, headers, new_connections
        parts = urllib.parse.urlsplit(url)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 80
        self._path = parts.path or "/"
        self._conn: http.client.HTTPConnection | None = None

    def get(self) -> bytes:
        """The body of one scrape."""
        if self.new_connections:
            req = urllib.request.Request(self.url, headers=self.headers)
            with urllib.request.urlopen(req, timeout=5) as r:  # noqa: S310 - loopback
                return bytes(r.read())
        for retry in (False, True):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=5)
            try:
                self._conn.request("GET", self._path, headers=self.headers)
                r = self._conn.getresponse()
                body = r.read()
            except (http.client.RemoteDisconnected, ConnectionError):  # the server closed the kept connection
                self.close()
                if retry:
                    raise
                continue
            if r.will_close:
                self.close()
            return body
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Close the kept connection (the next scrape opens one)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def main(argv: list[str]) -> None:
    """Scrape argv's URL once a second, argv's count of times."""
    url, n, accept = argv[0], int(argv[1]), argv[2]
    scraper = Scraper(url, {"Accept": accept, "Accept-Encoding": "gzip"}, "--new-connections" in argv[3:])
    t0 = time.monotonic()
    for k in range(n):
        scraper.get()
        time.sleep(max(0.0, t0 + k + 1 - time.monotonic()))
    scraper.close()


if __name__ == "__main__":
    main(sys.argv[1:])
