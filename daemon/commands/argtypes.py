"""argparse types for the daemon's commands: bad values are refused while parsing, in one line.

Each type returns the parsed value or raises :class:`argparse.ArgumentTypeError`, whose text
argparse prefixes with the flag (``argument --speed: must be positive, got '0'``). Values the
config model also checks (ports, intervals, GPU counts) are left to it: its error names the key.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path


def positive_float(text: str) -> float:
    """A number > 0 (``inf`` allowed, ``nan`` refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if math.isnan(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return value


def output_file(text: str) -> Path:
    """A file to create or overwrite: its folder exists and is writable, and it is no folder itself."""
    path = Path(text)
    folder = path.parent
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory, not a file")
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"cannot write {text}: directory {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write {text}: directory {folder} is not writable")
    return path


def profile_names() -> tuple[list[str], list[str]]:
    """The simulated GPU profiles' short names (aliases) and full names."""
    from gputuned.collectors.sim.state import PROFILE_ALIASES, available_profiles

    return sorted(PROFILE_ALIASES), available_profiles()


def gpu_profile(text: str) -> str:
    """A simulated GPU profile: a short name (``h100``), a full name (``h100-sxm5-80gb``) or a TOML file."""
    from gputuned.collectors.sim.state import load_profile

    if text.endswith(".toml") and not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"no such profile file {text}")
    try:
        load_profile(text)
    except OSError as e:
        raise argparse.ArgumentTypeError(f"cannot read {text}: {e.strerror or e}") from None
    except ValueError as e:
        if text.endswith(".toml"):
            raise argparse.ArgumentTypeError(f"{text}: {e}") from None
        short, _ = profile_names()
        raise argparse.ArgumentTypeError(
            f"unknown GPU profile {text!r}; known: {', '.join(short)}, their full names "
            "(e.g. h100-sxm5-80gb) or a profile .toml file") from None
    return text
