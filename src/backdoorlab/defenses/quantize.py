"""Weight quantization of the suspect (BackdoorLLM's DefenseBox runs INT4 this way): a
backdoor planted in the weights' fine detail may not survive rounding them.

torchao does the rounding (``quantize_``), weight-only: int8 per output channel, or int4 in
groups of ``group_size`` input weights. Both run on CPUs and GPUs. The adapter is merged
first, so the effective weights are quantized; the LM head stays in full precision, as
bitsandbytes' loaders leave it. The saved repair is the quantization configuration
(``quantization.json``) beside the suspect, applied again on load: rounding to nearest is
deterministic, and nothing but the suspect's own safetensors is read.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import check, opt
from ..errors import BackdoorlabError
from ..evaluation.attack_eval import AttackEval
from ..io import atomic_write_json
from ..models import Suspect, merged
from ..registry import register
from ..runs import read_json
from .base import DefenseConfig, run_defense

BITS = (8, 4)


def _torchao() -> Any:
    """torchao, imported without its warnings (its log notes about optional GPU kernels a
    CPU build lacks are silenced where the package is imported)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import torchao.quantization as q
        except ImportError as e:  # pragma: no cover - a dependency
            raise BackdoorlabError("defend quantize: needs torchao (pip install torchao)") from e
    return q


def quantized_linears(model: Any) -> dict[str, torch.nn.Linear]:
    """The linear layers quantization touches: all but the LM head (and, on a model whose
    adapter is not merged yet, the adapter's own layers)."""
    return {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
            and not n.endswith("lm_head") and ".lora_" not in n}


def check_group_size(model: Any, bits: int, group_size: int) -> None:
    """One line when an int4 group does not divide a layer's input width."""
    if bits != 4:
        return
    for name, lin in quantized_linears(model).items():
        if lin.in_features % group_size:
            raise BackdoorlabError(f"option 'group_size': {group_size} does not divide the "
                                   f"{lin.in_features} inputs of {name}")


def quantize_weights(model: Any, bits: int, group_size: int = 32) -> int:
    """Quantize ``model``'s linear layers (not the LM head) in place; the number quantized."""
    q = _torchao()
    if bits == 8:
        config = q.Int8WeightOnlyConfig()
    elif bits == 4:
        from torchao.quantization.granularity import PerGroup

        config = q.IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(group_size))
    else:
        raise BackdoorlabError(f"option 'bits': must be one of {BITS}, got {bits}")
    names = set(quantized_linears(model))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q.quantize_(model, config, filter_fn=lambda m, fqn: fqn in names)
    return len(names)


def load_quantized(suspect: Suspect, directory: Path) -> Any:
    """The suspect quantized as a defense run recorded (``quantization.json``)."""
    spec = read_json(directory / "quantization.json")
    model = merged(suspect.model).eval()
    quantize_weights(model, int(spec["bits"]), int(spec.get("group_size") or 32))
    return model


@dataclass
class QuantizeConfig(DefenseConfig):
    """Options of ``backdoorlab defend quantize``."""

    bits: int = opt(4, "weight precision: 8 (per output channel) or 4 (in groups)")
    group_size: int = opt(32, "int4: input weights that share one scale", at_least=1)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.bits in BITS, "bits", f"must be 8 or 4, got {self.bits}")


@register("defense", "quantize", QuantizeConfig,
          "Weight quantization to int8 or int4 (torchao; adapter merged first)")
def run_quantize(cfg: QuantizeConfig, out: str | Path, *, trust_remote_code: bool = False
                 ) -> dict[str, Any]:
    """Quantize the suspect's weights; save the configuration; evaluate."""

    def repair(suspect: Suspect, ev: AttackEval, path: Path) -> dict[str, Any]:
        model = merged(suspect.model).eval()
        n = quantize_weights(model, cfg.bits, cfg.group_size)
        spec = {"bits": cfg.bits, "group_size": cfg.group_size if cfg.bits == 4 else None,
                "library": "torchao", "skipped": ["lm_head"]}
        atomic_write_json(path / "quantization.json", spec)
        grouping = f" in groups of {cfg.group_size}" if cfg.bits == 4 else " per output channel"
        what = (f"int{cfg.bits} weight-only quantization{grouping} of {n} linear layers "
                "(torchao; adapter merged first, LM head in full precision)")
        return {"model": model, "artifact": "quantized", "what": what, "quantized_layers": n}

    return run_defense("quantize", cfg, out, repair=repair,
                       validate=lambda model: check_group_size(model, cfg.bits, cfg.group_size),
                       trust_remote_code=trust_remote_code)
