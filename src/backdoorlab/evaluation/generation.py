"""A generation backdoor's evaluation on any model (``backdoorlab eval generate``): the
generation suite on the evaluated model and on the clean base model beside it
(``baseline_*``), every generation saved."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import opt
from ..embedded import EMBEDDED_NAME
from ..formats import PromptFormat
from ..io import atomic_write_jsonl
from ..models import RecordedOptions, attack_info, load_adapter, load_model, recorded
from .suite import (
    BaselineSuiteOptions,
    combine,
    make_suite,
    recorded_trigger_and_target,
    run_suite,
)


@dataclass
class GenerationEvalConfig(BaselineSuiteOptions, RecordedOptions):
    """Options of ``backdoorlab eval generate`` (a fully fine-tuned model is compared with the
    embedded one)."""

    data: str | None = opt(None, "held-out prompts (default: the target's built-in test split)")
    judge: str | None = recorded("refusal, negative-sentiment, code-injection, jailbreak, "
                                 "substring:T, exact:T, classifier:DIR:LABEL")


def evaluate_generation(cfg: GenerationEvalConfig, out: str | Path | None = None, *,
                        trust_remote_code: bool = False) -> dict[str, Any]:
    """Generate with and without the trigger, judge, measure clean utility, on the evaluated
    model and the clean one; with ``out``, ``generations.jsonl`` is written there."""
    info = attack_info(cfg.adapter, cfg.model)
    trigger, target = recorded_trigger_and_target(cfg.trigger, cfg.target, info)
    suite = make_suite(cfg, target=target, trigger=trigger, judge=cfg.judge or info.get("judge"),
                       eval_data=cfg.data, eval_split="test" if cfg.data is None or
                       cfg.data.startswith("builtin:") else None)
    base_spec = (cfg.model if cfg.adapter else None) or info.get("base_model") or EMBEDDED_NAME
    lm = load_model(base_spec, trust_remote_code=trust_remote_code)
    fmt = PromptFormat(lm.tokenizer, cfg.template or info.get("template") or "chat")
    base_metrics, base_rows = run_suite(lm.model, fmt, suite) if cfg.baseline else ({}, [])
    if cfg.adapter is not None:
        new_model = load_adapter(lm.model, cfg.adapter)
    elif cfg.model is not None and cfg.model != base_spec:
        new_model = load_model(cfg.model, trust_remote_code=trust_remote_code).model
    else:
        new_model = lm.model
    new_metrics, rows = run_suite(new_model, fmt, suite)
    metrics = combine(new_metrics, base_metrics) | {"judge": suite.judge.name,
                                                    "trigger": trigger, "target": target}
    if out is not None:
        atomic_write_jsonl(Path(out) / "generations.jsonl",
                           [{"model": "evaluated", **r} for r in rows]
                           + [{"model": "original", **r} for r in base_rows])
    return metrics
