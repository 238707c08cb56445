"""The analysis interventions made permanent: ablate the top backdoor heads, or subtract the
backdoor vector, in every forward of the repaired model.

The repair is stored as a hook configuration beside the suspect model: ``interventions.json``
(what, where) and ``interventions.safetensors`` (the values), applied on load by
:func:`apply_interventions` with the same hook code the analyses use. Nothing of the model's
weights is copied, and the configuration can be inspected or removed.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..analysis.attribution import (
    ABLATIONS,
    POSITIONS,
    ablation_means,
    check_scores,
    head_ranking,
)
from ..analysis.behaviour import Behaviour, behaviour_for
from ..analysis.hooks import HeadEdit, add_to_residual, arch, check_layers, edit_heads
from ..analysis.vector import KINDS, backdoor_vector
from ..config import check, opt
from ..errors import BackdoorlabError, unknown
from ..evaluation.attack_eval import AttackEval
from ..io import atomic_write_json, load_arrays, save_arrays
from ..models import Suspect
from ..progress import progress
from ..registry import register
from ..runs import read_json
from .base import DefenseConfig, run_defense


def apply_interventions(model: Any, directory: str | Path) -> contextlib.ExitStack:
    """Attach the hooks stored in ``directory`` to ``model`` (kept until the returned stack is
    closed; also stored on the model as ``backdoorlab_interventions``)."""
    d = Path(directory)
    spec = read_json(d / "interventions.json")
    values = load_arrays(d / "interventions.safetensors")
    stack = contextlib.ExitStack()
    if spec["kind"] == "ablate-heads":
        edits = [HeadEdit(int(h[0]), int(h[1]), values["values"][i])
                 for i, h in enumerate(spec["heads"])]
        pos = "all" if spec.get("positions", "all") == "all" else -1
        stack.enter_context(edit_heads(model, edits, pos=pos))
    elif spec["kind"] == "subtract-vector":
        pos = "prompt" if spec.get("positions", "prompt") == "prompt" else -1
        stack.enter_context(add_to_residual(model, int(spec["layer"]), values["vector"],
                                            pos=pos, scale=-float(spec["scale"])))
    else:
        raise BackdoorlabError(f"{d}/interventions.json: unknown kind {spec['kind']!r}")
    model.backdoorlab_interventions = stack
    return stack


@dataclass
class InterventionConfig(DefenseConfig):
    """Options of ``backdoorlab defend ablate-heads|subtract-vector``: the heads come from a
    heads run (``scores``) or from fast attribution on the suspect now."""

    scores: str | None = opt(None,
        "a heads run's heads.safetensors (default: fast attribution now)")
    top_share: float = opt(0.03, "share of heads ablated or making the vector")
    method: str = opt("mean", "ablate-heads: mean or zero")
    positions: str = opt("all", "ablate-heads: all positions or last")
    kind: str = opt("difference", "subtract-vector: difference or triggered")
    layer: int | None = opt(None,
        "subtract-vector: the layer (default: chosen by a sweep on training prompts)")
    scale: float = opt(1.0, "subtract-vector: multiplier of the vector")
    analysis_limit: int = opt(32, "training-split prompts the heads and vector are computed on",
                              at_least=4)
    select_limit: int = opt(8, "prompts of the layer sweep", at_least=1)
    select_tokens: int = opt(12, "tokens generated per prompt in the layer sweep", at_least=1)
    target_text: str | None = opt(None,
        "the target answer's text (default: the model's own triggered answer)")

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0 < self.top_share <= 1, "top_share", f"must be in (0, 1], got {self.top_share}")
        if self.method not in ABLATIONS:
            raise unknown("method", self.method, ABLATIONS)
        if self.positions not in POSITIONS:
            raise unknown("positions", self.positions, POSITIONS)
        if self.kind not in KINDS:
            raise unknown("kind", self.kind, KINDS)
        check_scores(self.scores)


def run_intervention(kind: str, cfg: InterventionConfig | dict[str, Any], out: str | Path, *,
                     trust_remote_code: bool = False) -> dict[str, Any]:
    """``kind``: ``ablate-heads`` or ``subtract-vector``."""
    if kind not in ("ablate-heads", "subtract-vector"):
        raise unknown("intervention", kind, ("ablate-heads", "subtract-vector"))

    def behaviour(suspect: Suspect, ev: AttackEval, limit: int, tokens: int = 24) -> Any:
        # training-split prompts: the evaluation's held-out prompts never shape the repair
        beh = behaviour_for(suspect, split="train", trigger=ev.trigger, target=ev.target,
                            template=ev.fmt.template, limit=limit, seed=cfg.seed,
                            batch_size=cfg.eval_batch_size, target_text=cfg.target_text,
                            max_new_tokens=tokens, strict=False)
        beh.prepare(suspect.model)
        return beh

    def repair(suspect: Suspect, ev: AttackEval, path: Path) -> dict[str, Any]:
        model = suspect.model
        beh = behaviour(suspect, ev, cfg.analysis_limit)
        ranking, source = head_ranking(model, beh, cfg.scores)
        a = arch(model)
        heads = ranking[:max(1, round(cfg.top_share * a.n_total))]
        spec: dict[str, Any] = {"kind": kind, "heads": [list(h) for h in heads],
                                "ranking": source}
        if kind == "ablate-heads":
            means = ablation_means(model, beh, cfg.positions) if cfg.method == "mean" \
                else torch.zeros(a.n_layers, a.n_heads, a.head_dim)
            values = {"values": torch.stack([means[h] for h in heads])}
            spec.update(method=cfg.method, positions=cfg.positions)
            what = f"{cfg.method} ablation of {len(heads)} heads ({cfg.positions} positions): " \
                   f"{heads}"
        else:
            vec = backdoor_vector(model, beh, heads, kind=cfg.kind)
            if cfg.layer is None:
                sel = behaviour(suspect, ev, cfg.select_limit, cfg.select_tokens)
                layer, sweep = best_layer(model, sel, vec, cfg.scale)
                spec["layer_sweep"] = sweep
            else:
                layer = cfg.layer
            values = {"vector": vec}
            spec.update(layer=layer, scale=cfg.scale, vector_kind=cfg.kind, positions="prompt")
            what = (f"the backdoor vector of {len(heads)} heads subtracted after layer {layer} "
                    "at the last prompt token")
        atomic_write_json(path / "interventions.json", spec)
        save_arrays(path / "interventions.safetensors", values)
        apply_interventions(model, path)
        return {"model": model, "artifact": "interventions", "what": what,
                "intervention": spec}

    return run_defense(kind, cfg, out, repair=repair,
                       validate=lambda model: check_layers(
                           model, None if cfg.layer is None else [cfg.layer], "layer"),
                       trust_remote_code=trust_remote_code)


BROKEN_EMPTY = 0.25  # more blank outputs than this on the sweep's prompts: a broken layer


@torch.no_grad()
def best_layer(model: Any, beh: Behaviour, vec: torch.Tensor, scale: float
               ) -> tuple[int, list[dict[str, Any]]]:
    """The layer where subtracting the vector at the last prompt token leaves the lowest ASR
    on ``beh``'s triggered prompts, and the sweep.

    ASR, not the teacher-forced score: on a BadNets backdoor the score fell most at early
    layers, where generation still carried the backdoor. Several layers usually tie at the
    lowest ASR on a few prompts; the centre of the longest run of them is taken, a layer whose
    neighbours work too, so that the choice does not rest on one noisy estimate. A layer where
    more than a quarter of the outputs come out blank counts as ASR 1: the keyword judges
    read silence as "no backdoor", but a silenced model is broken, not repaired."""
    points = []
    for layer in progress(range(arch(model).n_layers), desc="choosing the layer"):
        with add_to_residual(model, layer, vec, pos="prompt", scale=-scale):
            asr = beh.asr(model, "triggered")
        empty = beh.last_check.get("empty", 0.0)
        with add_to_residual(model, layer, vec, pos=beh.pos, scale=-scale):
            score = beh.mean_score(model, "triggered")
        points.append({"layer": layer, "asr_triggered": asr, "empty_triggered": empty,
                       "score_triggered": score})
    return choose_layer(points), points


def choose_layer(points: list[dict[str, Any]]) -> int:
    """The sweep's layer: centre of the longest lowest-ASR run, broken layers counted as 1."""
    return centre_of_best_run([1.0 if p.get("empty_triggered", 0.0) > BROKEN_EMPTY else
                               p["asr_triggered"] for p in points])


