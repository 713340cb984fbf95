"""Crash and fuzz trials against a real `gputuned run` child process on a simulated node: SIGKILL
it while it rewrites its state file, SIGKILL a bare state-file writer, and send it malformed
control frames (generated with hypothesis, a development dependency)."""

from __future__ import annotations

import json
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from gputuned import protocol as P
from gputuned.daemon.record.child import (
    DaemonProcess,
    hello,
    read_frame,
    run_gputuned,
    runtime_config,
)


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
        res = run_gputuned("restore", "--offline", "--config", str(d.config_path))
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
