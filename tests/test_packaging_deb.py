"""The Debian package (packaging/build-deb.sh, `make deb`) installed into a clean root: its unit verified
by systemd-analyze with the installed paths, its command, forecaster and daemon run from /opt/gputuned.

The package is built once per session (about 35 s of CPU, most of it unpacking numpy, pandas and
Prophet); GPUTUNED_DEB=path tests a package built before (`make deb`) instead.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from testkit import REPO

from gputuned import __version__
from gputuned.daemon.record.child import runtime_config, toml_dump

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ENTRY = "/usr/bin/gputuned"
PREFIX = "/opt/gputuned"
UNIT = "lib/systemd/system/gputuned.service"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def _can_build() -> str | None:
    """Why the package cannot be built here, or None."""
    if shutil.which("dpkg-deb") is None:
        return "dpkg-deb not installed"
    r = subprocess.run(["/usr/bin/python3.11", "-c", "import ensurepip, venv"], capture_output=True, check=False)
    return None if r.returncode == 0 else "Debian's python3.11 with python3-venv (make debtools) not installed"


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built package: GPUTUNED_DEB, or built now by packaging/build-deb.sh."""
    given = os.environ.get("GPUTUNED_DEB")
    if given:
        return Path(given)
    why = _can_build()
    if why:
        pytest.skip(why)
    out = tmp_path_factory.mktemp("deb")
    env = dict(os.environ, DEB_COMPRESS="none")  # what is packed is the same; zstd would add ~10 s
    r = subprocess.run([str(REPO / "packaging" / "build-deb.sh"), str(out)], capture_output=True, text=True,
                       timeout=900, env=env, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    (built,) = out.glob("gputuned_*.deb")
    return built


@pytest.fixture(scope="module")
def root(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean root holding the package's files and, from this host, the base system it relies on.

    The base system is systemd's own units (sysinit.target and the rest that every service
    is ordered after) and kill (ExecReload; procps, a dependency of the package).
    """
    root = tmp_path_factory.mktemp("root")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True, timeout=300)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True, dirs_exist_ok=True)
    (root / "bin").mkdir(exist_ok=True)
    shutil.copy2("/bin/kill", root / "bin" / "kill")
    return root


def _field(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True, check=True).stdout.strip()


def test_package_holds_the_product_and_names_its_dependencies(deb: Path, root: Path) -> None:
    assert _field(deb, "Package") == "gputuned" and _field(deb, "Version") == f"{__version__}-1"
    assert {"python3.11", "procps"} <= {d.split()[0] for d in _field(deb, "Depends").split(", ")}
    ctl = subprocess.run(["dpkg-deb", "--ctrl-tarfile", str(deb)], capture_output=True, check=True).stdout
    listing = subprocess.run(["tar", "-t"], input=ctl, capture_output=True, check=True).stdout.decode().split()
    assert {"./conffiles", "./postinst", "./prerm", "./postrm"} <= set(listing)
    conf = subprocess.run(["tar", "-xO", "./conffiles"], input=ctl, capture_output=True, check=True).stdout.decode()
    assert conf.split() == ["/etc/gputuned/gputuned.toml"]
    for installed, source in ((UNIT, "gputuned.service"), ("usr/lib/sysusers.d/gputuned.conf", "gputuned.sysusers.conf"),
                              ("usr/lib/tmpfiles.d/gputuned.conf", "gputuned.tmpfiles.conf"),
                              ("etc/gputuned/gputuned.toml", "gputuned.toml")):
        assert (root / installed).read_text() == (REPO / "systemd" / source).read_text(), installed
    assert os.readlink(root / ENTRY.lstrip("/")) == f"{PREFIX}/bin/gputuned"
    assert (root / "opt/gputuned/bin/gputuned").read_text().startswith(f"#!{PREFIX}/bin/python\n")
    assert os.readlink(root / "opt/gputuned/bin/python3.11") == "/usr/bin/python3.11"  # Debian's, as Depends says
    site = root / "opt/gputuned/lib/python3.11/site-packages"
    carried = {p.name.split("-")[0].lower() for p in site.glob("*.dist-info")}
    assert {"gputuned", "prometheus_client", "nvidia_ml_py", "pydantic", "numpy", "prophet", "grpcio"} <= carried
    assert not carried & {"torch", "stable_baselines3", "gymnasium", "grafanalib", "pip"}
    assert int(_field(deb, "Installed-Size")) < 400 * 1024  # KiB: 304 MiB when Prophet's stack came in


def test_installed_unit_verifies_clean_with_its_installed_paths(root: Path, tmp_path: Path) -> None:
    if SYSTEMD_ANALYZE is None:
        pytest.skip("systemd-analyze not installed")
    text = (root / UNIT).read_text()
    assert f"ExecStart={ENTRY} run" in text and f"ExecStopPost={ENTRY} restore" in text
    r = subprocess.run([SYSTEMD_ANALYZE, "verify", f"--root={root}", "gputuned.service"], capture_output=True,
                       text=True, timeout=120, check=False)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr
    # the same root without the package's /opt: verify finds the entry point missing
    bare = tmp_path / "bare"
    shutil.copytree(root, bare, symlinks=True, ignore=lambda d, names: ["opt"] if Path(d) == root else [])
    r = subprocess.run([SYSTEMD_ANALYZE, "verify", f"--root={bare}", "gputuned.service"], capture_output=True,
                       text=True, timeout=120, check=False)
    assert r.returncode != 0 and f"Command {ENTRY} is not executable" in r.stderr


def test_installed_unit_security_exposure(root: Path) -> None:
    if SYSTEMD_ANALYZE is None:
        pytest.skip("systemd-analyze not installed")
    r = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=true", f"--root={root}", "gputuned.service"],
                       capture_output=True, text=True, timeout=120, check=False)
    m = re.search(r"Overall exposure level for gputuned.service: ([0-9.]+)", r.stdout)
    assert m is not None, r.stdout[-500:] + r.stderr[-500:]
    assert float(m.group(1)) <= 4.0


def _in_root(root: Path, argv: list[str], **kw: object) -> subprocess.Popen[str]:
    """Start ``argv`` where /opt is the root's /opt (a private mount namespace), so the installed
    /usr/bin/gputuned runs through its own paths: /opt/gputuned/bin/python and its venv."""
    script = 'mount --bind "$0/opt" /opt && cd / && exec "$@"'
    return subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(root), *argv],
                            text=True, **kw)  # type: ignore[call-overload]


def _run_in_root(root: Path, argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    with _in_root(root, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as p:
        out, err = p.communicate(timeout=timeout)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


@pytest.fixture(scope="module")
def mount_ns(root: Path) -> None:
    r = _run_in_root(root, ["true"])
    if r.returncode != 0:
        pytest.skip(f"no private mount namespace here: {r.stderr.strip()}")


def test_installed_command_runs(root: Path, mount_ns: None) -> None:
    r = _run_in_root(root, [str(root / ENTRY.lstrip("/")), "--version"])
    assert r.returncode == 0 and r.stdout.strip() == f"gputuned {__version__}", r.stderr
    where = _run_in_root(root, [f"{PREFIX}/bin/python", "-c", "import gputuned, sys; print(sys.prefix, gputuned.__file__)"])
    assert where.stdout.split() == [PREFIX, f"{PREFIX}/lib/python3.11/site-packages/gputuned/__init__.py"], where.stderr


def test_installed_forecaster_fits_with_prophet(root: Path, mount_ns: None) -> None:
    code = ("from gputuned.tuner.forecast.worker import prophet_fit\n"
            "t = [1.7e9 + 60 * i for i in range(60)]\n"
            "g = prophet_fit(t, [50 + 0.1 * i for i in range(60)], [t[-1] + 60, t[-1] + 120], 0.8)\n"
            "print(round(g['yhat'][1]))\n")
    r = _run_in_root(root, [f"{PREFIX}/bin/python", "-c", code])
    assert r.returncode == 0 and r.stdout.strip() == "56", r.stderr[-2000:]  # the trend, two steps on


def test_installed_daemon_starts_and_stops_on_the_simulated_node(root: Path, mount_ns: None, tmp_path: Path) -> None:
    config = tmp_path / "gputuned.toml"
    config.write_text(toml_dump(runtime_config(tmp_path, gpus=2, interval=0.2)))
    addr = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(addr))
    sock.settimeout(1.0)
    env = dict(os.environ, NOTIFY_SOCKET=str(addr))
    env.pop("PYTHONPATH", None)
    argv = [str(root / ENTRY.lstrip("/")), "run", "--config", str(config)]
    with _in_root(root, argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as p:
        try:
            ready = _wait_for(sock, "READY=1", deadline=time.monotonic() + 90)
            p.send_signal(signal.SIGTERM)
            assert p.wait(30) == 0, p.stderr.read() if p.stderr else ""
        finally:
            if p.poll() is None:
                p.kill()
            sock.close()
    assert f"MAINPID={p.pid}" in ready  # the installed entry point is the main process, as under the unit


def _wait_for(sock: socket.socket, what: str, deadline: float) -> str:
    while time.monotonic() < deadline:
        try:
            msg = sock.recv(4096).decode()
        except TimeoutError:
            continue
        if what in msg:
            return msg
    raise AssertionError(f"no {what} from the installed daemon")