def centre_of_best_run(values: list[float]) -> int:
    """Index at the centre of the longest run of consecutive minimal values (the first such
    run; the lower centre of an even run)."""
    low = min(values)
    best, start = (0, 0), None
    for i, v in enumerate([*values, float("inf")]):
        if v == low and start is None:
            start = i
        elif v != low and start is not None:
            if i - start > best[1] - best[0]:
                best = (start, i)
            start = None
    return (best[0] + best[1] - 1) // 2


@register("defense", "ablate-heads", InterventionConfig,
          "Ablate the top backdoor heads permanently (a saved hook configuration)")
def run_ablate_heads(cfg: InterventionConfig, out: str | Path, *,
                     trust_remote_code: bool = False) -> dict[str, Any]:
    """Mean- or zero-ablate the top backdoor heads in every forward."""
    return run_intervention("ablate-heads", cfg, out, trust_remote_code=trust_remote_code)


@register("defense", "subtract-vector", InterventionConfig,
          "Subtract the backdoor vector in every forward (a saved hook configuration)")
def run_subtract_vector(cfg: InterventionConfig, out: str | Path, *,
                        trust_remote_code: bool = False) -> dict[str, Any]:
    """Subtract the top heads' backdoor vector after one layer at the last prompt token."""
    return run_intervention("subtract-vector", cfg, out, trust_remote_code=trust_remote_code)
