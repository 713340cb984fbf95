"""dcgm-exporter's series: its label set, by the dcgm-exporter release the config names.

A GPU series served under a DCGM name carries dcgm-exporter's labels in its order: ``gpu``,
``UUID``, ``pci_bus_id``, ``device`` (``nvidia<N>``), ``modelName``, the host name (``Hostname``
up to release 4.5.3-4.8.2, ``hostname`` after it), ``DCGM_FI_DRIVER_VERSION`` (the default CSV's
label field), then any other label of the gputuned series (pod, namespace, container ...), and on
XID errors ``err_code`` and ``err_msg``. docs/dashboards.md has the whole mapping.
"""

from __future__ import annotations

import re

from gputuned.collectors.families import DcgmName, Labels

#: The dcgm-exporter release whose series gputuned serves unless the config names another.
DEFAULT_VERSION = "4.5.3-4.8.2"
#: The last release that spells the host label ``Hostname``; later ones write ``hostname``.
LAST_CAPITAL_HOSTNAME = (4, 5, 3, 4, 8, 2)
VERSION_PATTERN = r"^\d+\.\d+\.\d+-\d+\.\d+\.\d+$"

#: Labels of the gputuned series that the DCGM identity labels replace.
_IDENTITY = frozenset(("gpu", "uuid", "model", "pci_bus_id"))

#: Descriptions of the XID codes seen on training hosts (NVIDIA's XID catalog); others read "Unknown Error".
XID_MESSAGES: dict[int, str] = {
    0: "No Error",
    13: "Graphics Engine Exception",
    31: "GPU memory page fault",
    32: "Invalid or corrupted push buffer stream",
    43: "GPU stopped processing",
    45: "Preemptive cleanup, due to previous errors -- Most likely to see when running multiple cuda",
    48: "Double Bit ECC Error",
    61: "Internal micro-controller breakpoint/warning",
    62: "Internal micro-controller halt",
    63: "ECC page retirement or row remapping recording event",
    64: "ECC page retirement or row remapper recording failure",
    74: "NVLINK Error",
    79: "GPU has fallen off the bus",
    92: "High single-bit ECC error rate",
    94: "Contained ECC error",
    95: "Uncontained ECC error",
    119: "GSP RPC Timeout",
    120: "GSP Error",
}


def hostname_label(version: str) -> str:
    """The host label's name in dcgm-exporter ``version`` (``Hostname`` up to 4.5.3-4.8.2)."""
    if not re.match(VERSION_PATTERN, version):
        raise ValueError(f"dcgm-exporter version {version!r} is not like {DEFAULT_VERSION}")
    parts = tuple(int(p) for p in re.split(r"[.-]", version))
    return "Hostname" if parts <= LAST_CAPITAL_HOSTNAME else "hostname"


def escape(value: str) -> str:
    """A label value escaped for the exposition formats."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class DcgmLabels:
    """Builds the label text of a DCGM series from a gputuned GPU series' labels."""

    def __init__(self, hostname: str, version: str = DEFAULT_VERSION) -> None:
        self.host_label = hostname_label(version)
        self._host = escape(hostname)

    def text(self, d: DcgmName, labels: Labels, driver: str, value: float) -> str:
        """``{gpu="0",UUID=...}`` for series ``labels`` under ``d``; ``driver`` is the driver version."""
        lab = dict(labels)
        gpu = lab.get("gpu", "")
        parts = [f'gpu="{escape(gpu)}"', f'UUID="{escape(lab.get("uuid", ""))}"',
                 f'pci_bus_id="{escape(lab.get("pci_bus_id", ""))}"', f'device="nvidia{escape(gpu)}"',
                 f'modelName="{escape(lab.get("model", ""))}"', f'{self.host_label}="{self._host}"',
                 f'DCGM_FI_DRIVER_VERSION="{escape(driver)}"']
        consumed = _IDENTITY | {k for k, _ in d.where}
        parts += [f'{k}="{escape(v)}"' for k, v in labels if k not in consumed]
        if d.xid:
            code = int(value)
            parts += [f'err_code="{code}"', f'err_msg="{escape(XID_MESSAGES.get(code, "Unknown Error"))}"']
        return "{" + ",".join(parts) + "}"
