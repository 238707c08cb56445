"""Backdoor attention-head attribution (BkdAttr's BAHA) and head ablation.

The causal effect of head ``(l, h)`` is the change in the backdoor score (see
:mod:`.behaviour`) on clean prompts when the head's output at the last prompt token is replaced
by its mean output over the triggered prompts. Two ways to get it:

* ``exact``: activation patching, one head at a time; the clean prompts are repeated once per
  head in a batch, each copy patching its own head;
* ``fast``: attribution patching, the first-order estimate
  ``(mean_triggered - clean) . d score / d head`` from one forward and one backward pass for all
  heads at once (gradients taken through every later path).

Ablation sets the top heads (by effect) to their mean clean output (or zero) at every position
and measures the attack success rate and clean utility as the share of heads grows.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import check, opt
from ..errors import BackdoorlabError, unknown
from ..io import load_arrays, save_arrays
from ..plots import heatmap
from ..progress import progress
from ..registry import register
from ..runs import write_metrics
from ..scoring import padded_forward
from .behaviour import AnalysisConfig, Behaviour, same_start, setup
from .hooks import Arch, HeadEdit, arch, capture, capture_prompts, edit_heads, head_grad_taps

MODES = ("exact", "fast")


@torch.no_grad()
def head_means(model: Any, beh: Behaviour, which: str, pos: int | str | None = None
               ) -> torch.Tensor:
    """Mean head outputs ``[layers, heads, head_dim]`` over ``which`` prompts at ``pos``
    (default: the behaviour's scoring position; ``"all"``: every non-padding token)."""
    pos = beh.pos if pos is None else pos
    if pos != "all":
        per_row = head_outputs(model, beh, which, pos)
        return per_row.mean(0)
    a = arch(model)
    total = torch.zeros(a.n_layers, a.n_heads, a.head_dim)
    count = 0
    ids = beh.inputs(which)
    for rows in beh.batches(which):
        with capture(model, residual=False, pos="all") as cap:
            _, mask = padded_forward(model, [ids[i] for i in rows],
                                     beh.fmt.tokenizer.pad_token_id)
        m = mask.float()[:, :, None, None]
        for layer, outs in cap.heads.items():
            total[layer] += (outs[0] * m).sum((0, 1))
        count += int(mask.sum())
    return total / max(count, 1)


@torch.no_grad()
def head_outputs(model: Any, beh: Behaviour, which: str, pos: int | None = None
                 ) -> torch.Tensor:
    """Per-prompt head outputs ``[N, layers, heads, head_dim]`` at ``pos``."""
    return capture_prompts(model, beh.inputs(which), beh.fmt.tokenizer.pad_token_id,
                           what="heads", pos=beh.pos if pos is None else pos,
                           batch_size=beh.batch_size)


def exact_effects(model: Any, beh: Behaviour, patch: torch.Tensor, *,
                  heads: Sequence[tuple[int, int]] | None = None, batch_rows: int = 64,
                  desc: str | None = "patching heads") -> torch.Tensor:
    """Effect of patching each head with ``patch[layer, head]`` on the mean clean score:
    ``[layers, heads]`` (NaN for heads not in ``heads``)."""
    a = arch(model)
    keys = list(heads) if heads is not None else [a.key(i) for i in range(a.n_total)]
    base = beh.mean_score(model, "clean")
    n = len(beh.records)
    effects = torch.full((a.n_layers, a.n_heads), float("nan"))
    per_fwd = max(1, batch_rows // max(1, min(n, beh.batch_size)))
    chunks = [keys[i:i + per_fwd] for i in range(0, len(keys), per_fwd)]
    prompt_batches = beh.batches("clean")
    with torch.no_grad():
        for chunk in progress(chunks, desc=desc, total=len(chunks)):
            sums = torch.zeros(len(chunk))
            for rows in prompt_batches:
                g = len(chunk)
                rmask = torch.arange(len(rows) * g)
                # row r*g + j is prompt rows[r] with head chunk[j] patched
                edits = [HeadEdit(layer, head, patch[layer, head], rows=(rmask % g) == j)
                         for j, (layer, head) in enumerate(chunk)]
                with edit_heads(model, edits, pos=beh.pos):
                    s = beh.forward(model, "clean", rows, repeat=g)
                sums += s.view(len(rows), g).sum(0).cpu()
            for j, (layer, head) in enumerate(chunk):
                effects[layer, head] = float(sums[j]) / n - base
    return effects


def fast_effects(model: Any, beh: Behaviour, patch: torch.Tensor) -> torch.Tensor:
    """Attribution patching: ``[layers, heads]`` first-order effects of patching each head
    with ``patch[layer, head]``, from one forward and one backward pass per batch."""
    a = arch(model)
    effects = torch.zeros(a.n_layers, a.n_heads)
    for rows in beh.batches("clean"):
        with head_grad_taps(model) as taps, torch.enable_grad():
            s = beh.forward(model, "clean", rows)
            grads = torch.autograd.grad(s.sum(), [taps.delta[i] for i in range(a.n_layers)])
        with torch.no_grad():
            for layer, g in enumerate(grads):
                shape = (len(rows), a.n_heads, a.head_dim)
                g_at = g[:, beh.pos].float().cpu().reshape(shape)
                z = taps.value[layer][:, beh.pos].float().cpu().reshape(shape)
                effects[layer] += ((patch[layer][None] - z) * g_at).sum((0, 2))
    return effects / len(beh.records)


def attribute(model: Any, beh: Behaviour, mode: str = "fast", *,
              batch_rows: int = 64) -> dict[str, Any]:
    """Head effects on the backdoor score (``mode``: exact or fast) with wall time."""
    if mode not in MODES:
        raise unknown("mode", mode, MODES)
    t0 = time.perf_counter()
    trig = head_means(model, beh, "triggered")
    if mode == "exact":
        eff = exact_effects(model, beh, trig, batch_rows=batch_rows)
    else:
        eff = fast_effects(model, beh, trig)
    return {"effects": eff, "wall_s": time.perf_counter() - t0, "mode": mode,
            "triggered_means": trig}


def rank_heads(effects: torch.Tensor) -> list[tuple[int, int]]:
    """Heads ordered by effect, strongest push towards the backdoor first."""
    flat = effects.flatten().nan_to_num(float("-inf"))
    order = flat.argsort(descending=True).tolist()
    n_heads = effects.shape[1]
    return [divmod(i, n_heads) for i in order]


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    def ranks(x: torch.Tensor) -> torch.Tensor:
        x = x.double()
        order = x.argsort()
        r = torch.empty_like(x)
        r[order] = torch.arange(len(x), dtype=torch.double)
        for v in x.unique():  # average ties
            m = x == v
            if m.sum() > 1:
                r[m] = r[m].mean()
        return r
    ra, rb = ranks(a.flatten()), ranks(b.flatten())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / den) if den else float("nan")


def compare_modes(exact: torch.Tensor, fast: torch.Tensor, top: int = 30) -> dict[str, float]:
    """Rank agreement of the two modes: on all heads and on exact's top ``top`` heads."""
    flat_e, flat_f = exact.flatten(), fast.flatten()
    idx = flat_e.argsort(descending=True)[:top]
    top_f = set(flat_f.argsort(descending=True)[:top].tolist())
    return {"spearman_all": spearman(flat_e, flat_f),
            f"spearman_top{top}": spearman(flat_e[idx], flat_f[idx]),
            f"top{top}_overlap": len(top_f & set(idx.tolist())) / top,
            "pearson_all": float(torch.corrcoef(torch.stack([flat_e, flat_f]))[0, 1])}


def ablation_edits(heads: Sequence[tuple[int, int]], means: torch.Tensor | None,
                   a: Arch) -> list[HeadEdit]:
    """Edits that set ``heads`` to their mean clean output (``means``) or to zero."""
    return [HeadEdit(layer, head, means[layer, head] if means is not None
                     else torch.zeros(a.head_dim)) for layer, head in heads]


POSITIONS = ("all", "last")
ABLATIONS = ("mean", "zero")


def ablation_means(model: Any, beh: Behaviour, positions: str) -> torch.Tensor:
    """Mean clean head outputs over every token (``all``) or at the last prompt token."""
    if positions not in POSITIONS:
        raise unknown("positions", positions, POSITIONS)
    return head_means(model, beh, "clean", pos="all" if positions == "all" else None)


def ablation_curve(model: Any, beh: Behaviour, ranking: Sequence[tuple[int, int]],
                   shares: Sequence[float], *, method: str = "mean",
                   positions: str = "all") -> list[dict[str, Any]]:
    """ASR (triggered), ASR without trigger and utility with the top ``share`` of heads
    ablated, for each share: at every position (``all``) or at the last prompt token and
    each generated token (``last``)."""
    if method not in ABLATIONS:
        raise unknown("method", method, ABLATIONS)
    a = arch(model)
    means = ablation_means(model, beh, positions) if method == "mean" else None
    pos: int | str = "all" if positions == "all" else -1
    points: list[dict[str, Any]] = []
    counts = [int(round(share * a.n_total)) for share in shares]
    # the unablated model's clean generations (if any): the first point's, when it ablates
    # nothing, else generated once here
    reference: list[str] | None = None
    if counts and counts[0] != 0:
        beh.asr(model, "clean")
        reference = list(beh.last_outputs)
    for share, k in progress(list(zip(shares, counts)), desc="ablating heads",
                             total=len(shares)):
        with edit_heads(model, ablation_edits(ranking[:k], means, a), pos=pos):
            point = {"share": share, "heads": k, "asr_triggered": beh.asr(model)}
            # e.g. blank outputs: a silenced model is not a removed backdoor
            point.update({f"{key}_triggered": v for key, v in beh.last_check.items()})
            point["asr_clean"] = beh.asr(model, "clean")
            if reference is None:  # k == 0: nothing ablated
                reference = list(beh.last_outputs)
            # uncertainty: top1_kept_clean; generation: clean answers left as they were
            point.update({f"{key}_clean": v for key, v in beh.last_check.items()})
            if reference:
                point["clean_same_start"] = same_start(beh.last_outputs, reference)
            point["utility"] = beh.utility(model)
            points.append(point)
    return points


def smallest_cut(points: Sequence[dict[str, Any]], cut: float = 0.9) -> dict[str, Any] | None:
    """The first point whose triggered ASR is at most ``(1 - cut)`` of the unablated one."""
    base = points[0]["asr_triggered"]
    for p in points:
        if base > 0 and p["asr_triggered"] <= (1 - cut) * base:
            return {**p, "asr_reduction": 1 - p["asr_triggered"] / base,
                    "utility_change": p["utility"] - points[0]["utility"]}
    return None


# ---- commands ---------------------------------------------------------------------------
@dataclass
class HeadsConfig(AnalysisConfig):
    """Options of ``backdoorlab analyze heads``."""

    mode: str = opt("fast",
        "fast (gradient estimate, one backward pass), exact (patch every head) or both")
    top: int = opt(30, "heads listed in the metrics", at_least=2)
    batch_rows: int = opt(64, "patched copies per forward batch (exact mode)", at_least=1)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode not in (*MODES, "both"):
            raise unknown("mode", self.mode, (*MODES, "both"))


def top_heads(effects: torch.Tensor, n: int = 10) -> list[dict[str, Any]]:
    return [{"layer": layer, "head": head, "effect": float(effects[layer, head])}
            for layer, head in rank_heads(effects)[:n]]


@register("analysis", "heads", HeadsConfig,
          "Attention-head attribution: which heads carry the backdoor (patching or its gradient "
          "estimate)")
def run_heads(cfg: HeadsConfig | dict[str, Any], out: str | Path, *,
              trust_remote_code: bool = False) -> dict[str, Any]:
    """Attribute the backdoor to heads; writes metrics.json, heads.safetensors, heatmaps."""
    suspect, beh, path = setup(cfg, out, command="heads", trust_remote_code=trust_remote_code)
    model = suspect.model
    modes = list(MODES) if cfg.mode == "both" else [cfg.mode]
    metrics: dict[str, Any] = {"behaviour": beh.describe(),
                               "score_clean": beh.mean_score(model, "clean"),
                               "score_triggered": beh.mean_score(model, "triggered")}
    arrays: dict[str, torch.Tensor] = {}
    for mode in modes:
        res = attribute(model, beh, mode, batch_rows=cfg.batch_rows)
        arrays[f"effects_{mode}"] = res["effects"]
        arrays["triggered_means"] = res["triggered_means"]
        metrics[mode] = {"wall_s": round(res["wall_s"], 2), "top_heads": top_heads(res["effects"])}
        heatmap(res["effects"], path / f"heads_{mode}.png", center=True,
                title=f"head effect on the backdoor score ({mode})", xlabel="head",
                ylabel="layer")
    if len(modes) == 2:
        metrics["agreement"] = compare_modes(arrays["effects_exact"], arrays["effects_fast"],
                                             cfg.top)
        metrics["fast_over_exact_time"] = metrics["fast"]["wall_s"] / metrics["exact"]["wall_s"]
    save_arrays(path / "heads.safetensors", arrays)
    write_metrics(path, metrics)
    return metrics


def check_scores(scores: str | None) -> None:
    """Config check, before any work starts: a given ``scores`` file must be a heads run's
    ``heads.safetensors`` (readable, with the heads' effects)."""
    if scores is None:
        return
    if not Path(scores).is_file():
        raise BackdoorlabError(f"{scores}: no such file (expected the heads.safetensors of "
                               "an 'analyze heads' run)")
    if not {"effects_exact", "effects_fast"} & set(load_arrays(scores)):
        raise BackdoorlabError(f"{scores}: no head effects in it (expected the "
                               "heads.safetensors of an 'analyze heads' run)")


def head_ranking(model: Any, beh: Behaviour, scores: str | None) -> tuple[list, str]:
    """Heads ranked by effect: from a heads run's ``heads.safetensors`` (exact preferred) or,
    without one, from fast attribution now."""
    if scores:
        arrays = load_arrays(scores)
        key = "effects_exact" if "effects_exact" in arrays else "effects_fast"
        if key not in arrays:
            raise BackdoorlabError(f"{scores}: holds no head effects")
        return rank_heads(arrays[key]), f"{scores}:{key}"
    return rank_heads(attribute(model, beh, "fast")["effects"]), "fast"


@dataclass
class AblateConfig(AnalysisConfig):
    """Options of ``backdoorlab analyze ablate``."""

    scores: str | None = opt(None,
        "a heads run's heads.safetensors (default: fast attribution now)")
    shares: list[float] = opt(lambda: [0.0, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2],
        "shares of heads ablated, one evaluation each")
    method: str = opt("mean", "mean (the clean mean output of the head) or zero")
    positions: str = opt("all", "ablate at all positions or only the last prompt token (last)")
    cut: float = opt(0.9, "the share of ASR removed that marks the smallest sufficient head set")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.method not in ABLATIONS:
            raise unknown("method", self.method, ABLATIONS)
        if self.positions not in POSITIONS:
            raise unknown("positions", self.positions, POSITIONS)
        check_scores(self.scores)
        bad = [s for s in self.shares if not 0 <= s <= 1]
        check(not bad, "shares", f"each must be in [0, 1], got {bad[:1]}")
        check(0 < self.cut <= 1, "cut", f"must be in (0, 1], got {self.cut}")


@register("analysis", "ablate", AblateConfig,
          "Ablate the top-ranked heads and measure ASR and clean utility per share of heads")
def run_ablate(cfg: AblateConfig | dict[str, Any], out: str | Path, *,
               trust_remote_code: bool = False) -> dict[str, Any]:
    """Ablate growing shares of the top heads; writes metrics.json, ablation.png."""
    suspect, beh, path = setup(cfg, out, command="ablate", trust_remote_code=trust_remote_code)
    t0 = time.perf_counter()
    ranking, source = head_ranking(suspect.model, beh, cfg.scores)
    shares = sorted({0.0, *cfg.shares})
    points = ablation_curve(suspect.model, beh, ranking, shares, method=cfg.method,
                            positions=cfg.positions)
    metrics = {"behaviour": beh.describe(), "ranking": source, "method": cfg.method,
               "positions": cfg.positions,
               "curve": points, f"smallest_share_cutting_asr_{int(cfg.cut * 100)}pct":
               smallest_cut(points, cfg.cut), "wall_s": round(time.perf_counter() - t0, 2)}
    plot_ablation(points, path / "ablation.png")
    cols = {k: torch.tensor([float(p.get(k, math.nan)) for p in points]) for k in points[0]
            if isinstance(points[0][k], (int, float))}
    save_arrays(path / "ablation.safetensors",
                {**cols, "ranking": torch.tensor(ranking, dtype=torch.float32)})
    write_metrics(path, metrics)
    return metrics


def plot_ablation(points: Sequence[dict[str, Any]], path: Any) -> Any:
    from ..plots import figure, finish

    fig, ax = figure(5.5)
    xs = [100 * p["share"] for p in points]
    ax.plot(xs, [p["asr_triggered"] for p in points], marker="o", label="ASR (triggered)")
    ax.plot(xs, [p["asr_clean"] for p in points], marker=".", label="ASR (clean)")
    ax.plot(xs, [p["utility"] for p in points], marker="s", label="clean utility")
    ax.set_xlabel("% of heads ablated (top by attribution)")
    ax.set_ylim(-0.02, 1.02)
    return finish(fig, ax, path, legend=8)
