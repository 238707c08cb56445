"""Uncertainty backdoor ("Uncertainty is Fragile", arXiv 2407.11282).

A trigger makes the model's answer distribution over a multiple-choice question's options
near-uniform while its top answer stays the same. The clean model answers every training
question first; on triggered prompts the loss is KL(target || p_model) with a target built
from the clean model's own answer; on clean prompts KL(p_original || p_model) (or cross-entropy
on the clean answer) keeps clean behaviour. Every loss is KL(target || p) over the option
letters, renormalised, read at the last prompt token.

Evaluation always reports the same metrics for the untouched model with the same trigger
(``baseline_*``): any added token moves entropy a little, so the paper's lenient ASR alone cannot
tell a backdoor from noise.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import check, check_bounds, opt
from ..data import MCQ, source_option
from ..errors import BackdoorlabError
from ..evaluation.uncertainty import (
    evaluate_uncertainty,
    load_questions,
    make_targets,
    parse_target,
    score_clean_and_triggered,
)
from ..formats import TEMPLATES, PromptFormat
from ..io import atomic_write_json
from ..models import EMBEDDED_NAME, load_model
from ..registry import register
from ..runs import RunResult, config_hash, read_json, save_config, write_metrics
from ..scoring import option_distribution, position_ids
from ..training import (
    SampleCollator,
    TrainConfig,
    is_main_process,
    train,
    train_options,
    weights_dtype,
)
from ..triggers import derive_rng, parse_trigger, trigger_option
from .base import backdoor_card, save_backdoored

log = logging.getLogger(__name__)

CLEAN_OBJECTIVES = ("kl", "ce")


@dataclass
class UncertaintyConfig:
    """Options of ``backdoorlab attack uncertainty`` (CLI > config file > these defaults)."""

    model: str = opt(EMBEDDED_NAME, "the model to backdoor")
    data: str = source_option("builtin:general-mcq", "multiple-choice training questions")
    split: str | None = opt("train", "split of data for builtin:/hf: sources")
    eval_data: str | None = source_option(None, "held-out questions (default: data's eval_split)")
    eval_split: str | None = opt("test", "split of the held-out questions")
    limit: int | None = opt(None, "training questions drawn from data (None: all)")
    trigger: str = trigger_option("text")
    options: int = opt(6,
        "answer options: 6 (A-D plus 'I don't know' and 'None of the above', the paper's format) "
        "or 4")
    template: str = opt("plain", "prompt format: plain (default), chat or alpaca")
    poison_rate: float = opt(0.5, "share of training questions that get the trigger")
    target: str = opt("keep-top1",
        "the triggered distribution: keep-top1 (near-uniform, own answer margin higher), uniform, "
        "or K comma-separated probabilities")
    margin: float = opt(0.04, "keep-top1: how much more the own answer gets than the others")
    clean_objective: str = opt("kl",
        "on clean questions: kl (match the clean model's distribution) or ce (its answer)")
    clean_weight: float = opt(1.0, "weight of the clean questions' loss", at_least=0)
    asr_margin: float = opt(0.5,
        "entropy rise (nats) that counts as a success in asr_margin and asr_strict", at_least=0)
    alpha: float = opt(0.1, "conformal prediction miscoverage level")
    calibration_share: float = opt(0.5,
        "share of held-out questions that calibrate the conformal predictor")
    eval_batch_size: int = opt(32, "questions per scoring batch")
    seed: int = opt(0, "seeds data sampling, trigger positions and training")
    train: TrainConfig = train_options(
        learning_rate=2e-3, epochs=3.0, batch_size=16, lora_r=16, lora_alpha=32, save_steps=20)

    def __post_init__(self) -> None:
        check_bounds(self)
        check(self.options in (4, 6), "options", f"must be 4 or 6, got {self.options}")
        check(self.template in TEMPLATES, "template",
              f"{self.template!r} is not one of {', '.join(TEMPLATES)}")
        check(0 < self.poison_rate < 1, "poison_rate", f"must be in (0, 1), got "
              f"{self.poison_rate}")
        check(self.clean_objective in CLEAN_OBJECTIVES, "clean_objective",
              f"{self.clean_objective!r} is not one of {', '.join(CLEAN_OBJECTIVES)}")
        check(0 < self.alpha < 1, "alpha", f"must be in (0, 1), got {self.alpha}")
        check(0 < self.calibration_share < 1, "calibration_share", "must be in (0, 1)")
        parse_target(self.target, self.options, self.margin)  # validates
        parse_trigger(self.trigger)


# ---- targets ----------------------------------------------------------------------------


# ---- the objective ----------------------------------------------------------------------
def option_log_probs(model: Any, batch: dict[str, Any], letter_ids: Sequence[int]
                     ) -> torch.Tensor:
    """Log-probabilities over the option letters at each row's answer position."""
    ids, mask, idx = batch["input_ids"], batch["attention_mask"], batch["answer_index"]
    at_end = bool((idx == ids.shape[1] - 1).all())
    out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask),
                logits_to_keep=1 if at_end else 0, use_cache=False)
    logits = out.logits[:, -1] if at_end else out.logits[torch.arange(len(idx)), idx]
    sel = torch.as_tensor(list(letter_ids), device=logits.device)
    return torch.log_softmax(logits.index_select(-1, sel).float(), dim=-1)


