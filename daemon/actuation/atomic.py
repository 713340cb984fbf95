"""Private files replaced atomically: a checked directory, exclusive temp files, no symlinks followed.

The state file lives in a directory only the daemon's uid may write (systemd's
StateDirectory, mode 0700). Before writing, the directory is checked: owned by the
daemon's effective uid and neither group- nor world-writable, else :class:`UnsafeDirectory`
names why. A replacement is written to a temp file with a random name, created with
``O_EXCL | O_NOFOLLOW`` (a planted file or symlink makes the create fail instead of being
written through), fsynced, renamed over the target, and the directory fsynced. Reads
open with ``O_NOFOLLOW | O_NONBLOCK`` and take regular files only, so a symlink or a FIFO
put in place of the file is refused rather than followed or waited on.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

MAX_READ_BYTES = 16 << 20  # far above any state file (64 GPUs: ~30 KB)


class UnsafeDirectory(OSError):
    """A directory the daemon must not write private files into; the text says why."""


def check_directory(directory: Path) -> None:
    """Raise UnsafeDirectory unless ``directory`` is owned by this uid and not group/world writable."""
    st = os.stat(directory)
    uid = os.geteuid()
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeDirectory(f"{directory} is not a directory: refusing to keep the state file there")
    if st.st_uid != uid:
        raise UnsafeDirectory(f"state directory {directory} is owned by uid {st.st_uid}, not the daemon's uid "
                              f"{uid}: refusing to use it")
    if st.st_mode & 0o022:
        raise UnsafeDirectory(f"state directory {directory} is group or world writable (mode "
                              f"{stat.S_IMODE(st.st_mode):04o}): refusing to use it (chmod 0700)")


def private_directory(directory: Path) -> None:
    """Create ``directory`` (mode 0700) if missing, then check it (raises UnsafeDirectory, OSError)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    check_directory(directory)


def temp_name(path: Path) -> Path:
    """A fresh, unpredictable temp-file name next to ``path`` (``.<name>.<random>.tmp``)."""
    return path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"


def temp_glob(path: Path) -> str:
    """The glob that matches every temp file :func:`temp_name` makes for ``path``."""
    return f".{path.name}.*.tmp"


def replace_file(path: Path, body: bytes) -> None:
    """Replace ``path`` with ``body``: exclusive temp file, fsync, rename, fsync the directory."""
    directory = path.parent
    private_directory(directory)
    tmp = temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            view = memoryview(body)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(directory)


def read_private(path: Path) -> bytes:
    """The bytes of regular file ``path``, not following a symlink; raises OSError (FileNotFoundError)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{path} is not a regular file")
        chunks = []
        total = 0
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
            total += len(chunk)
            if total > MAX_READ_BYTES:
                raise OSError(f"{path} is larger than {MAX_READ_BYTES} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def fsync_dir(directory: Path) -> None:
    """fsync a directory so a rename or unlink in it survives a power loss (best effort)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
