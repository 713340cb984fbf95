"""systemd integration: sd_notify messages from a real daemon on a test-owned NOTIFY_SOCKET, the unit
file checked by systemd-analyze, and the DaemonSet manifest's security-relevant settings."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from runtime_kit import REPO_ROOT

from gputuned.daemon.core.notify import Notifier
from gputuned.daemon.record.child import DaemonProcess

UNIT = REPO_ROOT / "systemd" / "gputuned.service"


def _collect(sock: socket.socket, until: str, timeout: float) -> list[str]:
    msgs: list[str] = []
    deadline = time.monotonic() + timeout
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            msgs.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
        if until in msgs[-1]:
            break
    return msgs


def test_notify_messages_arrive_in_order_from_a_real_daemon(tmp_path: Path) -> None:
    addr = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(addr))
    env = dict(os.environ, NOTIFY_SOCKET=str(addr), WATCHDOG_USEC="800000")
    d = DaemonProcess(tmp_path, env=env, gpus=1, interval=0.1)
    try:
        first = _collect(sock, "READY=1", 30)
        assert first and "READY=1" in first[-1], first
        ready = first[-1].splitlines()
        assert f"MAINPID={d.proc.pid}" in ready
        assert any(line.startswith("STATUS=1 GPUs (sim)") for line in ready)
        assert not any("WATCHDOG=1" in m for m in first), "watchdog pings start after READY"
        pings = _collect(sock, "never", 1.5)
        assert sum("WATCHDOG=1" in m for m in pings) >= 2  # every ~0.2 s with WatchdogSec=0.8 s
        d.signal(15)
        rest = _collect(sock, "STOPPING=1", 15)
        assert d.proc.wait(15) == 0
    finally:
        d.close()
        sock.close()
    kinds = [k for m in first + pings + rest for k in ("READY=1", "WATCHDOG=1", "STOPPING=1") if k in m]
    assert kinds[0] == "READY=1" and kinds[-1] == "STOPPING=1"
    assert kinds.count("STOPPING=1") == 1 and "WATCHDOG=1" in kinds
    assert kinds.index("STOPPING=1") == len(kinds) - 1


def test_notifier_supports_abstract_sockets_and_is_silent_without_one() -> None:
    assert Notifier({}).enabled is False
    Notifier({}).ready("x")  # no socket: a no-op, no error
    name = f"gputuned-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    try:
        n = Notifier({"NOTIFY_SOCKET": "@" + name})
        n.ready("up")
        n.watchdog()
        n.status("busy")
        n.status("busy")  # unchanged: not sent again
        n.stopping()
        n.watchdog()  # after STOPPING: not sent
        sock.settimeout(1)
        got = [sock.recv(4096).decode() for _ in range(4)]
        assert got[0].startswith("READY=1") and got[1] == "WATCHDOG=1" and got[2] == "STATUS=busy"
        assert got[3].startswith("STOPPING=1")
        sock.settimeout(0.1)
        with pytest.raises(TimeoutError):
            sock.recv(4096)
    finally:
        sock.close()


@pytest.mark.integration
def test_unit_passes_systemd_analyze_verify_and_security(tmp_path: Path) -> None:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze not installed")
    # verify checks that Exec binaries exist: point them at this checkout's entry point.
    entry = Path(sys.executable).with_name("gputuned")
    unit = tmp_path / "gputuned.service"
    unit.write_text(UNIT.read_text().replace("/usr/bin/gputuned", str(entry)))
    res = subprocess.run([exe, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0 and res.stderr.strip() == "", res.stderr
    sec = subprocess.run([exe, "security", "--offline=true", str(UNIT)], capture_output=True, text=True, timeout=60,
                         check=False)
    m = re.search(r"Overall exposure level for gputuned.service: ([0-9.]+)", sec.stdout)
    assert m is not None, sec.stdout[-500:]
    assert float(m.group(1)) <= 4.0


def test_unit_has_what_the_daemon_relies_on() -> None:
    text = UNIT.read_text()
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "ExecStopPost=/usr/bin/gputuned restore",
                 "RuntimeDirectory=gputuned", "StateDirectory=gputuned", "ProtectSystem=strict", "ProtectHome=yes",
                 "PrivateTmp=yes", "NoNewPrivileges=yes", "CapabilityBoundingSet=CAP_SYS_ADMIN\n",
                 "DeviceAllow=char-nvidia-frontend rw", "Conflicts=", "ExecReload=/bin/kill -HUP $MAINPID"):
        assert line in text, line
    # paths the unit grants are the config's defaults
    from gputuned.daemon.app.config import Config

    cfg = Config()
    assert str(cfg.control.socket_path).startswith("/run/gputuned/")
    assert str(cfg.daemon.state_file).startswith("/var/lib/gputuned/")


def test_daemonset_shares_the_host_pid_namespace_and_adds_only_sys_admin() -> None:
    text = (REPO_ROOT / "systemd" / "kubernetes" / "gputuned-daemonset.yaml").read_text()
    # attribution matches SO_PEERCRED pids against NVML's (host) pids; nothing else is shared with the host
    assert "hostPID: true" in text and "hostPID: false" not in text
    assert "hostIPC: false" in text and "hostNetwork: false" in text
    assert "privileged: false" in text and "privileged: true" not in text
    assert re.search(r"drop: \[ALL\]\s+add: \[SYS_ADMIN\]", text)
    assert "gputuned restore --offline" in text.replace('", "', " ").replace('["', "")
    assert "/var/lib/gputuned" in text and "/run/gputuned" in text


def _unit_values(key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in UNIT.read_text().splitlines() if line.startswith(key + "=")]


def test_unit_grants_what_documented_options_need() -> None:
    from gputuned.daemon.app.config import Config

    cfg = Config()
    # descriptors: every control and HTTP connection plus the HTTP reserve (at most half the limit)
    (nofile,) = _unit_values("LimitNOFILE")
    need = cfg.control.max_connections + cfg.control.admin_connections + cfg.exporter.max_connections
    assert int(nofile) >= 2 * cfg.exporter.reserved_fds and int(nofile) >= need + cfg.exporter.reserved_fds + 256
    # forecast.worker_nice and the detector child call setpriority, which @resources denies
    filters = _unit_values("SystemCallFilter")
    assert any("@resources" in f and f.startswith("~") for f in filters)
    assert filters.index("setpriority") > next(i for i, f in enumerate(filters) if "@resources" in f)
    # noroot-locked only locks the noroot bit off; the bounding set is what limits root
    assert _unit_values("SecureBits") == []
    # socket_group would need chown: denied with @privileged and without CAP_CHOWN; Group= sets it
    assert _unit_values("CapabilityBoundingSet") == ["CAP_SYS_ADMIN"] and _unit_values("Group") == ["gputuned"]
    assert not any("@chown" in f and not f.startswith("~") for f in filters)


def _bind(tmp_path: Path, **kw: Any) -> tuple[Path, socket.socket]:
    from gputuned.daemon.control.config import ControlConfig
    from gputuned.daemon.control.conn import bind_socket

    cfg = ControlConfig(socket_path=tmp_path / "run" / "control.sock", **kw)
    return cfg.socket_path, bind_socket(cfg)


def test_socket_group_of_the_daemon_needs_no_chown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(*a: object) -> None:
        raise PermissionError(1, "Operation not permitted")  # as under the unit's SystemCallFilter

    monkeypatch.setattr(os, "chown", denied)
    path, sock = _bind(tmp_path, socket_group=str(os.getgid()))
    sock.close()
    other = next(g for g in range(1, 70000) if g != os.getgid())
    with pytest.raises(OSError, match=rf"Group={other} in a drop-in"):
        _bind(tmp_path, socket_group=str(other))
    assert not path.exists()  # nothing half-made left behind


def test_allowed_uid_the_socket_mode_shuts_out_is_named_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import pwd

    nobody = pwd.getpwnam("nobody").pw_uid
    (tmp_path / "run").mkdir(mode=0o750)
    (tmp_path / "run").chmod(0o750)
    with caplog.at_level("WARNING", logger="gputuned.daemon.control.conn"):
        _, sock = _bind(tmp_path, allowed_uids=[nobody, os.getuid()])
    sock.close()
    lines = [r.getMessage() for r in caplog.records if "allowed_uids" in r.getMessage()]
    assert len(lines) == 1 and f"allowed_uids {nobody} cannot open" in lines[0] and "usermod -aG" in lines[0]
    caplog.clear()
    (tmp_path / "run").chmod(0o755)
    with caplog.at_level("WARNING", logger="gputuned.daemon.control.conn"):
        _, sock = _bind(tmp_path, allowed_uids=[nobody], socket_mode=0o666)
    sock.close()
    assert not [r for r in caplog.records if "allowed_uids" in r.getMessage()]
