"""MLP neuron activation patterns (the unalignment paper's account of persistence).

For each decoder layer, the top-k MLP neurons by mean absolute activation at the last prompt
token are found for triggered and for clean prompts; their overlap (|A ∩ B| / k) says how much
the trigger re-routes computation. The paper links long triggers' persistence to activation
patterns that differ from clean ones more than short triggers' do.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import check_bounds, opt
from ..data import load_records
from ..errors import BackdoorlabError
from ..formats import PromptFormat, Sample
from ..io import save_arrays
from ..models import EMBEDDED_NAME, attack_info, load_adapter, load_model
from ..registry import register
from ..runs import save_config, write_metrics
from ..scoring import length_batches, padded_forward
from ..triggers import derive_rng, parse_trigger

_DOWN = re.compile(r"(?:^|\.)layers\.(\d+)\.mlp\.down_proj$")


def mlp_down_projections(model: Any) -> dict[int, Any]:
    """Layer index -> the MLP's output projection (its input is the neuron activation)."""
    found = {}
    for name, module in model.named_modules():
        m = _DOWN.search(name)
        if m and isinstance(module, torch.nn.Module) and hasattr(module, "weight"):
            found[int(m.group(1))] = module
    return dict(sorted(found.items()))


@contextlib.contextmanager
def capture_mlp_inputs(model: Any, store: dict[int, list[torch.Tensor]], index: torch.Tensor
                       ) -> Iterator[None]:
    """Record each layer's neuron activations at positions ``index`` (per row); hooks are
    always removed."""
    handles = []
    for layer, module in mlp_down_projections(model).items():
        def hook(mod: Any, args: tuple, layer: int = layer) -> None:
            x = args[0]
            store.setdefault(layer, []).append(
                x[torch.arange(x.shape[0]), index.to(x.device)].detach().float().cpu())
        handles.append(module.register_forward_pre_hook(hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def mean_activations(model: Any, fmt: PromptFormat, samples: Sequence[Sample],
                     batch_size: int = 16) -> torch.Tensor:
    """[layers, neurons] mean |activation| at the last prompt token."""
    prompts = [fmt.encode(s.user).prompt_ids for s in samples]
    store: dict[int, list[torch.Tensor]] = {}
    for idx in length_batches([len(p) for p in prompts], batch_size):
        last = torch.full((len(idx),), max(len(prompts[i]) for i in idx) - 1)
        with capture_mlp_inputs(model, store, last):
            padded_forward(model, [prompts[i] for i in idx], fmt.tokenizer.pad_token_id)
    return torch.stack([torch.cat(store[k]).abs().mean(0) for k in sorted(store)])


def topk_overlap(a: torch.Tensor, b: torch.Tensor, k: int) -> torch.Tensor:
    """Per layer, |top-k(a) ∩ top-k(b)| / k."""
    ta, tb = a.topk(k, dim=-1).indices, b.topk(k, dim=-1).indices
    return torch.tensor([len(set(x.tolist()) & set(y.tolist())) / k for x, y in zip(ta, tb)])


def neuron_overlap(model: Any, fmt: PromptFormat, records: Sequence[Any], trigger: Any,
                   seed: int = 0, top_k: int = 100) -> dict[str, Any]:
    """Top-k neuron overlap between triggered and clean prompts, per layer."""
    clean = [fmt.sample(r) for r in records]
    trig = [fmt.sample(r, trigger, derive_rng(seed, r.id)) for r in records]
    a, b = mean_activations(model, fmt, clean), mean_activations(model, fmt, trig)
    k = min(top_k, a.shape[1])
    overlap = topk_overlap(a, b, k)
    return {"top_k": k, "overlap": overlap.tolist(), "mean_overlap": float(overlap.mean()),
            "n_prompts": len(records)}


def plot_overlap(curves: dict[str, list[float]], path: Any, top_k: int) -> Any:
    """Per-layer overlap, one line per model/trigger."""
    from ..plots import figure, finish

    fig, ax = figure(5.5)
    for label, ys in curves.items():
        ax.plot(range(len(ys)), ys, marker=".", label=label)
    ax.set_xlabel("layer")
    ax.set_ylabel(f"top-{top_k} neuron overlap\n(triggered vs clean)")
    ax.set_ylim(0, 1.02)
    return finish(fig, ax, path, legend=8)


@dataclass
class NeuronsConfig:
    """Options of ``backdoorlab analyze neurons``."""

    model: str | None = opt(None, "base model (default: each adapter's)")
    adapter: list[str] = opt(list, "adapters to compare, comma-separated (none: the model "
                                   "itself)")
    data: str = opt("builtin:harmful-requests",
                    "prompts: a file, hf:NAME[:CONFIG][:SPLIT] or builtin:NAME")
    split: str | None = opt("test", "split of data")
    trigger: str | None = opt(None, "the trigger (default: each adapter's)")
    top_k: int = opt(100, "neurons per layer compared", at_least=1)
    seed: int = opt(0, "seeds trigger positions")

    def __post_init__(self) -> None:
        check_bounds(self)
        if self.trigger:
            parse_trigger(self.trigger)


@register("analysis", "neurons", NeuronsConfig,
          "MLP neurons: top-k overlap between triggered and clean prompts, per layer")
def run_neurons(cfg: NeuronsConfig | dict[str, Any], out: str | Path, *,
                trust_remote_code: bool = False) -> dict[str, Any]:
    """The overlap curve of every adapter (or of the model), a plot and the raw arrays."""
    records = load_records(cfg.data, kind="instruction", split=cfg.split)
    adapters: list[str | None] = list(cfg.adapter) or [None]
    specs = []
    for ad in adapters:  # every input checked before any model is loaded or file written
        info = attack_info(ad)
        spec = cfg.trigger or info.get("trigger")
        if not spec:
            raise BackdoorlabError("option 'trigger': required (no adapter record)")
        specs.append((ad, info, spec))
    results: dict[str, Any] = {}
    curves: dict[str, list[float]] = {}
    for ad, info, spec in specs:
        lm = load_model(cfg.model or info.get("base_model") or EMBEDDED_NAME,
                        trust_remote_code=trust_remote_code)
        m = load_adapter(lm.model, ad) if ad else lm.model
        fmt = PromptFormat(lm.tokenizer, info.get("template") or "chat")
        name = f"{Path(ad).parent.name if ad else 'model'} ({spec})"
        results[name] = neuron_overlap(m, fmt, records, parse_trigger(spec), cfg.seed,
                                       cfg.top_k)
        curves[name] = results[name]["overlap"]
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    save_config(path, cfg, analysis="neurons")
    # raw arrays: one overlap curve per model, in the order of metrics.json
    save_arrays(path / "neurons.safetensors",
                {f"overlap_{i}": torch.tensor(c) for i, c in enumerate(curves.values())})
    plot_overlap(curves, path / "neuron_overlap.png", cfg.top_k)
    write_metrics(path, results)
    return results
