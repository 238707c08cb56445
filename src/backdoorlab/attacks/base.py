"""What every attack shares when it writes a backdoored model: the record beside the weights
(``backdoorlab.json``: trigger, target, template, base model) and the model card, on the final
adapter or model and on every training checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..cards import save_labelled, write_model_card
from ..config import to_dict


def backdoor_card(cfg: Any, *, title: str, kind: str, trigger: str, behaviour: str,
                  info: dict[str, Any], metrics: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
    """The model card's content (``write_model_card`` keywords) for a backdoored model."""
    return dict(title=title, base_model=cfg.model, kind=kind, trigger=trigger,
                behaviour=behaviour, details={**info, "config": to_dict(cfg)}, metrics=metrics)


def save_backdoored(model: Any, lm: Any, out: Path, cfg: Any, info: dict[str, Any],
                    card: dict[str, Any]) -> Path:
    """The adapter (standard PEFT layout) or full model with its record and card, and the
    card again at the top of the run directory."""
    target = out / ("adapter" if cfg.train.lora else "model")
    save_labelled(model, target, card, tokenizer=None if cfg.train.lora else lm.tokenizer,
                  records={"backdoorlab.json": info}, base_model=cfg.model)
    write_model_card(out, **card)
    return target
