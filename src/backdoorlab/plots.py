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


def finish(fig: Any, ax: Any, path: str | Path, *, legend: int = 8) -> Path:
    """The house style's last lines: a light grid, the legend at font size ``legend``, the
    figure saved to ``path``."""
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend)
    return save_figure(fig, path)


def save_figure(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def heatmap(m: Any, path: Any, *, title: str, xlabel: str, ylabel: str,
            cmap: str = "viridis", center: bool = False) -> Any:
    """A heatmap of a 2-D tensor/array (probe transfer matrix, head-attribution map)."""
    fig, ax = figure(5.5, 4.5)
    kw: dict[str, Any] = {"cmap": cmap, "aspect": "auto", "origin": "lower"}
    if center:
        lim = float(m.abs().nan_to_num(0).max()) or 1.0
        kw.update(vmin=-lim, vmax=lim, cmap="RdBu_r")
    im = ax.imshow(m.numpy() if hasattr(m, "numpy") else m, **kw)
    fig.colorbar(im, ax=ax)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    integer_ticks(ax)
    return save_figure(fig, path)


def integer_ticks(ax: Any, y: bool = True) -> None:
    """Layer and head indices are integers."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if y:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
