"""The shape of a policy file read from its arrays' headers alone, without numpy.

A policy file (:meth:`gputuned.tuner.decision.policy_numpy.NumpyPolicy.save`) is an .npz: one
.npy member per weight matrix ``w0`` .. ``wN`` and bias ``b0`` .. ``bN``, and its activation. The
live tuner checks a policy's input size and action count against its own before it loads the
weights, so a policy it will not use costs no numpy import: the climbing chooser runs without it.
"""

from __future__ import annotations

import ast
import struct
import zipfile
from pathlib import Path
from typing import IO

_MAGIC = b"\x93NUMPY"


def npy_shape(f: IO[bytes]) -> tuple[int, ...]:
    """The shape in the header of the .npy stream ``f`` (format 1.0 to 3.0); ValueError if it is none."""
    magic = f.read(8)
    if len(magic) != 8 or not magic.startswith(_MAGIC) or magic[6] not in (1, 2, 3):
        raise ValueError("not a .npy array")
    size_format = "<H" if magic[6] == 1 else "<I"
    (length,) = struct.unpack(size_format, f.read(struct.calcsize(size_format)))
    header = ast.literal_eval(f.read(length).decode("utf-8" if magic[6] == 3 else "latin1"))
    shape = header.get("shape") if isinstance(header, dict) else None
    if not isinstance(shape, tuple) or not all(isinstance(n, int) for n in shape):
        raise ValueError(f"no shape in the .npy header {header!r}")
    return shape


def policy_shape(path: Path) -> tuple[int, int]:
    """(observations, actions) of the policy at ``path``: the first weight's columns, the last one's rows.

    FileNotFoundError without a file; ValueError when it is not a policy file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such policy file")
    try:
        with zipfile.ZipFile(path) as z:
            layers = sum(1 for name in z.namelist() if name.startswith("w"))
            first, last = (_member_shape(z, f"w{i}.npy") for i in (0, layers - 1))
    except (zipfile.BadZipFile, KeyError, SyntaxError, struct.error) as e:
        raise ValueError(f"{path}: not a policy file ({e})") from e
    if len(first) != 2 or len(last) != 2:
        raise ValueError(f"{path}: weights are not matrices ({first}, {last})")
    return first[1], last[0]


def _member_shape(z: zipfile.ZipFile, name: str) -> tuple[int, ...]:
    with z.open(name) as f:
        return npy_shape(f)
