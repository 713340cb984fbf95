"""Host memory and swap come from one read of meminfo, with psutil's values to the byte."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from gputuned.collectors import host as H
from gputuned.collectors import network as N

MEMINFO = """MemTotal:       24683784 kB
MemFree:        21335148 kB
MemAvailable:   {available} kB
Buffers:          402744 kB
Cached:          1858956 kB
Shmem:             12012 kB
Active:          1500000 kB
Inactive:        1200000 kB
SReclaimable:     140000 kB
Active(file):     900000 kB
Inactive(file):   800000 kB
{swap}"""


def served(proc: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, float]:
    monkeypatch.setattr(psutil, "PROCFS_PATH", str(proc))
    return {name: v for name, _, v in H.HostCollector(proc=proc)._memory_samples()}


def psutil_says(proc: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, float]:
    monkeypatch.setattr(psutil, "PROCFS_PATH", str(proc))
    vm, sw = psutil.virtual_memory(), psutil.swap_memory()
    return {H.MEM_TOTAL: float(vm.total), H.MEM_AVAILABLE: float(vm.available), H.MEM_USED: float(vm.total - vm.available),
            H.SWAP_TOTAL: float(sw.total), H.SWAP_USED: float(sw.used)}


@pytest.mark.parametrize(("available", "swap"), [
    ("23851748", "SwapTotal:       2097148 kB\nSwapFree:        1048572 kB\n"),
    ("24683784", "SwapTotal:             0 kB\nSwapFree:              0 kB\n"),  # all available, no swap
    ("0", "SwapTotal:       2097148 kB\nSwapFree:        2097148 kB\n"),  # psutil estimates: served as it does
    ("99999999", "SwapTotal:       2097148 kB\nSwapFree:        2097148 kB\n"),  # above total (a container)
])
def test_memory_and_swap_equal_psutils(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, available: str, swap: str) -> None:
    (tmp_path / "meminfo").write_text(MEMINFO.format(available=available, swap=swap))
    (tmp_path / "vmstat").write_text("pswpin 10\npswpout 20\noom_kill 0\n")
    assert H.read_memory(str(tmp_path)) is None or available not in ("0", "99999999")
    assert served(tmp_path, monkeypatch) == psutil_says(tmp_path, monkeypatch)


def test_this_hosts_totals_equal_psutils(monkeypatch: pytest.MonkeyPatch) -> None:
    got = served(Path("/proc"), monkeypatch)
    assert got[H.MEM_TOTAL] == psutil.virtual_memory().total and got[H.SWAP_TOTAL] == psutil.swap_memory().total


def test_a_proc_file_read_in_several_reads_is_whole(tmp_path: Path) -> None:
    text = "".join(f"line {i} {'x' * 100}\n" for i in range(2000))  # 200 kB: more than one os.read
    (tmp_path / "big").write_text(text)
    assert N.read_text(str(tmp_path / "big")) == text
