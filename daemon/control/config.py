"""The ``[control]`` table: where the control socket listens, who may connect, and its limits."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from gputuned.daemon.core.config import Section


class ControlConfig(Section):
    enabled: bool = True
    socket_path: Path = Path("/run/gputuned/control.sock")
    socket_mode: int = Field(0o660, ge=0, le=0o777, description="permission bits of the socket")
    socket_group: str = Field("", description="group owning the socket (name or gid); empty: the daemon's")
    allowed_uids: list[int] = Field([], description="uids that may connect, besides root and the daemon's own")
    allowed_gids: list[int] = Field([], description="gids (primary or supplementary) that may connect")
    admin_uids: list[int] = Field([0], description="uids that may set knobs by hand and restore (status is open to allowed peers)")
    max_message_bytes: int = Field(65536, ge=256, le=65536)
    hello_timeout_s: float = Field(5.0, gt=0, le=300)
    frame_timeout_s: float = Field(5.0, gt=0, le=300)
    idle_timeout_s: float = Field(600.0, gt=0, le=86400, description="close connections silent this long")
    max_messages_per_second: int = Field(200, ge=1, le=100_000)
    max_connections: int = Field(256, ge=1, le=65536)
    admin_connections: int = Field(4, ge=0, le=1024, description="connections kept for admin uids beyond max_connections")
    max_jobs: int = Field(64, ge=1, le=65536, description="jobs known at once (connected or within job_ttl_s)")
    max_jobs_per_uid: int = Field(8, ge=1, le=65536, description="jobs one uid may own at once")
    max_ranks: int = Field(1024, ge=1, le=1 << 20, description="ranks known at once, all jobs together")
    max_ranks_per_uid: int = Field(256, ge=1, le=1 << 20, description="ranks of the jobs one uid owns")
    report_interval_s: float = Field(1.0, gt=0, le=3600, description="told to clients in welcome")
    job_ttl_s: float = Field(60.0, gt=0, le=86400, description="keep a disconnected job's series this long")
