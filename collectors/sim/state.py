"""State of simulated GPUs, their profiles, clocks, and the scripted backend.

A backend owns a list of :class:`SimDevice` records holding every value the simulated
NVML module reads, in NVML's own units (mW, mJ, MHz, KB/s, bytes, percent). The scripted
backend sets them from per-GPU time series (unit tests); the physics backend computes
them from a model of the node (demo, tuner training, scenarios). The NVML look-alike only
reads these records and applies set calls to them, so both backends share one API path.
"""

from __future__ import annotations

import bisect
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the simulation started."""
        ...


class RealClock:
    """Wall time (monotonic) since construction."""

    def __init__(self) -> None:
        self._t0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self._t0


class VirtualClock:
    """A clock that only moves when told to, for faster-than-real-time runs."""

    def __init__(self, start: float = 0.0) -> None:
        self._t = start

    def now(self) -> float:
        return self._t

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self._t += seconds

    def set(self, t: float) -> None:
        if t < self._t:
            raise ValueError("a clock cannot go backwards")
        self._t = t


@dataclass(frozen=True)
class GPUProfile:
    """Static facts of a GPU model."""

    name: str
    architecture: str
    memory_total_bytes: int
    power_limit_min_w: float
    power_limit_max_w: float
    power_limit_default_w: float
    idle_power_w: float
    sm_clock_min_mhz: int
    sm_clock_max_mhz: int
    sm_clock_base_mhz: int
    sm_clock_step_mhz: int
    memory_clocks_mhz: tuple[int, ...]
    slowdown_temp_c: float
    shutdown_temp_c: float
    max_operating_temp_c: float
    memory_bandwidth_bytes_per_s: float
    peak_fp16_tflops: float
    pcie_gen: int
    nvlink_links: int
    gpm: bool
    # physics constants (optional; see docs/simulator.md); calibration.json overrides them
    active_idle_power_w: float = 0.0  # P0-state power with no kernel running; 0: 2.5 x idle
    voltage_floor_ratio: float = 0.5  # V(f)/V(fmax) extrapolated to f = 0
    power_cap_min_clock_mhz: int = 0  # lowest clock power capping goes down to; 0: min clock
    ambient_c: float = 30.0  # inlet air temperature
    thermal_resistance_c_per_w: float = 0.12  # steady-state rise per watt at full fan
    thermal_time_constant_s: float = 40.0  # first-order time constant of the die temperature
    nvlink_bandwidth_bytes_per_s: float = 0.0  # per direction, all links together
    memory_kind: str = "gddr"  # "hbm": one memory clock, nothing to choose
    sm_clock_max_at_low_memory_mhz: int = 0  # highest graphics clock paired with a lower memory clock; 0: 40% of max

    @property
    def sm_clocks_mhz(self) -> list[int]:
        """Supported SM clocks, descending, as NVML lists them."""
        clocks = list(range(self.sm_clock_max_mhz, self.sm_clock_min_mhz - 1, -self.sm_clock_step_mhz))
        if clocks[-1] != self.sm_clock_min_mhz:
            clocks.append(self.sm_clock_min_mhz)
        return clocks

    def graphics_clocks_mhz(self, memory_mhz: int) -> list[int]:
        """Graphics clocks valid with ``memory_mhz`` (application-clock pairs), descending; a lower memory clock caps them."""
        if memory_mhz not in self.memory_clocks_mhz:
            raise ValueError(f"{memory_mhz} MHz is not a memory clock of {self.name}")
        if memory_mhz == max(self.memory_clocks_mhz):
            return self.sm_clocks_mhz
        top = self.sm_clock_max_at_low_memory_mhz or int(0.4 * self.sm_clock_max_mhz)
        return [c for c in self.sm_clocks_mhz if c <= max(top, self.sm_clock_min_mhz)]

    def at_least(self, architecture: str) -> bool:
        """Whether the part is of ``architecture`` or a later one (NVML gates its clock calls so)."""
        return ARCHITECTURES.index(self.architecture) >= ARCHITECTURES.index(architecture)


#: GPU architectures in release order: NVML gates its clock calls by generation.
ARCHITECTURES = ("kepler", "maxwell", "pascal", "volta", "turing", "ampere", "ada", "hopper", "blackwell")
LOCKED_SM_CLOCKS_FROM = "volta"  # nvmlDeviceSetGpuLockedClocks: "Volta or newer fully supported devices"
LOCKED_MEMORY_CLOCKS_FROM = "ampere"  # nvmlDeviceSetMemoryLockedClocks: "Ampere or newer fully supported devices"


PROFILE_ALIASES = {
    "a100": "a100-sxm4-80gb",
    "h100": "h100-sxm5-80gb",
    "v100": "v100-sxm2-32gb",
    "a40": "a40",
    "rtx6000": "quadro-rtx-6000",
    "p100": "p100-pcie-16gb",
}


_PKG = "gputuned.collectors.sim"


def shipped_names(folder: str) -> list[str]:
    """Names of the TOML files shipped in a folder of the simulator package (profiles, workloads ...)."""
    root = resources.files(_PKG) / folder
    return sorted(p.name.removesuffix(".toml") for p in root.iterdir() if p.name.endswith(".toml"))


def read_toml(name: str | Path, folder: str, what: str, key: str | None = None) -> tuple[dict[str, Any], str]:
    """A TOML file by path, or the shipped ``folder/key.toml``, parsed; and where it came from.

    ``key`` is the shipped file's stem (default: ``name``). An unknown name raises ValueError
    naming ``what`` and the shipped names; invalid TOML raises ValueError naming the file.
    """
    path = Path(name)
    if path.suffix == ".toml" and path.exists():
        text, where = path.read_text(), str(path)
    else:
        key = str(name) if key is None else key
        res = resources.files(_PKG) / folder / f"{key}.toml"
        if not res.is_file():
            raise ValueError(f"unknown {what} {str(name)!r}; known: {', '.join(shipped_names(folder))}")
        text, where = res.read_text(), f"{folder}/{key}.toml"
    try:
        return tomllib.loads(text), where
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{where}: not valid TOML: {e}") from e


def available_profiles() -> list[str]:
    """Profile names shipped with the package."""
    return shipped_names("profiles")


def load_profile(name: str) -> GPUProfile:
    """Load a shipped profile by name or alias (``h100``), or a profile TOML by path."""
    key = PROFILE_ALIASES.get(name.lower(), name.lower())
    raw, where = read_toml(name, "profiles", "GPU profile", key)
    known = {f.name for f in fields(GPUProfile)}
    required = {f.name for f in fields(GPUProfile) if f.default is MISSING}
    unknown = sorted(set(raw) - known)
    missing = sorted(required - set(raw))
    if unknown or missing:
        raise ValueError(f"{where}: unknown keys {unknown}, missing keys {missing}")
    raw["memory_clocks_mhz"] = tuple(int(x) for x in raw["memory_clocks_mhz"])
    if raw["architecture"] not in ARCHITECTURES:
        raise ValueError(f"{where}: unknown architecture {raw['architecture']!r}; known: {', '.join(ARCHITECTURES)}")
    if raw.get("memory_kind") == "hbm" and len(raw["memory_clocks_mhz"]) != 1:
        raise ValueError(f"{where}: an HBM part has one memory clock, not {list(raw['memory_clocks_mhz'])}")
    return GPUProfile(**raw)


@dataclass
class SimDevice:
    """Everything the simulated NVML reads or writes for one GPU, in NVML units."""

    index: int
    profile: GPUProfile
    uuid: str
    pci_bus_id: str
    # live readings
    util_gpu_pct: int = 0
    util_mem_pct: int = 0
    memory_used_bytes: int = 0
    sm_clock_mhz: int = 0
    graphics_clock_mhz: int = 0
    memory_clock_mhz: int = 0
    power_mw: int = 0
    energy_mj: int = 0
    temperature_c: int = 30
    memory_temperature_c: int = 30
    fan_pct: int = 30
    pcie_tx_kbps: int = 0
    pcie_rx_kbps: int = 0
    nvlink_tx_kib: int = 0
    nvlink_rx_kib: int = 0
    ecc_corrected: int = 0
    ecc_uncorrected: int = 0
    remapped_correctable: int = 0
    remapped_uncorrectable: int = 0
    remap_pending: int = 0
    remap_failure: int = 0
    clock_event_reasons: int = 0
    pstate: int = 8
    encoder_pct: int = 0
    decoder_pct: int = 0
    power_violation_ns: int = 0
    thermal_violation_ns: int = 0
    pending_xids: list[int] = field(default_factory=list)
    process_pids: list[int] = field(default_factory=list)  # compute processes on the GPU (its memory split evenly)
    # settings
    power_limit_mw: int = 0
    locked_sm_clocks_mhz: tuple[int, int] | None = None
    locked_memory_clocks_mhz: tuple[int, int] | None = None
    applications_clocks_mhz: tuple[int, int] | None = None  # (memory, graphics)
    # faults
    lost: bool = False
    unsupported: set[str] = field(default_factory=set)
    hang_until: float = 0.0  # time.monotonic() before which the calls in hang_calls block, as a stuck driver does
    hang_calls: frozenset[str] = frozenset()  # NVML function names that hang; empty: every call on the device

    def __post_init__(self) -> None:
        p = self.profile
        if not self.power_limit_mw:
            self.power_limit_mw = int(p.power_limit_default_w * 1000)
        if not self.sm_clock_mhz:
            self.sm_clock_mhz = p.sm_clock_min_mhz
            self.graphics_clock_mhz = p.sm_clock_min_mhz
        if not self.memory_clock_mhz:
            self.memory_clock_mhz = p.memory_clocks_mhz[0]
        if not self.power_mw:
            self.power_mw = int(p.idle_power_w * 1000)

    @property
    def default_applications_clocks_mhz(self) -> tuple[int, int]:
        return (self.profile.memory_clocks_mhz[0], self.profile.sm_clock_base_mhz)


def make_devices(profile: GPUProfile, count: int, node_id: int = 0) -> list[SimDevice]:
    """Create ``count`` devices of one profile with stable, distinct UUIDs and bus ids."""
    devices = []
    for i in range(count):
        uuid = f"GPU-5a1d{node_id:04x}-{i:04x}-4000-8000-{(node_id << 16 | i):012x}"
        bus = f"00000000:{0x18 + 0x10 * i:02X}:00.0"
        devices.append(SimDevice(index=i, profile=profile, uuid=uuid, pci_bus_id=bus))
    return devices


class SimBackend(Protocol):
    """What the simulated NVML module needs from whatever drives the devices."""

    devices: list[SimDevice]
    driver_version: str

    def sync(self) -> None:
        """Bring every device's readings up to the backend's current time."""
        ...

    def is_privileged(self) -> bool:
        """Whether set calls are allowed (root on a real host)."""
        ...


Series = Callable[[float], float]


def _points(points: Iterable[tuple[float, float]]) -> tuple[list[float], list[float]]:
    pts = sorted(points)
    if not pts:
        raise ValueError("a series needs at least one point")
    return [p[0] for p in pts], [p[1] for p in pts]


def step_series(points: Iterable[tuple[float, float]]) -> Series:
    """A piecewise-constant series: value of the last point at or before t."""
    ts, vs = _points(points)

    def at(t: float) -> float:
        i = bisect.bisect_right(ts, t) - 1
        return vs[max(i, 0)]

    return at


def linear_series(points: Iterable[tuple[float, float]]) -> Series:
    """A piecewise-linear series, held constant outside its points."""
    ts, vs = _points(points)

    def at(t: float) -> float:
        i = bisect.bisect_right(ts, t)
        if i == 0 or i == len(ts):  # held constant outside its points
            return vs[0] if i == 0 else vs[-1]
        t0, t1, v0, v1 = ts[i - 1], ts[i], vs[i - 1], vs[i]
        return v0 + (v1 - v0) * (t - t0) / (t1 - t0)

    return at


_INT_FIELDS = {f.name for f in fields(SimDevice) if f.type in ("int", int)}
REAL_CLOCK_HOLD_S = 0.05  # on wall time, scripted values are re-evaluated at most this often (once a tick)


class ScriptedBackend:
    """Devices whose readings follow scripted time series; for unit and fault tests.

    ``script`` maps a GPU index to ``{field: series}`` where field is a :class:`SimDevice`
    attribute (``power_mw``, ``util_gpu_pct`` ...) and series a function of time in
    seconds. ``lost_at`` maps a GPU index to the time it falls off the bus; ``xids`` maps
    a GPU index to ``[(t, xid), ...]``. The energy counter integrates power unless the
    script sets it. Set calls land in the device records and are read back as set. Values are
    re-evaluated once the clock moved ``hold_s`` (default: 0 on a given clock, else REAL_CLOCK_HOLD_S).
    """

    def __init__(
        self,
        devices: list[SimDevice],
        script: Mapping[int, Mapping[str, Series]] | None = None,
        *,
        clock: Clock | None = None,
        lost_at: Mapping[int, float] | None = None,
        xids: Mapping[int, list[tuple[float, int]]] | None = None,
        privileged: bool = True,
        driver_version: str = "550.54.15",
        hold_s: float | None = None,
    ) -> None:
        self.devices = devices
        self.driver_version = driver_version
        self.clock: Clock = clock or RealClock()
        self._script = {i: dict(s) for i, s in (script or {}).items()}
        for i, series in self._script.items():
            if unknown := set(series) - _INT_FIELDS:
                raise ValueError(f"gpu {i}: cannot script unknown fields {sorted(unknown)}")
        self._lost_at = dict(lost_at or {})
        self._xids = {i: sorted(v) for i, v in (xids or {}).items()}
        self._privileged = privileged
        self._last_t: float | None = None
        self._hold_s = (0.0 if clock is not None else REAL_CLOCK_HOLD_S) if hold_s is None else hold_s

    def is_privileged(self) -> bool:
        return self._privileged

    def sync(self) -> None:
        t, last = self.clock.now(), self._last_t
        if last is not None and (t == last or t - last < self._hold_s):
            return
        dt = 0.0 if last is None else t - last
        self._last_t = t
        for dev in self.devices:
            lost = self._lost_at.get(dev.index)
            if lost is not None and t >= lost:
                dev.lost = True
                continue
            series = self._script.get(dev.index, {})
            for name, fn in series.items():
                setattr(dev, name, int(round(fn(t))))
            if "energy_mj" not in series:
                dev.energy_mj += int(dev.power_mw * dt)
            due = self._xids.get(dev.index)
            while due and due[0][0] <= t:
                dev.pending_xids.append(due.pop(0)[1])


def scripted_from_spec(
    spec: Mapping[str, Any], *, clock: Clock | None = None, privileged: bool = True
) -> ScriptedBackend:
    """Build a scripted backend from a plain mapping (a TOML scenario for tests).

    ``{"profile": "h100", "gpus": 8, "series": [{"gpu": 0, "field": "power_mw",
    "points": [[0, 100000], [10, 300000]], "interpolate": "linear"}], "lost": {"3": 20.0},
    "unsupported": {"1": ["nvmlDeviceGetFanSpeed"]}, "xids": {"0": [[5.0, 79]]}}``
    """
    profile = load_profile(str(spec.get("profile", "h100")))
    devices = make_devices(profile, int(spec.get("gpus", 1)))
    script: dict[int, dict[str, Series]] = {}
    for s in spec.get("series", []):
        kind = s.get("interpolate", "step")
        make = linear_series if kind == "linear" else step_series
        pts = [(float(t), float(v)) for t, v in s["points"]]
        script.setdefault(int(s["gpu"]), {})[str(s["field"])] = make(pts)
    for gpu, names in dict(spec.get("unsupported", {})).items():
        devices[int(gpu)].unsupported.update(names)
    return ScriptedBackend(
        devices,
        script,
        clock=clock,
        lost_at={int(k): float(v) for k, v in dict(spec.get("lost", {})).items()},
        xids={int(k): [(float(t), int(x)) for t, x in v] for k, v in dict(spec.get("xids", {})).items()},
        privileged=privileged,
    )
