"""Progress bars for long work (rich), quiet when not on a terminal or when asked."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def enabled() -> bool:
    return sys.stderr.isatty() and os.environ.get("BACKDOORLAB_QUIET", "") in ("", "0")


def progress(items: Iterable[T], desc: str | None = None, total: int | None = None) -> Iterator[T]:
    """Iterate ``items`` with a rich progress bar on stderr when ``desc`` is given."""
    if not desc or not enabled():
        yield from items
        return
    with progress_bar() as bar:
        task = bar.add_task(desc, total=total)
        for item in items:
            yield item
            bar.advance(task)


def progress_bar(*extra: Any) -> Any:
    """A rich progress bar on stderr: the task's description, the bar, done of total, any
    ``extra`` columns, time elapsed and time left (removed when it ends)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), *extra,
                    TimeElapsedColumn(), TimeRemainingColumn(), transient=True)
