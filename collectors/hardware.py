"""Is NVIDIA hardware present on this host, whatever NVML says?

When NVML cannot be opened the daemon must tell a host without NVIDIA GPUs (a laptop, a CI
runner: the simulated node may stand in) from a GPU host whose driver failed to load (the
GPUs are real and must be reported down, never replaced by simulated ones). The evidence
is what the kernel shows without the driver library: device nodes ``/dev/nvidia<N>``, the
driver's ``/proc/driver/nvidia`` and PCI functions of vendor 0x10de in sysfs. The PCI
scan is what still finds the GPUs when the kernel module did not load at all.

Every path is taken relative to ``root`` so tests point the probe at a fake device tree.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

logger = logging.getLogger(__name__)

#: PCI vendor id of NVIDIA Corporation.
NVIDIA_PCI_VENDOR = 0x10DE

_DEVICE_NODE = re.compile(r"nvidia[0-9]+")


def _device_nodes(root: Path) -> list[str]:
    dev = root / "dev"
    try:
        names = sorted(p.name for p in dev.iterdir() if _DEVICE_NODE.fullmatch(p.name))
    except OSError:
        return []
    return [f"/dev/{n}" for n in names]


def _pci_functions(root: Path) -> list[str]:
    devices = root / "sys" / "bus" / "pci" / "devices"
    found = []
    try:
        entries = sorted(devices.iterdir())
    except OSError:
        return []
    for entry in entries:
        try:
            vendor = int((entry / "vendor").read_text().strip(), 16)
        except (OSError, ValueError):
            continue
        if vendor == NVIDIA_PCI_VENDOR:
            found.append(f"PCI {entry.name}")
    return found


def nvidia_hardware(root: Path | str = "/") -> list[str]:
    """The signs of NVIDIA hardware under ``root`` (device nodes, driver proc dir, PCI functions); empty when none."""
    root = Path(root)
    found = _device_nodes(root)
    if (root / "proc" / "driver" / "nvidia").exists():
        found.append("/proc/driver/nvidia")
    found += _pci_functions(root)
    logger.debug("NVIDIA hardware under %s: %s", root, found or "none")
    return found
