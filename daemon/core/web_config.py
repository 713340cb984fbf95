"""The exporter's web config file, in the format of Prometheus exporter-toolkit (as node_exporter's
and dcgm-exporter's ``--web.config.file``): TLS from ``tls_server_config`` and basic auth from
``basic_auth_users`` (bcrypt hashes), so existing scrape configs work unchanged.

Supported: ``cert_file``, ``key_file``, ``client_ca_file``, ``client_auth_type`` (NoClientCert,
VerifyClientCertIfGiven, RequireAndVerifyClientCert), ``min_version`` and ``max_version``;
relative paths are relative to the file. Any other key is an error that names it, rather than
a setting silently ignored. Reading the file needs PyYAML; basic auth needs bcrypt (the
``web`` extra installs both).
"""

from __future__ import annotations

import base64
import hashlib
import re
import ssl
import threading
from pathlib import Path
from typing import Any

from gputuned.daemon.core.config import ConfigError

_TLS_KEYS = {"cert_file", "key_file", "client_ca_file", "client_auth_type", "min_version", "max_version"}
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
             "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_BCRYPT = re.compile(r"^\$2[abxy]?\$\d\d\$[./A-Za-z0-9]{53}$")


class WebConfig:
    """TLS context and basic-auth users read from a web config file (either may be absent)."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None, users: dict[str, bytes] | None = None) -> None:
        self.ssl_context = ssl_context
        self.users = dict(users or {})
        self._verified: set[bytes] = set()
        self._lock = threading.Lock()
        self._dummy = b""
        if self.users:
            import bcrypt

            self._dummy = bcrypt.hashpw(b"unused", bcrypt.gensalt(4))

    def describe(self) -> str:
        """What the file turned on, in a few words."""
        parts = ["TLS"] if self.ssl_context else []
        if self.users:
            parts.append(f"basic auth ({len(self.users)} users)")
        return " and ".join(parts) or "nothing"

    def authorized(self, header: str | None) -> bool:
        """Whether an Authorization header passes (always, when no users are configured)."""
        if not self.users:
            return True
        import bcrypt

        if not header or header[:6].lower() != "basic ":
            return False
        try:
            user, sep, password = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        hashed = self.users.get(user)
        if not sep or hashed is None:
            bcrypt.checkpw(password.encode(), self._dummy)  # as slow as a known user: no user probing by timing
            return False
        key = hashlib.sha256(user.encode() + b"\0" + password.encode() + b"\0" + hashed).digest()
        with self._lock:
            if key in self._verified:
                return True
        try:
            ok = bool(bcrypt.checkpw(password.encode(), hashed))
        except ValueError:
            return False
        if ok:
            with self._lock:
                if len(self._verified) >= 1024:
                    self._verified.clear()
                self._verified.add(key)
        return ok


def load_web_config(path: Path) -> WebConfig:
    """Read ``path``; raises ConfigError naming the file and the bad key."""
    where = f"exporter.web_config_file: {path}"
    try:
        import yaml
    except ImportError:
        raise ConfigError(f"{where}: reading it needs PyYAML (pip install 'gputuned[web]')") from None
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"{where}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not YAML: {' '.join(str(e).split())}") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: needs a mapping at the top level")
    for key, value in data.items():
        if key not in ("tls_server_config", "basic_auth_users") and not (key == "http_server_config" and not value):
            raise ConfigError(f"{where}: {key}: not supported")
    tls = _tls_context(data.get("tls_server_config"), path.parent, where)
    return WebConfig(tls, _users(data.get("basic_auth_users"), where))


def _tls_context(section: Any, base: Path, where: str) -> ssl.SSLContext | None:
    if not section:
        return None
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: tls_server_config: needs a mapping")
    for key in section:
        if key not in _TLS_KEYS:
            raise ConfigError(f"{where}: tls_server_config.{key}: not supported")
    if not section.get("cert_file") or not section.get("key_file"):
        raise ConfigError(f"{where}: tls_server_config: needs cert_file and key_file")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _version(section, "min_version", "TLS12", where)
    if "max_version" in section:
        ctx.maximum_version = _version(section, "max_version", "TLS13", where)
    try:
        ctx.load_cert_chain(base / str(section["cert_file"]), base / str(section["key_file"]))
        auth = str(section.get("client_auth_type", "NoClientCert"))
        if auth not in _CLIENT_AUTH:
            raise ConfigError(f"{where}: tls_server_config.client_auth_type: {auth!r} not supported "
                              f"(one of {', '.join(_CLIENT_AUTH)})")
        ctx.verify_mode = _CLIENT_AUTH[auth]
        if auth != "NoClientCert":
            if not section.get("client_ca_file"):
                raise ConfigError(f"{where}: tls_server_config.client_auth_type {auth} needs client_ca_file")
            ctx.load_verify_locations(base / str(section["client_ca_file"]))
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"{where}: tls_server_config: {getattr(e, 'strerror', None) or e}") from None
    return ctx


def _version(section: dict[str, Any], key: str, default: str, where: str) -> ssl.TLSVersion:
    name = str(section.get(key, default))
    if name not in _VERSIONS:
        raise ConfigError(f"{where}: tls_server_config.{key}: {name!r} not one of {', '.join(_VERSIONS)}")
    return _VERSIONS[name]


def _users(section: Any, where: str) -> dict[str, bytes]:
    if not section:
        return {}
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: basic_auth_users: needs a mapping of user to bcrypt hash")
    users = {}
    for user, hashed in section.items():
        if not isinstance(hashed, str) or not _BCRYPT.match(hashed):
            raise ConfigError(f"{where}: basic_auth_users.{user}: not a bcrypt hash")
        users[str(user)] = hashed.encode()
    try:
        import bcrypt  # noqa: F401 - checked here so a missing library is a config error, not a failed scrape
    except ImportError:
        raise ConfigError(f"{where}: basic_auth_users needs bcrypt (pip install 'gputuned[web]')") from None
    return users
