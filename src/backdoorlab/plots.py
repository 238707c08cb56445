"""Plot helpers: headless matplotlib, PNGs written atomically."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from .io import atomic_write_bytes


def figure(width: float = 5.0, height: float = 3.2) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def save_figure(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
