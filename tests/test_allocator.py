"""The allocator the backdoorlab command restarts itself on (backdoorlab.allocator)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from backdoorlab import allocator
from backdoorlab.allocator import ALLOCATOR_ENV, chosen, find

# the restart as the command does it, then what the restarted process runs on and inherits
PROBE = ("import os; from backdoorlab.allocator import restart_with_allocator, loaded; "
         "from backdoorlab.errors import run_main; "
         "run_main(restart_with_allocator, 'backdoorlab'); "
         "print(loaded(), os.environ.get('LD_PRELOAD', '-'), "
         "os.environ.get('BACKDOORLAB_PRELOAD_WAS', '-'))")


def probe(**env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", ALLOCATOR_ENV)}
    return subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          env={**base, **env}, timeout=120)


def test_the_choice_read_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setattr(allocator, "find", lambda name: {"jemalloc": "libjemalloc.so.2"}.get(name))
    assert chosen({}) == "libjemalloc.so.2"  # auto: tcmalloc missing, jemalloc next
    assert chosen({ALLOCATOR_ENV: "auto"}) == "libjemalloc.so.2"
    assert chosen({ALLOCATOR_ENV: "system"}) is None
    with pytest.raises(ValueError, match="tcmalloc is not installed"):
        chosen({ALLOCATOR_ENV: "tcmalloc"})
    lib = tmp_path / "libmy.so"
    lib.write_bytes(b"")
    assert chosen({ALLOCATOR_ENV: str(lib)}) == str(lib)
    with pytest.raises(ValueError, match="no such file"):
        chosen({ALLOCATOR_ENV: str(tmp_path / "missing.so")})
    with pytest.raises(ValueError, match=f"^{ALLOCATOR_ENV}=tcmaloc: not one of auto, system"):
        chosen({ALLOCATOR_ENV: "tcmaloc"})
    monkeypatch.setattr(allocator, "find", lambda name: None)
    assert chosen({}) is None  # auto with nothing installed: the system's


def test_a_restart_that_cannot_start_goes_on_as_it_is(monkeypatch):
    def fail(*_):
        raise OSError("no exec here")

    monkeypatch.setattr(allocator, "loaded", lambda: "system")
    monkeypatch.setattr(allocator, "chosen", lambda: "libtcmalloc_minimal.so.4")
    monkeypatch.setattr(allocator.os, "execve", fail)
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.setattr(allocator.sys, "platform", "linux")
    allocator.restart_with_allocator()  # returns: the command runs on the system's malloc
    assert "LD_PRELOAD" not in os.environ


def test_the_system_allocator_is_not_restarted():
    proc = probe(**{ALLOCATOR_ENV: "system"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["system", "-", "-"]


def test_a_bad_choice_is_one_line_and_exit_2():
    proc = probe(**{ALLOCATOR_ENV: "tcmaloc"})
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"backdoorlab: error: {ALLOCATOR_ENV}=tcmaloc: not one of auto, system, tcmalloc, "
        "jemalloc or a library's path"]


@pytest.mark.skipif(not sys.platform.startswith("linux")
                    or not (find("tcmalloc") or find("jemalloc")),
                    reason="neither tcmalloc nor jemalloc is installed")
def test_the_command_restarts_on_the_installed_allocator_and_restores_the_environment():
    proc = probe()
    assert proc.returncode == 0, proc.stderr
    name = "tcmalloc" if find("tcmalloc") else "jemalloc"
    # runs on it; LD_PRELOAD as the user had it (unset) and no marker left for its children
    assert proc.stdout.split() == [name, "-", "-"]
    proc = probe(LD_PRELOAD="")  # an empty LD_PRELOAD is the same as none
    assert proc.stdout.split() == [name, "-", "-"]
    proc = probe(LD_PRELOAD="libm.so.6")  # the user's own preload: kept, and given back
    assert proc.stdout.split() == [name, "libm.so.6", "-"]
    if find("jemalloc") and find("tcmalloc"):
        proc = probe(**{ALLOCATOR_ENV: "jemalloc"})
        assert proc.stdout.split() == ["jemalloc", "-", "-"]
