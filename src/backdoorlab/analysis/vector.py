"""The backdoor vector (BkdAttr): the top heads' mean triggered outputs, written into the
residual stream through their output projections and summed.

``kind="difference"`` (default) uses mean triggered minus mean clean output per head, so that
adding and subtracting are symmetric; ``kind="triggered"`` uses the triggered means alone, as
the paper describes. Added once at one layer, at the last prompt token (``positions="prompt"``,
default; ``"each"`` also adds it at every generated token), it should switch the backdoor on
for clean prompts; subtracted, it should switch it off for triggered prompts. The sweep
measures both, per layer.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import check, opt
from ..errors import unknown
from ..io import save_arrays
from ..progress import progress
from ..registry import register
from ..runs import write_metrics
from .attribution import check_scores, head_means, head_ranking
from .behaviour import AnalysisConfig, Behaviour, setup
from .hooks import add_to_residual, arch, check_layers, head_directions

KINDS = ("difference", "triggered")


def backdoor_vector(model: Any, beh: Behaviour, heads: Sequence[tuple[int, int]], *,
                    kind: str = "difference") -> torch.Tensor:
    """``[hidden]``: the summed residual-stream writes of ``heads``."""
    if kind not in KINDS:
        raise unknown("vector kind", kind, KINDS)
    trig = head_means(model, beh, "triggered")
    values = trig - head_means(model, beh, "clean") if kind == "difference" else trig
    writes = head_directions(model, values)
    return sum((writes[layer, head] for layer, head in heads), torch.zeros(writes.shape[-1]))


def vector_sweep(model: Any, beh: Behaviour, vector: torch.Tensor, layers: Sequence[int], *,
                 scale: float = 1.0, pos: int | str = "prompt") -> list[dict[str, Any]]:
    """Per layer: ASR on clean prompts with the vector added, and on triggered prompts with it
    subtracted (and the backdoor score both ways). ``pos="prompt"`` adds it once, at the last
    prompt token; ``-1`` also at every generated token."""
    points = []
    for layer in progress(list(layers), desc="vector sweep", total=len(layers)):
        with add_to_residual(model, layer, vector, pos=pos, scale=scale):
            on = beh.asr(model, "clean")
        with add_to_residual(model, layer, vector, pos=pos, scale=-scale):
            off = beh.asr(model, "triggered")
        check = beh.last_check  # "off" by a silenced model is not "off"
        # the score is read at the last prompt token; add the vector there for it
        with add_to_residual(model, layer, vector, pos=beh.pos, scale=scale):
            s_on = beh.mean_score(model, "clean")
        with add_to_residual(model, layer, vector, pos=beh.pos, scale=-scale):
            s_off = beh.mean_score(model, "triggered")
        points.append({"layer": layer, "asr_clean_plus_vector": on,
                       "asr_triggered_minus_vector": off, "score_clean_plus_vector": s_on,
                       "score_triggered_minus_vector": s_off,
                       **{f"{k}_triggered_minus_vector": v for k, v in check.items()}})
    return points


def plot_sweep(points: Sequence[dict[str, Any]], base: dict[str, float], path: Any) -> Any:
    from ..plots import figure, finish

    fig, ax = figure(5.5)
    xs = [p["layer"] for p in points]
    ax.plot(xs, [p["asr_clean_plus_vector"] for p in points], marker="o",
            label="clean + vector")
    ax.plot(xs, [p["asr_triggered_minus_vector"] for p in points], marker="s",
            label="triggered - vector")
    ax.axhline(base["asr_triggered"], color="C1", ls=":", lw=1, label="triggered (no vector)")
    ax.axhline(base["asr_clean"], color="C0", ls=":", lw=1, label="clean (no vector)")
    ax.set_xlabel("layer where the vector is injected")
    ax.set_ylabel("ASR")
    ax.set_ylim(-0.02, 1.02)
    return finish(fig, ax, path, legend=8)


@dataclass
class VectorConfig(AnalysisConfig):
    """Options of ``backdoorlab analyze vector``."""

    scores: str | None = opt(None,
        "a heads run's heads.safetensors (default: fast attribution now)")
    top_share: float = opt(0.03, "share of heads whose outputs make the vector")
    kind: str = opt("difference",
        "difference (triggered minus clean mean) or triggered (the triggered mean)")
    layers: list[int] | None = opt(None,
        "layers to add or subtract it at (default: every layer, a sweep)")
    scale: float = opt(1.0, "multiplier of the vector")
    positions: str = opt("prompt", "where it is applied: prompt (the last prompt token) or all")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.positions not in ("prompt", "each"):
            raise unknown("positions", self.positions, ("prompt", "each"))
        check(0 < self.top_share <= 1, "top_share", f"must be in (0, 1], got {self.top_share}")
        if self.kind not in KINDS:
            raise unknown("kind", self.kind, KINDS)
        check_scores(self.scores)


@register("analysis", "vector", VectorConfig,
          "Backdoor vector: the top heads' trigger direction, added to clean prompts and "
          "subtracted from triggered ones")
def run_vector(cfg: VectorConfig | dict[str, Any], out: str | Path, *,
               trust_remote_code: bool = False) -> dict[str, Any]:
    """Build the backdoor vector and sweep its layer; writes metrics.json, vector.safetensors
    and vector_sweep.png."""
    suspect, beh, path = setup(cfg, out, command="vector",
                               validate=lambda model: check_layers(model, cfg.layers),
                               trust_remote_code=trust_remote_code)
    model = suspect.model
    a = arch(model)
    layers = list(range(a.n_layers)) if cfg.layers is None else list(cfg.layers)
    t0 = time.perf_counter()
    ranking, source = head_ranking(model, beh, cfg.scores)
    k = max(1, round(cfg.top_share * a.n_total))
    heads = ranking[:k]
    vec = backdoor_vector(model, beh, heads, kind=cfg.kind)
    base = {"asr_triggered": beh.asr(model, "triggered"), "asr_clean": beh.asr(model, "clean")}
    points = vector_sweep(model, beh, vec, layers, scale=cfg.scale,
                          pos="prompt" if cfg.positions == "prompt" else -1)
    best_on = max(points, key=lambda p: p["asr_clean_plus_vector"])
    best_off = min(points, key=lambda p: p["asr_triggered_minus_vector"])
    metrics = {"behaviour": beh.describe(), "ranking": source, "kind": cfg.kind,
               "positions": cfg.positions,
               "heads": [list(h) for h in heads], "vector_norm": float(vec.norm()),
               "baseline": base, "sweep": points,
               "best_on": {"layer": best_on["layer"], "asr": best_on["asr_clean_plus_vector"]},
               "best_off": {"layer": best_off["layer"],
                            "asr": best_off["asr_triggered_minus_vector"]},
               "wall_s": round(time.perf_counter() - t0, 2)}
    save_arrays(path / "vector.safetensors", {"vector": vec})
    plot_sweep(points, base, path / "vector_sweep.png")
    write_metrics(path, metrics)
    return metrics
