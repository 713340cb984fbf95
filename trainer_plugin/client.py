"""Torch-free client of the daemon's control socket: reports out, decisions in, never blocking.

A background thread owns the socket. It connects, says hello, sends queued messages and
reads decisions into a queue; when the daemon is absent or dies it reconnects with
exponential backoff. Calls from the training loop only touch in-memory queues.
"""

from __future__ import annotations

import collections
import logging
import os
import select
import sys
import threading
import time
from typing import Any

from gputuned import protocol

logger = logging.getLogger(__name__)

DEFAULT_SOCKET = "/run/gputuned/control.sock"


class RefusedError(Exception):
    """The daemon answered the hello with a refusal; the message says why."""


class DaemonClient:
    """One connection of one rank to its node's daemon (reconnecting, thread-backed)."""

    def __init__(
        self,
        path: str = DEFAULT_SOCKET,
        job: str = "job",
        rank: int = 0,
        world_size: int = 1,
        leader: bool | None = None,
        local_rank: int | None = None,
        batch_size: int = 0,
        batch_mode: str = "global",
        backoff_s: tuple[float, float] = (0.05, 5.0),
        pending_limit: int = 64,
        start: bool = True,
        cuda_uuid: str = "",
    ) -> None:
        self.leader = rank == 0 if leader is None else leader
        # the daemon matches this process's pid (checked against the socket's peer) with NVML's
        # process list; the UUID says which GPU it is where the process has contexts on several
        device = {"cuda_uuid": cuda_uuid} if cuda_uuid else {}
        if local_rank is None:  # torchrun's rank on this node; the global rank only without torchrun
            local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
        # checked now, so a hello the daemon would refuse fails here (ProtocolError, a ValueError)
        self._hello = protocol.message(
            "hello", job=job, rank=rank, local_rank=local_rank,
            world_size=world_size, pid=os.getpid(), leader=self.leader, batch_size=int(batch_size),
            batch_mode=batch_mode, **device)
        self.path = path
        self.job = job
        self.rank = rank
        self.world_size = world_size
        self.local_rank = self._hello["local_rank"]
        self.batch_size = batch_size
        self.batch_mode = batch_mode
        self.backoff_s = backoff_s
        self.report_interval_s = 1.0
        self.session: str | None = None
        self.connects_total = 0
        self.malformed_total = 0
        self.sent_total = 0
        self.dropped_total = 0
        self._refusal_warned = False
        self._lock = threading.Lock()
        self._out: collections.deque[dict[str, Any]] = collections.deque(maxlen=pending_limit)
        self._report: dict[str, Any] | None = None
        self._decisions: collections.deque[dict[str, Any]] = collections.deque(maxlen=pending_limit)
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._thread = threading.Thread(target=self._run, name=f"gputuned-client-{rank}", daemon=True)
        if start:
            self._thread.start()

    @property
    def connected(self) -> bool:
        """True while a welcomed connection is up."""
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        """Block up to timeout seconds for a welcomed connection (tests, start-up)."""
        return self._connected.wait(timeout)

    def report(self, step: int, steps: int, stats: dict[str, Any],
               rank_times: list[list[float | int]] | None = None) -> None:
        """Queue an aggregated report; a newer report replaces an unsent one; dropped if offline.

        ``rank_times``: [rank, compute_s, wait_s] of the job's ranks (the global critical path).
        """
        if not self._connected.is_set():
            self.dropped_total += 1
            return
        msg: dict[str, Any] = {"type": "report", "step": int(step), "steps": int(steps), "time": time.time(),
                               "stats": protocol.clean_stats(stats)}  # checked when sent
        if rank_times:
            msg["rank_times"] = rank_times[:protocol.MAX_RANK_TIMES]
        with self._lock:
            if self._report is not None:
                self.dropped_total += 1
            self._report = msg
        self._wake()

    def poll_decision(self) -> dict[str, Any] | None:
        """Return the oldest valid decision received ({'id', 'batch_size'|'profile_steps'}) or None."""
        try:
            return self._decisions.popleft()
        except IndexError:
            return None

    def ack(self, id: str, ok: bool, applied_step: int | None = None, error: str | None = None) -> None:
        """Queue the answer to decision ``id``."""
        msg: dict[str, Any] = {"type": "ack", "id": id, "ok": bool(ok)}
        if applied_step is not None:
            msg["applied_step"] = int(applied_step)
        if error is not None:
            msg["error"] = str(error)[:1000]
        self._queue(msg)

    def profile_result(self, id: str, summary: dict[str, Any]) -> None:
        """Queue the summary of a profile capture answering decision ``id``."""
        self._queue({"type": "profile_result", "id": id, "summary": summary})

    def close(self, timeout: float = 1.0) -> None:
        """Flush what is queued (briefly) and stop the thread."""
        deadline = time.monotonic() + timeout
        while self._connected.is_set() and (self._out or self._report) and time.monotonic() < deadline:
            time.sleep(0.005)
        self._stop.set()
        self._wake()
        if self._thread.is_alive():
            self._thread.join(timeout)
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> DaemonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- background thread --------------------------------------------------------------

    def _queue(self, msg: dict[str, Any]) -> None:
        with self._lock:
            if len(self._out) == self._out.maxlen:
                self.dropped_total += 1
            self._out.append(msg)
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass

    def _run(self) -> None:
        delay = self.backoff_s[0]
        while not self._stop.is_set():
            chan = self._connect()
            if chan is None:
                self._stop.wait(delay)
                delay = min(delay * 2, self.backoff_s[1])
                continue
            delay = self.backoff_s[0]
            try:
                self._serve(chan)
            except (OSError, protocol.FrameTooLarge) as e:
                if not self._stop.is_set():
                    logger.info("daemon connection lost (%s); reconnecting", e)
            finally:
                self._connected.clear()
                chan.close()
            if not self._stop.is_set():
                self._stop.wait(delay)

    def _refused(self, why: str) -> None:
        """Say once, in the job's log, that the daemon refused this process and why (later refusals: debug)."""
        if self._refusal_warned:
            logger.debug("daemon at %s refused the connection again: %s", self.path, why)
            return
        self._refusal_warned = True
        logger.warning("gputuned daemon at %s refused this process (%s); this job is not monitored or tuned "
                       "until it is accepted", self.path, why)

    def _greet(self, chan: protocol.Channel) -> dict[str, Any]:
        """Send the hello and return the welcome; RefusedError with the reason when the daemon refuses."""
        try:
            chan.send({**self._hello, "pid": os.getpid()})
        except OSError:  # a daemon refusing a peer answers and closes without reading: its reason may wait
            pass
        try:
            answer = chan.receive()
        except protocol.ProtocolError as e:
            if str(e).startswith("v: "):
                raise RefusedError(f"protocol version mismatch, {e}") from e
            raise RefusedError(f"bad hello exchange: {e}") from e
        if answer["type"] == "error":
            text = answer["error"]
            kind = "permission" if "not allowed" in text else "hello refused"
            raise RefusedError(f"{kind}: {text}")
        if answer["type"] != "welcome":
            raise RefusedError(f"bad hello exchange: expected welcome, got {answer['type']}")
        return answer

    def _connect(self) -> protocol.Channel | None:
        try:
            chan = protocol.Channel.connect(self.path, protocol.TO_TRAINER, timeout=5.0)
        except PermissionError as e:
            self._refused(f"permission: {e.strerror} on the socket; join its group (control.allowed_gids)")
            return None
        except OSError as e:
            logger.debug("daemon not reachable at %s: %s", self.path, e)
            return None
        try:
            welcome = self._greet(chan)
        except RefusedError as e:
            self._refused(str(e))
            chan.close()
            return None
        except OSError as e:
            logger.debug("daemon at %s closed the connection during hello: %s", self.path, e)
            chan.close()
            return None
        self._refusal_warned = False  # a later refusal (a restarted daemon, a new config) is news again
        self.sent_total += 1
        self.report_interval_s = float(welcome["report_interval_s"])
        self.session = welcome["session"]
        self.connects_total += 1
        self._connected.set()
        logger.info("connected to daemon at %s (session %s)", self.path, self.session)
        return chan

    def _send(self, chan: protocol.Channel, msg: dict[str, Any]) -> None:
        try:
            chan.send(msg)
        except protocol.ProtocolError as e:  # nothing was sent; the connection goes on
            self.dropped_total += 1
            logger.warning("not sending a %s message that breaks the protocol: %s", msg.get("type"), e)
            return
        self.sent_total += 1

    def _serve(self, chan: protocol.Channel) -> None:
        fd = chan.sock.fileno()
        while not self._stop.is_set():
            with self._lock:
                batch = list(self._out)
                self._out.clear()
                if self._report is not None:
                    batch.append(self._report)
                    self._report = None
            for msg in batch:
                self._send(chan, msg)
            readable, _, _ = select.select([fd, self._wake_r], [], [], 0.5)
            if self._wake_r in readable:
                try:
                    os.read(self._wake_r, 4096)
                except BlockingIOError:
                    pass
            if fd in readable:
                self._receive(chan)

    def _receive(self, chan: protocol.Channel) -> None:
        try:
            msg = chan.receive()
            if msg["type"] == "decision" and not self.leader:
                raise protocol.ProtocolError("decision: sent to a non-leader rank")
        except protocol.FrameTooLarge:
            raise
        except protocol.ProtocolError as e:
            self.malformed_total += 1
            logger.warning("ignoring malformed message from daemon: %s", e)
            self._send(chan, protocol.error(str(e)))
            return
        if msg["type"] == "decision":
            self._decisions.append({"id": msg["id"], **protocol.decision_change(msg)})
        elif msg["type"] == "error":
            logger.warning("daemon reported an error: %s", msg["error"])
        else:
            logger.debug("ignoring %s message from daemon", msg["type"])


def cuda_device_uuid(device: int | None = None) -> str:
    """NVML's UUID (``GPU-...``) of this process's current CUDA device; "" without torch or CUDA.

    torch is only looked up, never imported here: the client stays importable without it.
    """
    torch = sys.modules.get("torch")
    try:
        if torch is None or not torch.cuda.is_available():
            return ""
        props = torch.cuda.get_device_properties(torch.cuda.current_device() if device is None else device)
        uuid = str(getattr(props, "uuid", "") or "")
    except (RuntimeError, AssertionError, AttributeError):
        return ""
    return uuid if uuid.startswith(("GPU-", "MIG-")) or not uuid else f"GPU-{uuid}"
