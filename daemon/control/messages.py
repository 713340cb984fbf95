"""What each message from a peer does: hello, report, ack, profile result, admin request, error.

The server owns the sockets and reads frames; every complete frame comes here, is decoded
against the protocol (docs/protocol.md) and acted on by its type and the connection's state:
a new connection must say hello (a trainer rank: ``client``) or make an admin request first;
reports come only from clients, acks and profile results only from a job's leader connection
and only for what was sent to it; a hello joins a job only from the uid that opened it (see
:class:`~gputuned.daemon.control.reports.JobTable`); admin requests that change something
need an admin uid. A message that breaks these rules is answered with an error and counted as
``malformed`` (a new connection is then closed); a bug reached by one message closes that
connection only.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Any, Protocol

from gputuned import protocol as P
from gputuned.daemon.control.config import ControlConfig
from gputuned.daemon.control.conn import Connection, is_admin
from gputuned.daemon.control.decisions import AdminHandler, DecisionBook
from gputuned.daemon.control.reports import JobTable

logger = logging.getLogger(__name__)


class Replies(Protocol):
    """How the handler answers a connection: the server's output side, on its selector thread."""

    rejected: collections.Counter[str]  # messages and peers refused, by reason

    def queue(self, conn: Connection, msg: dict[str, Any]) -> None:
        """Send ``msg`` on ``conn`` (a connection whose peer stopped reading is closed)."""

    def reject(self, conn: Connection, reason: str, text: str, *, close: bool) -> None:
        """Answer with an error counted under ``reason``; close when asked (or after too many)."""


class MessageHandler:
    """Acts on each decoded message of a connection; reports go to the job table, acks to the book."""

    def __init__(self, cfg: ControlConfig, jobs: JobTable, book: DecisionBook, admin: AdminHandler | None,
                 replies: Replies) -> None:
        self.cfg = cfg
        self.jobs = jobs
        self.book = book
        self.admin = admin
        self.replies = replies

    def handle(self, conn: Connection, body: bytes) -> None:
        """Decode one frame from ``conn`` and act on it; a bad one is answered with an error."""
        try:
            self._dispatch(conn, P.decode(body, P.TO_DAEMON))
        except P.ProtocolError as e:
            self.replies.reject(conn, "malformed", str(e), close=conn.kind == "new")
        except Exception as e:  # noqa: BLE001 - a bug reached by one message must not stop the socket
            logger.exception("control: internal error handling a %s message", conn.kind)
            self.replies.reject(conn, "internal_error", f"internal error: {type(e).__name__}", close=True)

    def _dispatch(self, conn: Connection, msg: dict[str, Any]) -> None:
        kind = msg["type"]
        if conn.kind == "new":
            if kind == "hello":
                self._hello(conn, msg)
            elif kind == "admin":
                self._admin(conn, msg)
            else:
                raise P.ProtocolError(f"{kind}: expected hello first")
        elif kind == "report":
            self._report(conn, msg)
        elif kind in ("ack", "profile_result"):
            self._answer(conn, msg)
        elif kind == "admin" and conn.kind == "admin":
            self._admin(conn, msg)
        elif kind == "error":
            logger.info("control: job %s rank %d reported an error: %.200s", conn.job, conn.rank, msg.get("error"))
        else:
            raise P.ProtocolError(f"{kind}: not expected now")

    def _hello(self, conn: Connection, msg: dict[str, Any]) -> None:
        if msg["pid"] != conn.pid and conn.pid:
            logger.debug("control: hello pid %d differs from peer pid %d (pid namespace?)", msg["pid"], conn.pid)
        # identity is the peer's credentials (SO_PEERCRED), never what the hello claims: the
        # peer's pid places the rank on a GPU, its UUID only picks among the GPUs that pid is on
        leader = bool(msg["leader"]) and msg["rank"] == 0
        why = self.jobs.connect(msg["job"], msg["rank"], uid=conn.uid, pid=conn.pid, cid=conn.cid, leader=leader,
                                uuid=str(msg.get("cuda_uuid", "")))
        if why is not None:
            self.replies.reject(conn, why[0], why[1], close=True)
            return
        conn.kind = "client"
        conn.job = msg["job"]
        conn.rank = msg["rank"]
        conn.leader = leader
        self.replies.queue(conn, P.message("welcome", session=f"c{conn.cid}",
                                           report_interval_s=self.cfg.report_interval_s, decisions=conn.leader))
        logger.info("control: job %s rank %d/%d connected (pid %d uid %d%s)", conn.job, conn.rank,
                    msg["world_size"], conn.pid, conn.uid, ", leader" if conn.leader else "")

    def _answer(self, conn: Connection, msg: dict[str, Any]) -> None:
        """An ack or a profile result: only from the job's leader, only for what was sent to it."""
        kind, ident = msg["type"], msg["id"]
        if conn.kind != "client" or not conn.leader or self.jobs.leader(conn.job) != conn.cid:
            self.replies.reject(conn, "not_leader", f"{kind}: only the leader connection of a job may send it", close=False)
        elif kind == "ack" and not self.book.acked(ident, conn.cid, msg):
            self.replies.reject(conn, "unknown_decision", f"ack.id: {ident} is not a decision sent on this connection",
                                close=False)
        elif kind == "profile_result" and not self.book.profile_result(ident, conn.job, msg["summary"]):
            self.replies.reject(conn, "unknown_decision", f"profile_result.id: {ident} is not a profile request "
                                f"sent to job {conn.job}", close=False)

    def _report(self, conn: Connection, msg: dict[str, Any]) -> None:
        if conn.kind != "client":
            raise P.ProtocolError("report: only after hello")
        t = msg.get("time")
        self.jobs.update(conn.job, conn.rank, msg["step"], float(t) if t else time.time(), P.report_stats(msg),
                         P.report_rank_times(msg))

    def _admin(self, conn: Connection, msg: dict[str, Any]) -> None:
        op = msg["op"]
        # status is read-only: any allowed peer may ask; changes need an admin uid.
        if op != "status" and not is_admin(conn.uid, self.cfg):
            self.replies.rejected["not_admin"] += 1
            self.replies.queue(conn, P.error(f"uid {conn.uid} is not in control.admin_uids"))
            conn.kind = "closing"
            return
        conn.kind = "admin"
        if self.admin is None:
            reply: dict[str, Any] = {"ok": False, "error": "no admin handler"}
        elif op == "status":
            reply = {"ok": True, "status": self.admin.status()}
        else:
            reply = self.admin.request(op, msg, f"uid {conn.uid}")
        self.replies.queue(conn, {"type": "admin_reply", "op": op, **reply})
