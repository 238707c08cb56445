"""User-facing errors.

Every problem a user can fix (a bad file, row, option or value) raises :class:`BackdoorlabError`
with one line that names the culprit. The CLI prints that line and exits with status 2; no
traceback, nothing half-written.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable, Iterable


class BackdoorlabError(ValueError):
    """A problem with the user's input, reported as one line."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean 'x'?)' for the closest choice, or '' when none is close."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown(what: str, name: str, choices: Iterable[str]) -> BackdoorlabError:
    """Build the standard 'unknown X' error with a did-you-mean hint and the valid choices."""
    choices = sorted(choices)
    return BackdoorlabError(
        f"unknown {what} {name!r}{did_you_mean(name, choices)}; choose from: {', '.join(choices)}"
    )


def run_main(main: Callable[[], object], prog: str) -> None:
    """Run an entry point (the CLI, a benchmark script) so that a :class:`BackdoorlabError`
    becomes one line on stderr and exit status 2, and Ctrl-C exit status 130, no traceback."""
    try:
        main()
    except BackdoorlabError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)
