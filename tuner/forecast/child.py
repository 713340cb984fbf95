"""The forecaster's child processes: spawned with an inbox and an outbox queue, stopped politely.

Both the Prophet worker (:mod:`.worker`, started by :class:`~.service.ForecastService`) and the
offloaded detection process (:mod:`.offload`) are children of this kind: spawned (so the core's
threads and sockets stay its own), fed through the inbox, answering through the outbox, and
stopped by a ``None`` in the inbox, then terminated if they do not exit in time.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import queue
from collections.abc import Callable
from typing import Any


def spawn_child(target: Callable[..., None], name: str, *args: Any, inbox_size: int = 0,
                daemon: bool = False) -> tuple[Any, Any, Any]:
    """Start ``target(inbox, outbox, *args)`` in a spawned process: (process, inbox, outbox).

    ``inbox_size`` bounds the inbox (0: unbounded).
    """
    ctx = mp.get_context("spawn")
    inbox, outbox = ctx.Queue(inbox_size), ctx.Queue()
    proc = ctx.Process(target=target, args=(inbox, outbox, *args), name=name, daemon=daemon)
    proc.start()
    return proc, inbox, outbox


def stop_child(proc: Any, inbox: Any, timeout_s: float, *last: Any) -> None:
    """Send ``last`` and then ``None`` to the inbox, wait ``timeout_s`` for the exit, then terminate.

    A full or closed inbox sends no more: the child is terminated after the wait instead.
    """
    with contextlib.suppress(ValueError, OSError, queue.Full):
        for item in (*last, None):
            inbox.put_nowait(item)
    proc.join(timeout_s)
    if proc.is_alive():
        proc.terminate()
        proc.join(timeout_s)


def close_queues(*queues: Any) -> None:
    """Close the queues without waiting for their feeder threads to flush."""
    for q in queues:
        q.cancel_join_thread()
        q.close()
