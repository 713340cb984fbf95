"""Helpers for daemon-runtime tests and benches: a real `gputuned run` subprocess on a simulated
node whose GPU settings persist in a file, plus a raw control-protocol client."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from gputuned import protocol as P

REPO_ROOT = Path(__file__).resolve().parents[1]


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
    """Config mapping for a test daemon: loopback, a scripted simulated node persisted under ``tmp``."""
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


def gputuned(*args: str, timeout: float = 60.0, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
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
        return admin(self.socket_path, op, **fields)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def sim_settings(self) -> dict[str, dict[str, Any]]:
        return dict(json.loads(self.sim_path.read_text())["gpus"])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


def read_frame(sock: socket.socket) -> dict[str, Any]:
    header = _recv(sock, 4)
    (n,) = struct.unpack(">I", header)
    return dict(json.loads(_recv(sock, n)))


def _recv(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def admin(path: Path | str, op: str, timeout: float = 5.0, **fields: Any) -> dict[str, Any]:
    """One admin request over a fresh connection; raises OSError when unreachable."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(P.encode({"v": 1, "type": "admin", "seq": 0, "op": op, **fields}))
        return read_frame(s)


def hello(job: str = "job-1", rank: int = 0, world: int = 1, leader: bool | None = None) -> dict[str, Any]:
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


def wait_for(pred: Any, timeout: float = 10.0, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return bool(pred())


def crash_trial(tmp: Path, seed: int, data: dict[str, Any] | None = None, gpus: int = 4) -> dict[str, Any]:
    """Start a daemon, make it rewrite its state file over and over, SIGKILL it at a random
    moment, then check the state file is absent or complete and `gputuned restore` brings
    every GPU back. Returns what was found."""
    import random
    import threading

    from gputuned.daemon.actuation.statefile import StateFileError, parse_state

    rng = random.Random(seed)
    tmp.mkdir(parents=True, exist_ok=True)
    d = DaemonProcess(tmp, config=data or runtime_config(tmp, gpus=gpus))
    out: dict[str, Any] = {"seed": seed}
    try:
        d.wait_ready()
        originals = d.sim_settings()
        stop = threading.Event()
        sent = [0]

        def hammer() -> None:
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(5)
                    s.connect(str(d.socket_path))
                    seq = 0
                    while not stop.is_set():
                        gpu = rng.randrange(gpus)
                        if rng.random() < 0.5:
                            msg = {"op": "set", "gpu": gpu, "knob": "power_limit", "value": rng.randrange(200, 700) * 1000}
                        else:
                            lo = rng.randrange(300, 1500)
                            msg = {"op": "set", "gpu": gpu, "knob": "locked_sm_clocks", "value": [lo, lo + rng.randrange(0, 400)]}
                        s.sendall(P.encode({"v": 1, "type": "admin", "seq": seq, **msg}))
                        seq += 1
                        read_frame(s)
                        sent[0] += 1
            except (OSError, ConnectionError):
                pass

        t = threading.Thread(target=hammer, daemon=True)
        t.start()
        time.sleep(rng.uniform(0.0, 0.25))
        d.kill()
        stop.set()
        t.join(5)
        out["changes_before_kill"] = sent[0]
        if d.state_path.exists():
            try:
                parse_state(d.state_path.read_text())
                out["state_file"] = "complete"
            except StateFileError as e:
                out["state_file"] = f"corrupt: {e}"
        else:
            out["state_file"] = "absent"
        res = gputuned("restore", "--offline", "--config", str(d.config_path))
        out["restore_rc"] = res.returncode
        out["restored"] = res.returncode == 0 and d.sim_settings() == originals and not d.state_path.exists()
    finally:
        d.close()
    return out


def fuzz_strategies() -> Any:
    """Hypothesis strategy of one fuzz case: (say_hello_first, [raw chunks to send])."""
    from hypothesis import strategies as st

    json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False),
                          st.text(max_size=30))
    json_value = st.recursive(json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                                 st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                              max_leaves=12)
    types = st.sampled_from(["hello", "report", "ack", "profile_result", "error", "admin", "decision", "welcome", "", "x"])
    envelope = st.fixed_dictionaries(
        {"v": st.one_of(st.just(1), json_value), "type": st.one_of(types, json_value), "seq": st.one_of(st.integers(-5, 10), json_value)},
        optional={"stats": st.one_of(json_value, st.dictionaries(st.sampled_from(list(P.STAT_KEYS)), json_value, max_size=5)),
                  "step": json_value, "steps": json_value, "job": json_value, "rank": json_value, "world_size": json_value,
                  "leader": json_value, "id": json_value, "ok": json_value, "op": st.one_of(st.sampled_from(P.ADMIN_OPS), json_value),
                  "gpu": st.one_of(st.integers(-1, 10), json_value),
                  "knob": st.one_of(st.sampled_from(["power_limit", "locked_sm_clocks", "locked_memory_clocks",
                                                     "applications_clocks"]), json_value),
                  "value": st.one_of(st.integers(-(2**40), 2**40), st.lists(st.integers(-(2**40), 2**40), min_size=2, max_size=2),
                                     json_value),
                  "summary": json_value},
    )
    framed_json = st.one_of(envelope, json_value).map(lambda o: _frame_bytes(json.dumps(o).encode()))
    framed_binary = st.binary(max_size=300).map(_frame_bytes)
    oversized = st.integers(65537, 2**32 - 1).map(lambda n: struct.pack(">I", n) + b"{")
    truncated = st.tuples(st.integers(10, 65536), st.binary(max_size=9)).map(lambda t: struct.pack(">I", t[0]) + t[1])
    deep = st.integers(1000, 30000).map(lambda n: _frame_bytes(b"[" * n + b"]" * n))
    garbage = st.binary(min_size=1, max_size=200)
    chunk = st.one_of(framed_json, framed_json, framed_binary, oversized, truncated, deep, garbage)
    return st.tuples(st.booleans(), st.lists(chunk, min_size=1, max_size=8))


