"""Progress lines of long commands: on stderr, shown on a terminal or when asked, silent when piped.

Every long command (``record``, ``experiment``, ``sim calibrate``, ``train``, the bench scripts)
draws its progress through :func:`progress_bar` or :class:`ProgressLine`, so one rule decides
where a bar appears: a ``--progress``/``--no-progress`` flag when given, else the environment
variable ``GPUTUNED_PROGRESS`` (``1`` or ``0``), else whether stderr is a terminal. Nothing is
written to stdout, so a command's output and its logs stay the same when piped.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, TextIO, TypeVar

if TYPE_CHECKING:
    from rich.progress import Progress

#: Environment variable forcing progress lines on (``1``) or off (``0``) when no flag says.
ENV = "GPUTUNED_PROGRESS"

T = TypeVar("T")


def wanted(flag: bool | None = None, stream: TextIO | None = None) -> bool:
    """Whether to draw progress: the flag if given, else ``$GPUTUNED_PROGRESS``, else a terminal on stderr."""
    if flag is not None:
        return flag
    env = os.environ.get(ENV, "").strip().lower()
    if env in ("1", "yes", "true", "on"):
        return True
    if env in ("0", "no", "false", "off"):
        return False
    stream = stream if stream is not None else sys.stderr
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream
        return False


def add_progress_flag(parser: argparse.ArgumentParser) -> None:
    """Add ``--progress``/``--no-progress`` (default: a line only when stderr is a terminal)."""
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help=f"draw a progress line on stderr (default: when stderr is a terminal, or ${ENV}=1)")


def progress_bar(flag: bool | None = None, transient: bool = True) -> Progress:
    """A rich Progress on stderr, disabled unless :func:`wanted`; asked for on a pipe, it draws anyway."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    show = wanted(flag)
    piped = not sys.stderr.isatty()
    console = Console(file=sys.stderr, force_terminal=True if show and piped else None)
    return Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), TaskProgressColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=transient,
                    disable=not show, redirect_stdout=False, refresh_per_second=1 if piped else 10)


class ProgressLine:
    """One task's progress line; a context manager around :func:`progress_bar`."""

    def __init__(self, description: str, total: float | None, flag: bool | None = None) -> None:
        self._bar = progress_bar(flag)
        self._task = self._bar.add_task(description, total=total)

    @property
    def shown(self) -> bool:
        """Whether the line is drawn at all."""
        return not self._bar.disable

    def update(self, completed: float, description: str | None = None) -> None:
        """Set the amount done (in the total's unit), and the text if given."""
        if description is None:
            self._bar.update(self._task, completed=completed)
        else:
            self._bar.update(self._task, completed=completed, description=description)

    def advance(self, amount: float = 1.0) -> None:
        """Add ``amount`` to the amount done."""
        self._bar.update(self._task, advance=amount)

    def __enter__(self) -> ProgressLine:
        self._bar.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._bar.stop()


def track(items: Iterable[T], description: str, total: int | None = None, flag: bool | None = None) -> Iterator[T]:
    """Yield ``items`` while a progress line counts them (total: ``len(items)`` when it has one)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with ProgressLine(description, total, flag) as line:
        for item in items:
            yield item
            line.advance()
