"""Run directories: resolved config, metrics and artefacts written atomically."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import to_dict
from .errors import BackdoorlabError
from .io import atomic_write_json


def config_hash(obj: Any) -> str:
    data = to_dict(obj) if not isinstance(obj, dict) else obj
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def check_out(out: str | os.PathLike) -> Path:
    """``out`` as a Path once it can hold a run: not an existing file, and inside a folder
    this process may write to (checked before any work, so a bad ``--out`` is not found after
    minutes of scoring)."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise BackdoorlabError(f"option '--out': {path} is a file, not a directory")
    parent = next((q for q in [path, *path.parents] if q.exists()), Path("."))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BackdoorlabError(f"option '--out': {parent} is not writable")
    return path


def save_config(out: Path, cfg: Any, **extra: Any) -> Path:
    """Write ``config.json``: every option with its default filled in."""
    return atomic_write_json(Path(out) / "config.json", {**to_dict(cfg), **extra})


def run_config(run: str | Path) -> dict[str, Any]:
    """A run directory's ``config.json`` (every option it ran with, as :func:`save_config`
    wrote it), or {} when it has none."""
    path = Path(run) / "config.json"
    return read_json(path) if path.is_file() else {}


def write_metrics(out: str | Path, metrics: dict[str, Any]) -> Path:
    """Write a run's ``metrics.json`` atomically, with the process's peak memory so far
    (``resources``: ``peak_rss_gb``, the ``allocator``, and ``peak_gpu_gb`` on a GPU)."""
    from .memory import peak_memory

    return atomic_write_json(Path(out) / "metrics.json",
                             {**metrics, "resources": peak_memory()})


def read_json(path: Path) -> Any:
    """A run's JSON record; a damaged one is named in one line, not a traceback."""
    try:
        return json.loads(Path(path).read_text("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BackdoorlabError(f"{path}: not a valid JSON record ({exc})") from None


@dataclass
class RunResult:
    """What every registered method's ``run(cfg, out)`` returns: the run directory, the
    metrics it wrote to ``metrics.json``, the artefacts it saved (name -> path: ``adapter``,
    ``model``, ``interventions``, plots and arrays) and, for attacks and repairs run in this
    process, the trained model itself (not saved in any record)."""

    out_dir: Path
    metrics: dict[str, Any]
    model: Any = None
    artifacts: dict[str, Path] = field(default_factory=dict)

    @property
    def adapter(self) -> Path | None:
        """The saved adapter directory, if the run wrote one."""
        return self.artifacts.get("adapter")
