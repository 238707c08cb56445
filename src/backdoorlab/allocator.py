"""The memory allocator a CPU run uses.

glibc's malloc keeps the memory a training step frees in its heap and reuses it imperfectly,
so a CPU process's resident peak runs well over what the step holds. tcmalloc and jemalloc
return and reuse it better, and are also faster for PyTorch on CPUs (PyTorch's own CPU
launcher, ``torch.backends.xeon.run_cpu``, preloads them for speed). An allocator has to be
in place before the process starts, so the ``backdoorlab`` command starts itself again with the
library in ``LD_PRELOAD`` when one is installed (Linux; the numbers in BENCHMARKS.md say what it
changes). ``$BACKDOORLAB_ALLOCATOR`` chooses:

- ``auto`` (default): tcmalloc, else jemalloc, else the system's;
- ``tcmalloc`` or ``jemalloc``: that one, an error when it is not installed;
- ``system``: the system's malloc, nothing preloaded;
- a path to an allocator's shared library.

Scripts that import backdoorlab choose their allocator themselves, for instance
``LD_PRELOAD=libtcmalloc_minimal.so.4 python script.py``. The allocator a run used is recorded
with its peak memory (``metrics.json``'s ``resources``).
"""

from __future__ import annotations

import ctypes.util
import os
import sys

from .errors import BackdoorlabError

ALLOCATOR_ENV = "BACKDOORLAB_ALLOCATOR"
#: set in the restarted process's environment: the ``LD_PRELOAD`` it had before, restored there
_RESTARTED = "BACKDOORLAB_PRELOAD_WAS"
#: allocator -> the library names it is found under, in order
LIBRARIES = {"tcmalloc": ("tcmalloc_minimal", "tcmalloc"), "jemalloc": ("jemalloc",)}
CHOICES = ("auto", "system", *LIBRARIES)


def loaded() -> str:
    """The allocator this process runs on: ``tcmalloc`` or ``jemalloc`` when its library is
    mapped into the process, else ``system``."""
    try:
        with open(f"/proc/{os.getpid()}/maps") as fh:
            maps = fh.read()
    except OSError:
        return "system"
    for name in LIBRARIES:
        if f"/lib{name}" in maps:
            return name
    return "system"


def find(name: str) -> str | None:
    """The shared library of allocator ``name`` (tcmalloc, jemalloc), None when none is
    installed where the dynamic loader looks."""
    for lib in LIBRARIES[name]:
        found = ctypes.util.find_library(lib)
        if found:
            return found
    return None


def chosen(env: dict[str, str] | os._Environ[str] = os.environ) -> str | None:
    """The library ``$BACKDOORLAB_ALLOCATOR`` asks to preload (None: the system's malloc).
    Raises :class:`~backdoorlab.errors.BackdoorlabError` (one line) for a value that is not a
    choice or an allocator that is not installed."""
    value = env.get(ALLOCATOR_ENV, "").strip() or "auto"
    if value == "system":
        return None
    if value == "auto":
        return next((lib for lib in map(find, LIBRARIES) if lib), None)
    if value in LIBRARIES:
        lib = find(value)
        if lib is None:
            libs = " or ".join(f"lib{n}" for n in LIBRARIES[value])
            raise BackdoorlabError(
                f"{ALLOCATOR_ENV}={value}: {value} is not installed (no {libs} where the "
                f"dynamic loader looks; or set {ALLOCATOR_ENV}=system)")
        return lib
    if os.sep in value:
        if not os.path.isfile(value):
            raise BackdoorlabError(f"{ALLOCATOR_ENV}={value}: no such file")
        return value
    raise BackdoorlabError(f"{ALLOCATOR_ENV}={value}: not one of {', '.join(CHOICES)} or a "
                           "library's path")


def restart_with_allocator() -> None:
    """Start this command again with the chosen allocator preloaded (see the module's text),
    unless it runs on one already, the system's is chosen, or this is not Linux. In the
    restarted process, restore the ``LD_PRELOAD`` the command was given, so that programs it
    starts inherit the user's environment. Call before anything else is imported, under
    :func:`~backdoorlab.errors.run_main` (a bad ``$BACKDOORLAB_ALLOCATOR`` raises
    :class:`~backdoorlab.errors.BackdoorlabError`)."""
    if _RESTARTED in os.environ:  # the restarted process: tidy its environment, go on
        was = os.environ.pop(_RESTARTED)
        if was:
            os.environ["LD_PRELOAD"] = was
        else:
            os.environ.pop("LD_PRELOAD", None)
        return
    if not sys.platform.startswith("linux") or loaded() != "system":
        return
    lib = chosen()
    if lib is None or not sys.executable:
        return
    was = os.environ.get("LD_PRELOAD", "")
    env = {**os.environ, "LD_PRELOAD": f"{lib}:{was}" if was else lib, _RESTARTED: was}
    # tcmalloc otherwise reports every allocation over 1 GiB (a large model's weights) on stderr
    env.setdefault("TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD", str(1 << 40))
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
    except OSError:  # the interpreter cannot be started again: go on with the system's malloc
        return
