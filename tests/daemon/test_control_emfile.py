"""Out of descriptors, the control socket pauses accepting instead of spinning, and recovers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

CHILD = textwrap.dedent('''
    import logging, os, resource, socket, sys, time
    from pathlib import Path
    from gputuned.daemon.control.config import ControlConfig
    from gputuned.daemon.control.server import ControlServer
    from gputuned.daemon.core.store import Store

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    path = Path(sys.argv[1])
    srv = ControlServer(ControlConfig(socket_path=path), Store(10))
    srv.start()
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    held = []
    try:  # use up every descriptor with clients of our own: the server's accept gets EMFILE
        while True:
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            held.append(c)
            c.connect(str(path))
    except OSError:
        pass
    cpu0 = time.process_time()
    time.sleep(2.0)
    spent = time.process_time() - cpu0
    for c in held[:20]:  # free descriptors: the clients still queued are accepted again
        c.close()
    time.sleep(0.5)
    print("CPU", spent, "CONNS", len(srv._conns), flush=True)
    srv.stop()
''')


def test_emfile_pauses_accepting_with_one_log_line_and_recovers(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "c.sock")], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    cpu = float(out.stdout.split("CPU ")[1].split()[0])
    conns = int(out.stdout.split("CONNS ")[1].split()[0])
    paused = [ln for ln in out.stderr.splitlines() if "accepting paused" in ln]
    assert len(paused) == 1, out.stderr[-2000:]  # one line, not one per loop turn
    assert cpu < 0.5  # two seconds out of descriptors cost little CPU (it spun at 100% before)
    assert conns > 0  # once descriptors are free, the queued clients get in
