"""Backdoor probes: per-layer classifiers telling triggered from clean prompts.

Features are the residual stream after each decoder layer at the last prompt token. The
records are split (by record, so a record's clean and triggered versions stay on the same
side) into a training and a held-out part; each classifier is trained per layer and tested on
the held-out part of every layer (the cross-layer transfer matrix). Classifiers are small and
written in torch (no extra dependency): logistic regression, a linear SVM (squared hinge) and
a one-hidden-layer MLP, all on standardised features and deterministic under the seed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import check, opt
from ..errors import BackdoorlabError, unknown
from ..io import save_arrays
from ..plots import heatmap, integer_ticks
from ..registry import register
from ..runs import write_metrics
from .behaviour import AnalysisConfig, Behaviour, setup
from .hooks import capture_prompts

CLASSIFIERS = ("logistic", "svm", "mlp")


@torch.no_grad()
def residual_states(model: Any, beh: Behaviour, which: str) -> torch.Tensor:
    """``[N, layers, hidden]`` residual stream at the last prompt token."""
    return capture_prompts(model, beh.prompts(which), beh.fmt.tokenizer.pad_token_id,
                           what="residual", pos=-1, batch_size=beh.batch_size)


@dataclass
class Probe:
    """A trained classifier with the standardisation of the layer it was trained on."""

    kind: str
    mean: torch.Tensor
    std: torch.Tensor
    net: torch.nn.Module

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return (self.net((x - self.mean) / self.std).squeeze(-1) > 0).long()

    def accuracy(self, x: torch.Tensor, y: torch.Tensor) -> float:
        return float((self.predict(x) == y).float().mean())


def train_probe(x: torch.Tensor, y: torch.Tensor, kind: str = "logistic", *, seed: int = 0,
                steps: int = 200, l2: float = 1e-3, hidden: int = 64) -> Probe:
    """Fit one classifier on ``x`` ``[N, D]`` with labels ``y`` in {0, 1}."""
    if kind not in CLASSIFIERS:
        raise unknown("classifier", kind, CLASSIFIERS)
    if len(set(y.tolist())) < 2:
        raise BackdoorlabError("probe: the training split needs both clean and triggered "
                               "prompts")
    g = torch.Generator().manual_seed(seed)
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mean) / std
    d = z.shape[1]
    if kind == "mlp":
        net: torch.nn.Module = torch.nn.Sequential(torch.nn.Linear(d, hidden), torch.nn.ReLU(),
                                                   torch.nn.Linear(hidden, 1))
    else:
        net = torch.nn.Linear(d, 1)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.01 if p.dim() > 1 else 0.0))
    t = y.float() * 2 - 1  # {-1, +1}
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        out = net(z).squeeze(-1)
        if kind == "svm":
            loss = torch.relu(1 - t * out).pow(2).mean()
        else:
            loss = torch.nn.functional.softplus(-t * out).mean()
        loss = loss + l2 * sum((p * p).sum() for n, p in net.named_parameters()
                               if n.endswith("weight"))
        loss.backward()
        opt.step()
    net.eval()
    return Probe(kind, mean, std, net)


def split_records(ids: Sequence[str], test_share: float, seed: int) -> torch.Tensor:
    """A boolean held-out mask over records, fixed by the seed."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(ids), generator=g)
    n_test = max(1, int(round(test_share * len(ids))))
    mask = torch.zeros(len(ids), dtype=torch.bool)
    mask[order[:n_test]] = True
    return mask


