"""Progress bars for long work (rich), quiet when not on a terminal or when asked."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def enabled() -> bool:
    return sys.stderr.isatty() and os.environ.get("BACKDOORLAB_QUIET", "") in ("", "0")


def progress(items: Iterable[T], desc: str | None = None, total: int | None = None) -> Iterator[T]:
    """Iterate ``items`` with a rich progress bar on stderr when ``desc`` is given."""
    if not desc or not enabled():
        yield from items
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task(desc, total=total)
        for item in items:
            yield item
            bar.advance(task)
