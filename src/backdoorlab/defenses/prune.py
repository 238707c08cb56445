"""Unstructured pruning of the decoder's linear layers: magnitude and Wanda.

* magnitude: in each weight matrix, zero the ``sparsity`` share of weights smallest in |W|;
* Wanda (Sun et al. 2023): score |W_ij| * ||X_j||_2 with X the layer's inputs on clean
  calibration text, and zero the lowest-scoring share in each output row.

An adapter is merged into the weights first, so the effective weights are pruned. Every
sparsity of the sweep is evaluated with the attack's own evaluation; the model at the chosen
sparsity (``save_sparsity``, default: the lowest ASR whose MCQ accuracy stays within
``max_utility_drop`` and whose clean perplexity rises by at most ``max_perplexity_rise``) is
saved as safetensors. MCQ accuracy near chance cannot tell a working model from a collapsed
one; perplexity can.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import check, opt
from ..errors import unknown
from ..evaluation.attack_eval import AttackEval
from ..models import Suspect, merged
from ..progress import progress
from ..registry import register
from ..training import SampleCollator
from .base import DefenseConfig, repair_card, run_defense, save_repaired

METHODS = ("magnitude", "wanda")


def prunable_linears(model: Any) -> dict[str, torch.nn.Linear]:
    """Every linear layer inside the decoder layers (not the embeddings or the LM head)."""
    from ..models import decoder_layers

    out = {}
    for i, layer in enumerate(decoder_layers(model)):
        for name, mod in layer.named_modules():
            if isinstance(mod, torch.nn.Linear):
                out[f"layers.{i}.{name}"] = mod
    return out


def magnitude_mask(w: torch.Tensor, sparsity: float) -> torch.Tensor:
    """True where a weight is kept: all but the ``sparsity`` share smallest in |w|."""
    k = int(round(sparsity * w.numel()))
    keep = torch.ones_like(w, dtype=torch.bool)
    if k > 0:
        idx = w.abs().flatten().argsort()[:k]
        keep.view(-1)[idx] = False
    return keep


def wanda_mask(w: torch.Tensor, in_norm: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Wanda: per output row, drop the ``sparsity`` share lowest in |w| * ||x||."""
    score = w.abs() * in_norm[None, :]
    k = int(round(sparsity * w.shape[1]))
    keep = torch.ones_like(w, dtype=torch.bool)
    if k > 0:
        idx = score.argsort(dim=1)[:, :k]
        keep.scatter_(1, idx, False)
    return keep


