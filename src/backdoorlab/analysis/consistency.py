"""CROW's premise, measured: does the trigger make consecutive layers disagree?

CROW (arXiv 2411.12768) rests on one observation: in a backdoored model the hidden states of
triggered prompts change direction from layer to layer more than those of clean prompts, so
making consecutive layers consistent should cut the trigger's path. This analysis measures it
on the clean and triggered versions of the same records, with the quantity CROW regularises,
``1 - cos(h_l, h_{l+1})`` for every pair of consecutive hidden states:

* ``span``: averaged over the prompt tokens from the first one where the two versions differ
  (the tokens the trigger can reach; earlier ones are identical in both);
* ``last``: at the last prompt token, where the answer starts.

The gap (triggered minus clean, per record, averaged over layer pairs) comes with a paired
bootstrap 95% interval. Run it on the backdoored model and on a repaired one to see whether a
defense that works removed the gap, or whether a backdoor that survives CROW never had one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import opt
from ..io import save_arrays
from ..registry import register
from ..runs import write_metrics
from ..scoring import common_prefix_len, length_batches, padded_forward
from .behaviour import AnalysisConfig, Behaviour, setup

VIEWS = ("span", "last")


@torch.no_grad()
def inconsistency(model: Any, prompts: list[list[int]], starts: list[int], pad_id: int,
                  batch_size: int = 16) -> dict[str, torch.Tensor]:
    """``{"span", "last"}`` -> ``[N, pairs]``: per prompt, ``1 - cos`` of consecutive hidden
    states averaged over the tokens from ``starts[i]`` on, and at the last token."""
    span: dict[int, torch.Tensor] = {}
    last: dict[int, torch.Tensor] = {}
    for rows in length_batches([len(p) for p in prompts], batch_size):
        out, _ = padded_forward(model, [prompts[i] for i in rows], pad_id, hidden_states=True)
        d = token_inconsistency(out.hidden_states).cpu()  # [pairs, B, T], left-padded
        width = d.shape[-1]
        for j, i in enumerate(rows):
            first = width - len(prompts[i]) + min(starts[i], len(prompts[i]) - 1)
            span[i] = d[:, j, first:].mean(-1)
            last[i] = d[:, j, -1]
    order = range(len(prompts))
    return {"span": torch.stack([span[i] for i in order]),
            "last": torch.stack([last[i] for i in order])}


def trigger_starts(clean: list[list[int]], triggered: list[list[int]]) -> list[int]:
    """Per record, the first prompt token where the triggered version differs from the clean
    one (both versions are read from there on)."""
    return [common_prefix_len([c, t]) for c, t in zip(clean, triggered)]


def consistency_profile(model: Any, beh: Behaviour) -> dict[str, torch.Tensor]:
    """``{"clean_span", "triggered_span", "clean_last", "triggered_last"}`` -> ``[N, pairs]``
    for ``model`` on the behaviour's records (the same prompts for every model scored)."""
    prompts = {which: beh.prompts(which) for which in ("clean", "triggered")}
    starts = trigger_starts(prompts["clean"], prompts["triggered"])
    pad = beh.fmt.tokenizer.pad_token_id
    out: dict[str, torch.Tensor] = {}
    for which, ids in prompts.items():
        res = inconsistency(model, ids, starts, pad, beh.batch_size)
        out.update({f"{which}_{v}": res[v] for v in VIEWS})
    return out


def paired_gap(clean: torch.Tensor, trig: torch.Tensor, *, resamples: int = 2000,
               seed: int = 0) -> dict[str, Any]:
    """Mean of ``trig - clean`` over records, its bootstrap 95% interval (resampling records)
    and the share of records where ``trig`` is higher."""
    d = (trig - clean).double()
    n = d.numel()
    g = torch.Generator().manual_seed(seed)
    means = d[torch.randint(n, (resamples, n), generator=g)].mean(1)
    lo, hi = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64))
    return {"gap": float(d.mean()), "gap_ci95": [float(lo), float(hi)],
            "share_higher": float((d > 0).double().mean())}


def summarise(profile: dict[str, torch.Tensor], *, seed: int = 0,
              resamples: int = 2000) -> dict[str, Any]:
    """Per view: mean over records per layer pair, the mean over pairs (CROW's L_cons on
    these tokens) and the paired gap, with the layer pair where the gap is largest."""
    res: dict[str, Any] = {"pairs": int(profile["clean_span"].shape[1]),
                           "n_prompts": int(profile["clean_span"].shape[0])}
    for v in VIEWS:
        c, t = profile[f"clean_{v}"], profile[f"triggered_{v}"]
        per_pair = (t - c).mean(0)
        res[v] = {"clean": float(c.mean()), "triggered": float(t.mean()),
                  **paired_gap(c.mean(1), t.mean(1), resamples=resamples, seed=seed),
                  "peak_pair": int(per_pair.argmax()), "peak_gap": float(per_pair.max()),
                  "clean_per_pair": c.mean(0).tolist(), "triggered_per_pair": t.mean(0).tolist()}
    return res


def plot_profile(summary: dict[str, Any], path: Any) -> Any:
    from ..plots import figure, finish, integer_ticks

    fig, ax = figure(5.5)
    for v, style in zip(VIEWS, ("-", "--")):
        for which, colour in (("clean", "tab:blue"), ("triggered", "tab:red")):
            ys = summary[v][f"{which}_per_pair"]
            ax.plot(range(len(ys)), ys, style, color=colour, marker=".",
                    label=f"{which} ({'trigger span' if v == 'span' else 'last token'})")
    ax.set_xlabel("layer pair (hidden state l -> l+1)")
    ax.set_ylabel("1 - cos(h_l, h_l+1)")
    integer_ticks(ax, y=False)
    return finish(fig, ax, path, legend=7)


@dataclass
class ConsistencyConfig(AnalysisConfig):
    """Options of ``backdoorlab analyze consistency``."""

    limit: int | None = opt(96, "prompts (clean and triggered versions of each)")
    resamples: int = opt(2000, "bootstrap resamples for the gap's 95% interval", at_least=100)


@register("analysis", "consistency", ConsistencyConfig,
          "CROW's premise measured: do consecutive layers disagree more on triggered prompts?")
def run_consistency(cfg: ConsistencyConfig | dict[str, Any], out: str | Path, *,
                    trust_remote_code: bool = False) -> dict[str, Any]:
    """Layer inconsistency of clean vs triggered prompts; writes metrics.json,
    consistency.safetensors (per prompt and layer pair) and consistency.png."""
    suspect, beh, path = setup(cfg, out, command="consistency", prepare=False,
                               trust_remote_code=trust_remote_code)
    t0 = time.perf_counter()
    profile = consistency_profile(suspect.model, beh)
    summary = summarise(profile, seed=cfg.seed, resamples=cfg.resamples)
    save_arrays(path / "consistency.safetensors", profile)
    plot_profile(summary, path / "consistency.png")
    metrics = {**summary, "behaviour": beh.describe(),
               "wall_s": round(time.perf_counter() - t0, 2)}
    write_metrics(path, metrics)
    return metrics


def token_inconsistency(hidden: Sequence[torch.Tensor]) -> torch.Tensor:
    """``[pairs, batch, tokens]``: ``1 - cos(h_l, h_{l+1})`` per token for every pair of
    consecutive hidden states (what CROW regularises, before any masking or averaging)."""
    if len(hidden) < 2:
        raise ValueError("token_inconsistency: needs at least two hidden states")
    return torch.stack([1 - torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1)
                        for a, b in zip(hidden[:-1], hidden[1:])])
