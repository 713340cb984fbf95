"""SIGTERM or SIGINT (Ctrl-C) makes `gputuned train` checkpoint and stop cleanly; the next run resumes from there."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from gputuned.trainer_plugin.checkpoint import CheckpointManager

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_checkpoints_and_the_next_run_resumes(tmp_path, sig):
    ck = tmp_path / "ck"
    cfg = tmp_path / "t.toml"
    cfg.write_text(f'[train]\nepochs = 400\nlog_every = 1\n[checkpoint]\ndir = "{ck}"\nevery_steps = 100000\n'
                   f'[plugin]\nenabled = false\n')
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "gputuned.daemon.commands.cli", "train", str(cfg), "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 90
    for line in proc.stderr:
        if " step 20 " in line or time.monotonic() > deadline:
            break
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    result = json.loads(out.strip().splitlines()[-1])
    assert result["stopped_by_sigterm"] is True and 20 <= result["steps"] < 400 * 23
    saved = CheckpointManager(ck).list()
    assert [s for s, _ in saved] == [result["steps"]]
    # a short second run resumes at that step and goes on to max_steps
    cfg.write_text(cfg.read_text().replace("epochs = 400", f"epochs = 400\nmax_steps = {result['steps'] + 5}"))
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=90)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"at step {result['steps']}" in again.stderr
    assert json.loads(again.stdout.strip().splitlines()[-1])["steps"] == result["steps"] + 5
    # finished: a last checkpoint and the done marker; a third run trains nothing
    assert CheckpointManager(ck).done_step() == result["steps"] + 5
    third = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=90)
    assert "already finished" in third.stderr and json.loads(third.stdout.strip().splitlines()[-1])["steps"] == result["steps"] + 5


def test_ctrl_c_on_the_launcher_reaches_every_torchrun_worker(tmp_path):
    """`gputuned train --nproc 2` passes SIGINT on to torchrun, which hands it to both workers:
    they stop at one step and write its checkpoint (torchrun itself then exits 1, as it does on
    any signal)."""
    ck = tmp_path / "ck"
    cfg = tmp_path / "t.toml"
    cfg.write_text(f'[train]\nepochs = 400\nlog_every = 1\n[checkpoint]\ndir = "{ck}"\nevery_steps = 100000\n'
                   f'[plugin]\nenabled = false\n')
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "gputuned.daemon.commands.cli", "train", str(cfg), "--nproc", "2", "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 90
    for line in proc.stderr:
        if " step 20 " in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    out, _ = proc.communicate(timeout=60)
    assert time.monotonic() - sent < 10
    result = json.loads(out.strip().splitlines()[-1])
    assert result["stopped_by_sigterm"] is True and result["world_size"] == 2
    assert [s for s, _ in CheckpointManager(ck).list()] == [result["steps"]]