def _frame_bytes(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def send_fuzz_case(path: Path | str, case: tuple[bool, list[bytes]], timeout: float = 0.5) -> int:
    """Send one fuzz case on a fresh connection; returns the number of chunks sent."""
    say_hello, chunks = case
    n = 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        try:
            if say_hello:
                s.sendall(P.encode(hello(job="fuzz")))
            for c in chunks:
                s.sendall(c)
                n += 1
            s.shutdown(socket.SHUT_WR)
            while s.recv(65536):  # drain answers until the daemon closes or goes quiet
                pass
        except OSError:
            pass
    return n


_WRITER = """
import sys
from pathlib import Path
from gputuned.daemon.actuation.statefile import GPURecord, State, StateFile
sf = StateFile(Path(sys.argv[1]))
k = 0
while True:
    k += 1
    gpus = {f"GPU-{i:04d}": GPURecord(i, f"GPU-{i:04d}", {"power_limit": 700000, "applications_clocks": [2619, 1590],
            "locked_sm_clocks": None, "locked_memory_clocks": None}, ["power_limit", "locked_sm_clocks"],
            {"power_limit": 300000 + k, "locked_sm_clocks": [900, 1400]}) for i in range(64)}
    sf.save(State(gpus=gpus))
    if k == 1:
        print("first", flush=True)
"""


def writer_kill_trial(tmp: Path, seed: int) -> dict[str, Any]:
    """SIGKILL a process that does nothing but rewrite a 64-GPU state file, at a random moment.

    Returns whether the state file parsed afterwards and whether the kill landed inside a
    write (a temp file was left behind)."""
    import random

    from gputuned.daemon.actuation.statefile import StateFileError, parse_state

    rng = random.Random(seed)
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "state.json"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    proc.stdout.readline()  # the first complete write is in place
    time.sleep(rng.uniform(0.0, 0.05))
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    mid_write = any(p.name.endswith(".tmp") for p in tmp.iterdir())
    try:
        state = parse_state(path.read_text())
        ok = len(state.gpus) == 64
    except (StateFileError, OSError):
        ok = False
    for p in tmp.iterdir():
        p.unlink()
    return {"seed": seed, "complete": ok, "killed_mid_write": mid_write}
