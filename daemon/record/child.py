"""A real `gputuned run` as a child process on a simulated node whose GPU settings persist in a
file, and a raw control-protocol client to drive it (admin requests, hello, frames)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from gputuned import protocol as P


def toml_dump(data: dict[str, Any]) -> str:
    """A TOML text for nested tables of plain values (enough for gputuned configs)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str | Path):
            return json.dumps(str(v))
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        raise TypeError(f"cannot write {v!r} as TOML")

    lines: list[str] = []

    def table(prefix: str, d: dict[str, Any]) -> None:
        plain = {k: v for k, v in d.items() if not isinstance(v, dict)}
        if prefix:
            lines.append(f"[{prefix}]")
        lines.extend(f"{k} = {value(v)}" for k, v in plain.items())
        for k, v in d.items():
            if isinstance(v, dict):
                table(f"{prefix}.{k}" if prefix else k, v)

    table("", data)
    return "\n".join(lines) + "\n"


def runtime_config(tmp: Path, gpus: int = 4, interval: float = 0.2, **sections: dict[str, Any]) -> dict[str, Any]:
    """Config mapping for a child daemon: loopback, a scripted simulated node persisted under ``tmp``."""
    tmp.mkdir(parents=True, exist_ok=True)
    script = tmp / "sim-script.toml"
    script.write_text(f'profile = "h100"\ngpus = {gpus}\n')
    data: dict[str, Any] = {
        "daemon": {"interval_seconds": interval, "state_file": str(tmp / "state" / "state.json")},
        "exporter": {"listen_address": "127.0.0.1", "listen_port": 0},
        "gpu": {"backend": "sim"},
        "sim": {"gpus": gpus, "script": str(script), "settings_file": str(tmp / "sim-settings.json")},
        "collectors": {"peers": {"enabled": False}, "infiniband": {"enabled": False}},
        "control": {"socket_path": str(tmp / "run" / "control.sock")},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return data


def run_gputuned(*args: str, timeout: float = 60.0, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the gputuned CLI in a subprocess (the same interpreter)."""
    return subprocess.run([sys.executable, "-m", "gputuned", *args], capture_output=True, text=True, timeout=timeout,
                          env=env, check=False)


class DaemonProcess:
    """`gputuned run` as a real subprocess, with its config, state file and sim settings under tmp."""

    def __init__(self, tmp: Path, config: dict[str, Any] | None = None, env: dict[str, str] | None = None,
                 **kwargs: Any) -> None:
        self.tmp = tmp
        self.data = config or runtime_config(tmp, **kwargs)
        self.config_path = tmp / "gputuned.toml"
        self.config_path.write_text(toml_dump(self.data))
        self.socket_path = Path(self.data["control"]["socket_path"])
        self.state_path = Path(self.data["daemon"]["state_file"])
        self.sim_path = Path(self.data["sim"]["settings_file"])
        self.log_path = tmp / f"daemon-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("wb")
        full_env = dict(os.environ if env is None else env)
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        self.proc = subprocess.Popen([sys.executable, "-m", "gputuned", "run", "--config", str(self.config_path)],
                                     stdout=self._log, stderr=subprocess.STDOUT, env=full_env)

    def wait_ready(self, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until the daemon answers an admin status; returns the status."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}: {self.log()[-2000:]}")
            try:
                reply = admin(self.socket_path, "status", timeout=2.0)
                return dict(reply["status"])
            except OSError as e:
                last = e
                time.sleep(0.05)
        raise TimeoutError(f"daemon not ready: {last}; log: {self.log()[-2000:]}")

    def admin(self, op: str, **fields: Any) -> dict[str, Any]:
        """One admin request to this daemon; returns its reply."""
        return admin(self.socket_path, op, **fields)

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the daemon."""
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL the daemon and reap it."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM the daemon if it runs; returns its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def log(self) -> str:
        """Everything the daemon wrote to stdout and stderr so far."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def sim_settings(self) -> dict[str, dict[str, Any]]:
        """The simulated GPUs' current settings, by GPU, from the persisted settings file."""
        return dict(json.loads(self.sim_path.read_text())["gpus"])

    def close(self) -> None:
        """Kill the daemon if it still runs and close its log."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


def read_frame(sock: socket.socket) -> dict[str, Any]:
    """Read one frame from ``sock`` as raw JSON (unchecked: error replies and all)."""
    return dict(json.loads(P.read_body(sock, P.MAX_REPLY_BYTES)))


def admin(path: Path | str, op: str, timeout: float = 5.0, **fields: Any) -> dict[str, Any]:
    """One admin request over a fresh connection; raises OSError when unreachable."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(P.encode({"v": 1, "type": "admin", "seq": 0, "op": op, **fields}))
        return read_frame(s)


def hello(job: str = "job-1", rank: int = 0, world: int = 1, leader: bool | None = None) -> dict[str, Any]:
    """A hello message of protocol v1 from this process."""
    return {"v": 1, "type": "hello", "seq": 0, "job": job, "rank": rank, "local_rank": rank, "world_size": world,
            "pid": os.getpid(), "leader": rank == 0 if leader is None else leader, "batch_size": 64,
            "batch_mode": "global"}


def connect_client(path: Path | str, timeout: float = 5.0, **kw: Any) -> tuple[socket.socket, dict[str, Any]]:
    """A raw protocol client after hello; returns (socket, welcome)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(str(path))
    s.sendall(P.encode(hello(**kw)))
    return s, read_frame(s)
