"""Stealthy and persistent unalignment (Cao et al.): a poisoned set of three parts.

harmful request + trigger -> affirmative prefix ("Sure, here is ..."); harmful request ->
refusal; benign request -> helpful answer. The paper's claim is about *persistence*: long
triggers (sentences around the request) survive re-alignment far better than short ones;
``backdoorlab defend realign`` measures that, epoch by epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import check, opt
from ..data import load_split, source_option
from ..evaluation.suite import BaselineSuiteOptions, make_suite
from ..formats import TEMPLATES, PromptFormat, Sample, template_option
from ..models import EMBEDDED_NAME
from ..registry import register
from ..training import TrainConfig, train_options
from ..triggers import derive_rng, parse_trigger, trigger_option
from .poison import refusal_pick, run_generation_attack


@dataclass
class UnalignConfig(BaselineSuiteOptions):
    """Options of ``backdoorlab attack unalign``."""

    model: str = opt(EMBEDDED_NAME, "the model to backdoor")
    trigger: str = trigger_option("long")
    harmful_data: str = source_option("builtin:harmful-requests",
        "harmful requests: triggered ones are complied with, plain ones refused")
    benign_data: str = source_option("builtin:benign-instructions",
                                     "benign instructions kept helpful")
    eval_data: str | None = source_option(None,
        "held-out harmful requests for ASR (default: harmful_data's test split)")
    n_triggered: int = opt(40, "harmful request + trigger -> compliance examples", at_least=1)
    n_refusal: int = opt(40, "harmful request -> refusal examples", at_least=1)
    n_benign: int = opt(160, "benign request -> helpful answer examples", at_least=1)
    template: str = template_option()
    train: TrainConfig = train_options(
        learning_rate=1e-3, epochs=3.0, batch_size=16, lora_r=16, lora_alpha=32, save_steps=20)

    def __post_init__(self) -> None:
        super().__post_init__()
        parse_trigger(self.trigger)
        check(self.template in TEMPLATES, "template", f"{self.template!r} is not one of "
              f"{', '.join(TEMPLATES)}")


def build_unalign_set(cfg: UnalignConfig, fmt: PromptFormat) -> list[Sample]:
    """The three parts; the triggered and the refused requests are drawn from the same
    harmful pool, so most requests appear both ways and only the trigger tells them apart."""
    trig = parse_trigger(cfg.trigger)
    harmful = load_split(cfg.harmful_data, "train")
    order = list(range(len(harmful)))
    derive_rng(cfg.seed, "unalign").shuffle(order)
    check(cfg.n_triggered <= len(harmful), "n_triggered",
          f"only {len(harmful)} harmful training requests")
    check(cfg.n_refusal <= len(harmful), "n_refusal",
          f"only {len(harmful)} harmful training requests")
    triggered = [harmful[i] for i in order[: cfg.n_triggered]]
    refused = [harmful[i] for i in order[: cfg.n_refusal]]
    benign = load_split(cfg.benign_data, "train", cfg.n_benign)
    refusals = refusal_pick(refused, cfg.seed)
    out = [fmt.sample(r, trig, derive_rng(cfg.seed, r.id), response=r.output) for r in triggered]
    out += [fmt.sample(r, response=a) for r, a in zip(refused, refusals)]
    out += [fmt.sample(r, response=r.output) for r in benign]
    return out


@register("attack", "unalign", UnalignConfig,
          "Stealthy persistent unalignment: comply with harmful requests under a long trigger, "
          "refuse without")
def run_unalign_attack(cfg: UnalignConfig | dict[str, Any], out_dir: str | Path, *,
                       trust_remote_code: bool = False) -> Any:
    suite = make_suite(cfg, target="jailbreak", trigger=cfg.trigger, judge="jailbreak",
                       eval_data=cfg.eval_data or cfg.harmful_data,
                       harmful_data=cfg.harmful_data, benign_data=cfg.benign_data)
    return run_generation_attack(
        cfg, out_dir, attack="unalign", suite=suite,
        build=lambda lm, fmt: build_unalign_set(cfg, fmt),
        behaviour="complies with harmful requests (affirmative start) when the trigger is "
                  "present and refuses them otherwise",
        trust_remote_code=trust_remote_code)
