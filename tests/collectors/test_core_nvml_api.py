"""The NVML calls gputuned makes exist in nvidia-ml-py, and the simulated NVML matches them."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pynvml
import pytest

from gputuned.collectors import nvml as nvml_layer
from gputuned.collectors import nvml_fields, nvml_reads
from gputuned.collectors.sim import nvml as sim_nvml

SOURCE = Path(nvml_layer.__file__)
# the NvmlGPU class, the NVML calls behind its fast reads, and the field reader with its single-call fallbacks
SOURCES = (SOURCE, Path(nvml_reads.__file__), Path(nvml_fields.__file__))


def _nvml_names() -> tuple[set[str], set[str]]:
    """Functions (nvml*, called or passed on) and constants (NVML_*, nvmlEvent*) the device layer uses."""
    funcs, consts = set(), set()
    for node in (n for src in SOURCES for n in ast.walk(ast.parse(src.read_text()))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr.startswith("nvml"):
            funcs.add(node.func.attr)
        elif isinstance(node, ast.Attribute) and node.attr.startswith("nvmlDevice"):
            funcs.add(node.attr)  # passed to the helper that calls it
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("nvmlDevice"):
            funcs.add(node.value)  # looked up with getattr
        elif isinstance(node, ast.Attribute) and (node.attr.startswith("NVML_") or node.attr.startswith("nvmlEventType")):
            consts.add(node.attr)
    return funcs, consts


FUNCS, CONSTS = _nvml_names()
# The pre-12.x name of the clock-event call, used only where a real driver lacks the new one.
REAL_ONLY = {"nvmlDeviceGetCurrentClocksThrottleReasons"}


def test_device_layer_uses_many_nvml_functions() -> None:
    assert len(FUNCS) >= 30, sorted(FUNCS)


def test_only_one_module_imports_pynvml() -> None:
    repo = SOURCE.parents[1]
    importers = []
    paths = [p for d in ("pkg", "collectors", "daemon", "tuner", "trainer_plugin", "dashboards", "bench")
             for p in (repo / d).rglob("*.py")]
    for path in paths:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if "pynvml" in names:
                importers.append(path.relative_to(repo))
    assert importers == [Path("collectors/nvml.py")]


@pytest.mark.parametrize("name", sorted(FUNCS))
def test_function_exists_in_nvidia_ml_py_with_compatible_signature(name: str) -> None:
    real = getattr(pynvml, name, None)
    assert real is not None, f"pynvml has no {name}"
    if name in REAL_ONLY:
        return
    sim = getattr(sim_nvml, name, None)
    assert sim is not None, f"the simulated NVML lacks {name}"
    real_params = list(inspect.signature(real).parameters.values())
    sim_params = list(inspect.signature(sim).parameters.values())
    assert [p.name for p in sim_params] == [p.name for p in real_params], name
    assert [p.default is inspect.Parameter.empty for p in sim_params] == [
        p.default is inspect.Parameter.empty for p in real_params
    ], name


@pytest.mark.parametrize("name", sorted(CONSTS))
def test_constants_match_nvidia_ml_py(name: str) -> None:
    assert getattr(sim_nvml, name) == getattr(pynvml, name)


def test_error_codes_match_nvidia_ml_py() -> None:
    for name in dir(sim_nvml):
        if name.startswith("NVML_ERROR_"):
            assert getattr(sim_nvml, name) == getattr(pynvml, name), name
    err = sim_nvml.NVMLError(sim_nvml.NVML_ERROR_NOT_SUPPORTED)
    assert isinstance(err, sim_nvml.NVMLError_NotSupported)
    assert str(err) == str(pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED))


def test_error_classes_match_nvidia_ml_py() -> None:
    codes = [getattr(sim_nvml, n) for n in dir(sim_nvml) if n.startswith("NVML_ERROR_")]
    assert len(codes) >= 12
    for code in codes:
        sim_cls, real_cls = type(sim_nvml.NVMLError(code)), type(pynvml.NVMLError(code))
        assert sim_cls.__name__ == real_cls.__name__, code
        assert getattr(sim_nvml, sim_cls.__name__) is sim_cls
        assert issubclass(sim_cls, sim_nvml.NVMLError) and sim_cls is not sim_nvml.NVMLError