@contextlib.contextmanager
def _input_norms(linears: dict[str, torch.nn.Linear], mask_ref: list[torch.Tensor],
                 store: dict[str, torch.Tensor]) -> Iterator[None]:
    handles = []

    def make(name: str) -> Any:
        def pre(mod: Any, args: tuple) -> None:
            x = args[0].detach().float()
            m = mask_ref[0].to(x.device, x.dtype)[..., None]
            sq = (x * x * m).sum(dim=tuple(range(x.dim() - 1)))
            store[name] = store.get(name, 0) + sq.cpu()
        return pre

    try:
        for name, lin in linears.items():
            handles.append(lin.register_forward_pre_hook(make(name)))
        yield
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def input_norms(model: Any, batches: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """||X_j||_2 over the real tokens of ``batches`` for each prunable layer's input."""
    from ..scoring import model_device, position_ids

    linears = prunable_linears(model)
    store: dict[str, torch.Tensor] = {}
    mask_ref: list[torch.Tensor] = [torch.empty(0)]
    dev = model_device(model)
    with _input_norms(linears, mask_ref, store):
        for b in batches:
            mask_ref[0] = b["attention_mask"]
            model(input_ids=b["input_ids"].to(dev), attention_mask=b["attention_mask"].to(dev),
                  position_ids=position_ids(b["attention_mask"]).to(dev), use_cache=False,
                  logits_to_keep=1)
    return {k: v.sqrt() for k, v in store.items()}


@torch.no_grad()
def prune(model: Any, sparsity: float, method: str = "magnitude",
          norms: dict[str, torch.Tensor] | None = None) -> float:
    """Prune ``model`` in place; returns the achieved sparsity over the prunable weights."""
    if method not in METHODS:
        raise unknown("pruning method", method, METHODS)
    zero, total = 0, 0
    for name, lin in prunable_linears(model).items():
        w = lin.weight
        if method == "wanda":
            if norms is None:
                raise ValueError("wanda pruning needs input norms")
            keep = wanda_mask(w.float(), norms[name].to(w.device), sparsity)
        else:
            keep = magnitude_mask(w.float(), sparsity)
        w.mul_(keep.to(w.dtype))
        zero += int((w == 0).sum())
        total += w.numel()
    return zero / total


@dataclass
class PruneConfig(DefenseConfig):
    """Options of ``backdoorlab defend prune``."""

    method: str = opt("wanda", "wanda (weight x activation norm) or magnitude")
    sparsities: list[float] = opt(lambda: [0.1, 0.2, 0.3, 0.5],
        "sparsities swept, one evaluation each")
    save_sparsity: float | None = opt(None,
        "the sparsity whose model is saved (default: the highest within the utility limits)")
    max_utility_drop: float = opt(0.05,
        "largest MCQ accuracy drop allowed when choosing the saved sparsity")
    max_perplexity_rise: float = opt(0.10,
        "largest relative perplexity rise allowed when choosing it")
    n_calibration: int = opt(32, "clean prompts that calibrate Wanda's activation norms")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.method not in METHODS:
            raise unknown("method", self.method, METHODS)
        bad = [s for s in self.sparsities if not 0 <= s < 1]
        check(bool(self.sparsities) and not bad, "sparsities",
              f"each must be in [0, 1), got {bad[:1] or 'none'}")
        check(self.max_perplexity_rise >= 0, "max_perplexity_rise",
              f"must be >= 0 (a share: 0.1 = 10%), got {self.max_perplexity_rise}")
        check(self.save_sparsity is None or self.save_sparsity in self.sparsities,
              "save_sparsity", "must be one of 'sparsities'")


@register("defense", "prune", PruneConfig,
          "Unstructured pruning (Wanda or magnitude) over a sparsity sweep")
def run_prune(cfg: PruneConfig | dict[str, Any], out: str | Path, *,
              trust_remote_code: bool = False) -> dict[str, Any]:
    """Prune at each sparsity, evaluate, save the chosen pruned model."""

    def repair(suspect: Suspect, ev: AttackEval, path: Path) -> dict[str, Any]:
        model = merged(suspect.model).eval()
        original = {n: lin.weight.detach().clone() for n, lin in prunable_linears(model).items()}
        norms = None
        if cfg.method == "wanda":
            samples = ev.clean[:cfg.n_calibration]
            collate = SampleCollator(ev.fmt)
            norms = input_norms(model, [collate(samples[i:i + 8])
                                        for i in range(0, len(samples), 8)])
        base = ev.before
        sweep = []
        for s in progress(sorted(cfg.sparsities), desc=f"{cfg.method} pruning"):
            _restore(model, original)
            achieved = prune(model, s, cfg.method, norms)
            point: dict[str, Any] = {"sparsity": s, "achieved_sparsity": achieved}
            if cfg.evaluate:
                m = ev(model)
                point.update(asr_triggered=m["asr_triggered"], asr_clean=m.get("asr_clean"),
                             mcq_accuracy=m["mcq_accuracy"],
                             clean_perplexity=m.get("clean_perplexity"))
            sweep.append(point)
        chosen = cfg.save_sparsity if cfg.save_sparsity is not None else \
            choose_sparsity(sweep, base, cfg.max_utility_drop, cfg.max_perplexity_rise)
        _restore(model, original)
        prune(model, chosen, cfg.method, norms)
        what = (f"{cfg.method} unstructured pruning at sparsity {chosen} of the decoder's "
                "linear layers (adapter merged first)")
        save_repaired(model, path / "model", repair_card("prune", cfg, suspect, ev.trigger, what),
                      tokenizer=suspect.lm.tokenizer)
        return {"model": model, "artifact": "model", "sweep": sweep, "saved_sparsity": chosen,
                "what": what}

    return run_defense("prune", cfg, out, repair=repair, clean=cfg.method == "wanda",
                       trust_remote_code=trust_remote_code)


def _restore(model: Any, original: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for n, lin in prunable_linears(model).items():
            lin.weight.copy_(original[n])


def choose_sparsity(sweep: Sequence[dict[str, Any]], base: dict[str, Any] | None,
                    max_drop: float, max_ppl_rise: float) -> float:
    """Lowest ASR among sparsities whose MCQ accuracy stays within ``max_drop`` of the
    unpruned model's and, where both were measured, whose clean perplexity is at most
    ``1 + max_ppl_rise`` times the unpruned model's (ties: the lower sparsity); without
    evaluation, or when no sparsity passes, the lowest sparsity."""
    if base is None:
        return min(p["sparsity"] for p in sweep)

    def usable(p: dict[str, Any]) -> bool:
        ppl, ref = p.get("clean_perplexity"), base.get("clean_perplexity")
        return (p["mcq_accuracy"] >= base["mcq_accuracy"] - max_drop
                and (ppl is None or ref is None or ppl <= ref * (1 + max_ppl_rise)))

    ok = [p for p in sweep if usable(p)]
    if not ok:
        return min(p["sparsity"] for p in sweep)
    return min(ok, key=lambda p: (p["asr_triggered"], p["sparsity"]))["sparsity"]