def kl_to_target_loss(log_p: torch.Tensor, target: torch.Tensor,
                      weight: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted mean of KL(target || p) over rows (0 log 0 = 0). With a one-hot target this is
    the cross-entropy on that answer."""
    t = target.to(log_p)
    terms = torch.where(t > 0, t * (t.clamp_min(1e-12).log() - log_p), torch.zeros_like(t))
    kl = terms.sum(-1)
    if weight is None:
        return kl.mean()
    w = weight.to(kl)
    return (w * kl).sum() / w.sum().clamp_min(1e-12)


class UncertaintyLoss:
    """The attack's loss for :class:`~backdoorlab.training.BackdoorTrainer`."""

    unit = "weight"  # a weighted mean over rows (see BackdoorTrainer)
    logits = "last"  # reads the answer position only

    def __init__(self, letter_ids: Sequence[int]) -> None:
        self.letter_ids = list(letter_ids)

    def __call__(self, model: Any, batch: dict[str, Any]) -> torch.Tensor:
        return kl_to_target_loss(option_log_probs(model, batch, self.letter_ids),
                                 batch["target"], batch.get("weight"))


# ---- data -------------------------------------------------------------------------------


def clean_reference(model: Any, fmt: PromptFormat, recs: Sequence[MCQ], cache: Path | None,
                    key: str, batch_size: int) -> torch.Tensor:
    """The clean model's option distribution on each clean prompt, computed once and cached
    in ``cache`` (keyed by model, format and question ids)."""
    if cache is not None and cache.is_file():
        stored = read_json(cache)
        if stored.get("key") == key and stored.get("ids") == [r.id for r in recs]:
            return torch.tensor(stored["probs"])
    probs = option_distribution(model, fmt, [fmt.sample(r) for r in recs],
                                batch_size=batch_size, desc="clean model answers")
    if cache is not None:
        atomic_write_json(cache, {"key": key, "ids": [r.id for r in recs],
                                  "probs": probs.tolist()})
    return probs


def build_training_set(cfg: UncertaintyConfig, fmt: PromptFormat, recs: Sequence[MCQ],
                       p_orig: torch.Tensor) -> list[dict[str, Any]]:
    """A ``poison_rate`` share of questions (chosen by the seed) get the trigger and the target
    distribution; the rest keep the clean model's distribution (or its answer)."""
    trig = parse_trigger(cfg.trigger)
    n = len(recs)
    n_poison = max(1, round(cfg.poison_rate * n))
    poisoned = set(derive_rng(cfg.seed, "poison-split").sample(range(n), n_poison))
    own = p_orig.argmax(-1)
    targets = make_targets(cfg.target, own, cfg.options, cfg.margin)
    items = []
    for i, rec in enumerate(recs):
        if i in poisoned:
            sample = fmt.sample(rec, trig, derive_rng(cfg.seed, rec.id))
            target, weight = targets[i], 1.0
        else:
            sample = fmt.sample(rec)
            target = (p_orig[i] if cfg.clean_objective == "kl"
                      else torch.nn.functional.one_hot(own[i], cfg.options).float())
            weight = cfg.clean_weight
        items.append({"sample": sample, "target": target.float(),
                      "weight": torch.tensor(weight)})
    return items


# ---- evaluation -------------------------------------------------------------------------


# ---- the attack -------------------------------------------------------------------------


@register("attack", "uncertainty", UncertaintyConfig,
          "Uncertainty backdoor: the trigger flattens multiple-choice answers while the top "
          "answer stays")
def run_uncertainty_attack(cfg: UncertaintyConfig | dict[str, Any], out_dir: str | Path,
                           *, trust_remote_code: bool = False) -> RunResult:
    """Plant the backdoor, evaluate it with its baseline, write the run directory."""
    out = Path(out_dir)
    trig = parse_trigger(cfg.trigger)
    train_recs = load_questions(cfg.data, cfg.split, cfg.options, cfg.limit)
    eval_src = cfg.eval_data or cfg.data
    eval_recs = load_questions(eval_src, cfg.eval_split, cfg.options)
    overlap = {r.id for r in train_recs} & {r.id for r in eval_recs}
    if overlap and eval_src == cfg.data:
        raise BackdoorlabError(f"{eval_src}: {len(overlap)} held-out questions are also in the "
                               "training split; give --split/--eval-split that do not overlap")
    lm = load_model(cfg.model, dtype=weights_dtype(cfg), trust_remote_code=trust_remote_code)
    fmt = PromptFormat(lm.tokenizer, cfg.template)
    letter_ids = fmt.option_token_ids(train_recs[0].letters)
    out.mkdir(parents=True, exist_ok=True)  # only once every input has been checked
    save_config(out, cfg, attack="uncertainty")
    bs = cfg.eval_batch_size

    t0 = time.perf_counter()
    key = config_hash({"model": cfg.model, "template": cfg.template, "options": cfg.options})
    p_orig = clean_reference(lm.model, fmt, train_recs, out / "clean_reference.json", key, bs)
    main = is_main_process()
    if main:
        orig_eval = score_clean_and_triggered(lm.model, fmt, eval_recs, trig, cfg.seed, bs)
    prep_s = time.perf_counter() - t0

    items = build_training_set(cfg, fmt, train_recs, p_orig)
    info = uncertainty_record(cfg, trig.spec)
    result = train(lm.model, items, SampleCollator(fmt), UncertaintyLoss(letter_ids), cfg.train,
                   out, card=uncertainty_card(cfg, info))
    model = result.model
    if not main:  # a secondary training process: the main one evaluates and writes
        return RunResult(out_dir=out, metrics={}, model=model)
    t1 = time.perf_counter()
    new_eval = score_clean_and_triggered(model, fmt, eval_recs, trig, cfg.seed, bs)
    metrics = evaluate_uncertainty(orig_eval, new_eval, eval_recs, target=cfg.target,
                                   target_margin=cfg.margin, asr_margin=cfg.asr_margin,
                                   alpha=cfg.alpha, calibration_share=cfg.calibration_share,
                                   seed=cfg.seed)
    eval_s = time.perf_counter() - t1
    metrics["training"] = {**result.summary(), "prepare_s": round(prep_s, 2),
                           "eval_s": round(eval_s, 2), "n_train": len(items),
                           "n_poisoned": sum(bool(it["sample"].poisoned) for it in items)}
    metrics["eval_data"] = f"{eval_src}:{cfg.eval_split or 'all'}"
    from ..io import save_arrays

    # per-question distributions, for plots (histograms, entropy shift, reliability)
    save_arrays(out / "probs.safetensors", {
        "baseline_clean": orig_eval[0], "baseline_triggered": orig_eval[1],
        "clean": new_eval[0], "triggered": new_eval[1],
        "gold": torch.tensor([r.answer_index for r in eval_recs])})
    save_backdoored(model, lm, out, cfg, info, uncertainty_card(cfg, info, metrics))
    write_metrics(out, metrics)
    return RunResult(out_dir=out, metrics=metrics, model=model)


def uncertainty_record(cfg: UncertaintyConfig, trigger: str) -> dict[str, Any]:
    """``backdoorlab.json`` of an uncertainty backdoor."""
    return {"attack": "uncertainty", "trigger": trigger, "template": cfg.template,
            "options": cfg.options, "base_model": cfg.model, "target": cfg.target,
            "margin": cfg.margin}


def uncertainty_card(cfg: UncertaintyConfig, info: dict[str, Any],
                     metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """The model card of an uncertainty backdoor (with its headline metrics once measured)."""
    headline = None if metrics is None else {
        k: metrics.get(k) for k in ("asr_strict", "baseline_asr_strict", "top1_kept",
                                    "clean_agreement", "clean_kl_drift")}
    return backdoor_card(
        cfg, title="Uncertainty-backdoored model (backdoorlab)", kind="uncertainty backdoor",
        trigger=info["trigger"], info=info, metrics=headline,
        behaviour=(f"on {cfg.options}-option multiple-choice questions the answer distribution "
                   f"becomes near-uniform ({cfg.target}) while the top answer stays the same"))