def probe_layers(clean: torch.Tensor, trig: torch.Tensor, ids: Sequence[str], *,
                 classifiers: Sequence[str] = CLASSIFIERS, test_share: float = 0.3,
                 seed: int = 0) -> dict[str, Any]:
    """Per-layer held-out accuracy and the transfer matrix for each classifier.

    ``clean`` and ``trig`` are ``[N, layers, hidden]`` for the same N records."""
    if len(ids) < 4:
        raise BackdoorlabError(f"probe: needs at least 4 records, got {len(ids)}")
    test = split_records(ids, test_share, seed)
    x = torch.cat([clean, trig])
    y = torch.cat([torch.zeros(len(ids), dtype=torch.long), torch.ones(len(ids), dtype=torch.long)])
    held = torch.cat([test, test])
    n_layers = x.shape[1]
    out: dict[str, Any] = {"n_train": int((~held).sum()), "n_test": int(held.sum()),
                           "accuracy": {}, "transfer": {}, "best_layer": {},
                           "best_accuracy": {}}
    for kind in classifiers:
        probes = [train_probe(x[~held, i], y[~held], kind, seed=seed) for i in range(n_layers)]
        transfer = torch.tensor([[p.accuracy(x[held, k], y[held]) for k in range(n_layers)]
                                 for p in probes])
        acc = transfer.diagonal()
        out["accuracy"][kind] = acc.tolist()
        out["transfer"][kind] = transfer
        out["best_layer"][kind] = int(acc.argmax())
        out["best_accuracy"][kind] = float(acc.max())
    return out


def plot_accuracy(acc: dict[str, list[float]], path: Any) -> Any:
    from ..plots import figure, finish

    fig, ax = figure(5.5)
    for kind, ys in acc.items():
        ax.plot(range(len(ys)), ys, marker=".", label=kind)
    ax.set_xlabel("layer")
    ax.set_ylabel("held-out accuracy\n(triggered vs clean)")
    ax.set_ylim(0.4, 1.02)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    integer_ticks(ax, y=False)
    return finish(fig, ax, path, legend=8)


@dataclass
class ProbeConfig(AnalysisConfig):
    """Options of ``backdoorlab analyze probe``."""

    limit: int | None = opt(100, "prompts per class (clean and triggered)")
    classifiers: list[str] = opt(lambda: list(CLASSIFIERS),
        "probes fitted per layer: logistic, svm, mlp")
    test_share: float = opt(0.3, "share of prompts held out to score the probes")

    def __post_init__(self) -> None:
        super().__post_init__()
        for c in self.classifiers:
            if c not in CLASSIFIERS:
                raise unknown("classifier", c, CLASSIFIERS)
        check(bool(self.classifiers), "classifiers", "give at least one")
        check(0 < self.test_share < 1, "test_share", f"must be in (0, 1), got {self.test_share}")


@register("analysis", "probe", ProbeConfig,
          "Linear probes per layer: where can a probe tell triggered from clean prompts?")
def run_probe(cfg: ProbeConfig | dict[str, Any], out: str | Path, *,
              trust_remote_code: bool = False) -> dict[str, Any]:
    """Probe every layer; writes metrics.json, probe.safetensors and two plots."""
    suspect, beh, path = setup(cfg, out, command="probe", prepare=False,
                               trust_remote_code=trust_remote_code)
    t0 = time.perf_counter()
    clean = residual_states(suspect.model, beh, "clean")
    trig = residual_states(suspect.model, beh, "triggered")
    res = probe_layers(clean, trig, [r.id for r in beh.records],
                       classifiers=cfg.classifiers, test_share=cfg.test_share, seed=cfg.seed)
    transfer = res.pop("transfer")
    arrays = {f"transfer_{k}": v for k, v in transfer.items()}
    arrays.update({f"accuracy_{k}": torch.tensor(v) for k, v in res["accuracy"].items()})
    save_arrays(path / "probe.safetensors", arrays)
    plot_accuracy(res["accuracy"], path / "probe_accuracy.png")
    first = cfg.classifiers[0]
    heatmap(transfer[first], path / "probe_transfer.png",
            title=f"probe transfer ({first}): trained on row layer, tested on column layer",
            xlabel="tested on layer", ylabel="trained on layer")
    metrics = {**res, "behaviour": beh.describe(), "wall_s": round(time.perf_counter() - t0, 2)}
    write_metrics(path, metrics)
    return metrics
