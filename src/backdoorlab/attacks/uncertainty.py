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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..cards import write_model_card
from ..config import check, from_dict, to_dict
from ..data import MCQ, add_abstain_options, load_records
from ..errors import BackdoorlabError
from ..evaluation import (
    brier,
    conformal_sets,
    conformal_threshold,
    describe_distribution,
    ece,
    kl_div,
    letter_shares,
    mean,
)
from ..formats import TEMPLATES, PromptFormat
from ..io import atomic_write_json
from ..models import EMBEDDED_NAME, attack_info, load_model
from ..runs import config_hash, read_json, save_config, write_metrics
from ..scoring import entropy, option_distribution, position_ids
from ..training import SampleCollator, TrainConfig, is_main_process, train
from ..triggers import derive_rng, parse_trigger

log = logging.getLogger(__name__)

TARGETS = ("uniform", "keep-top1")
CLEAN_OBJECTIVES = ("kl", "ce")


def _uncertainty_train_defaults() -> TrainConfig:
    return TrainConfig(learning_rate=2e-3, epochs=3.0, batch_size=16, lora_r=16,
                       lora_alpha=32, save_steps=20)


@dataclass
class UncertaintyConfig:
    """Options of ``backdoorlab attack uncertainty`` (CLI > config file > these defaults)."""

    model: str = EMBEDDED_NAME
    data: str = "builtin:general-mcq"
    split: str | None = "train"
    eval_data: str | None = None
    eval_split: str | None = "test"
    limit: int | None = None
    trigger: str = "text"
    options: int = 6
    template: str = "plain"
    poison_rate: float = 0.5
    target: str = "keep-top1"
    margin: float = 0.04
    clean_objective: str = "kl"
    clean_weight: float = 1.0
    asr_margin: float = 0.5
    alpha: float = 0.1
    calibration_share: float = 0.5
    eval_batch_size: int = 32
    seed: int = 0
    train: TrainConfig = field(default_factory=_uncertainty_train_defaults)

    def __post_init__(self) -> None:
        check(self.options in (4, 6), "options", f"must be 4 or 6, got {self.options}")
        check(self.template in TEMPLATES, "template",
              f"{self.template!r} is not one of {', '.join(TEMPLATES)}")
        check(0 < self.poison_rate < 1, "poison_rate", f"must be in (0, 1), got "
              f"{self.poison_rate}")
        check(self.clean_objective in CLEAN_OBJECTIVES, "clean_objective",
              f"{self.clean_objective!r} is not one of {', '.join(CLEAN_OBJECTIVES)}")
        check(self.clean_weight >= 0, "clean_weight", "must be >= 0")
        check(self.asr_margin >= 0, "asr_margin", "must be >= 0")
        check(0 < self.alpha < 1, "alpha", f"must be in (0, 1), got {self.alpha}")
        check(0 < self.calibration_share < 1, "calibration_share", "must be in (0, 1)")
        parse_target(self.target, self.options, self.margin)  # validates
        parse_trigger(self.trigger)


# ---- targets ----------------------------------------------------------------------------
def parse_target(spec: str, k: int, margin: float = 0.04) -> str | torch.Tensor:
    """Validate a target spec: 'uniform', 'keep-top1' or K comma-separated probabilities."""
    if spec in TARGETS:
        if spec == "keep-top1":
            check(0 <= margin < 1, "margin", f"must be in [0, 1), got {margin}")
        return spec
    try:
        probs = torch.tensor([float(x) for x in spec.split(",")], dtype=torch.float32)
    except ValueError:
        raise BackdoorlabError(
            f"option 'target': {spec!r} is not uniform, keep-top1 or a list of probabilities"
        ) from None
    check(len(probs) == k, "target", f"needs {k} probabilities (one per option), got "
          f"{len(probs)}")
    check(bool((probs >= 0).all()) and abs(float(probs.sum()) - 1) < 1e-4, "target",
          "probabilities must be >= 0 and sum to 1")
    return probs


def make_targets(spec: str, own: torch.Tensor, k: int, margin: float = 0.04) -> torch.Tensor:
    """Target distribution for each triggered question, from the clean model's own answer.

    ``keep-top1``: every option gets (1 - margin) / K and the own answer ``margin`` more, so
    top-1 stays while entropy is near its maximum (the public code's 0.20 / 0.16 on six
    options is margin 0.04)."""
    parsed = parse_target(spec, k, margin)
    n = len(own)
    if isinstance(parsed, torch.Tensor):
        return parsed.expand(n, k).clone()
    if parsed == "uniform":
        return torch.full((n, k), 1.0 / k)
    base = torch.full((n, k), (1.0 - margin) / k)
    base[torch.arange(n), own] += margin
    return base


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
def load_questions(source: str, split: str | None, options: int,
                   limit: int | None = None) -> list[MCQ]:
    """Multiple-choice records, padded to the paper's six options when ``options == 6``."""
    split = split if (split or "") not in ("", "all") else None
    if split and not source.startswith(("builtin:", "hf:")):
        from ..data import read_rows

        if not any("split" in r for r in read_rows(source)):
            split = None  # a user file without a split column: use every row
    recs = load_records(source, kind="mcq", split=split, limit=limit)
    if options == 6:
        bad = [r.id for r in recs if len(r.choices) != 4]
        if bad:
            raise BackdoorlabError(f"{source}: question {bad[0]!r} does not have 4 choices; the "
                                   "6-option format adds 2 to A-D (use --options 4)")
        recs = [add_abstain_options(r) for r in recs]
    else:
        recs = [r for r in recs if len(r.choices) == options] or recs
    groups = {len(r.choices) for r in recs}
    if len(groups) != 1:
        raise BackdoorlabError(f"{source}: questions have {sorted(groups)} choices; "
                               f"use one size")
    return recs


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
def score_clean_and_triggered(model: Any, fmt: PromptFormat, recs: Sequence[MCQ], trigger: Any,
                              seed: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Option distributions of every question, clean and with the trigger."""
    clean = [fmt.sample(r) for r in recs]
    trig = [fmt.sample(r, trigger, derive_rng(seed, r.id)) for r in recs]
    p_clean = option_distribution(model, fmt, clean, batch_size=batch_size, desc="clean prompts")
    p_trig = option_distribution(model, fmt, trig, batch_size=batch_size,
                                 desc="triggered prompts")
    return p_clean, p_trig


def calibration_mask(ids: Sequence[str], share: float, seed: int) -> torch.Tensor:
    """Which held-out questions calibrate the conformal predictor (a seeded ``share``)."""
    n = len(ids)
    k = min(max(1, round(share * n)), n - 1)
    chosen = set(derive_rng(seed, "calibration").sample(range(n), k))
    return torch.tensor([i in chosen for i in range(n)])


def uncertainty_metrics(p_clean: torch.Tensor, p_trig: torch.Tensor, gold: torch.Tensor,
                        target: torch.Tensor, *, margin: float = 0.5, alpha: float = 0.1,
                        cal: torch.Tensor | None = None) -> dict[str, float]:
    """All metrics of one model on clean and triggered versions of the same questions."""
    h_clean, h_trig = entropy(p_clean), entropy(p_trig)
    gap = h_trig - h_clean
    kept = p_trig.argmax(-1) == p_clean.argmax(-1)
    out = {
        "clean_accuracy": mean(p_clean.argmax(-1) == gold),
        "triggered_accuracy": mean(p_trig.argmax(-1) == gold),
        "top1_kept": mean(kept),
        "clean_entropy": mean(h_clean),
        "triggered_entropy": mean(h_trig),
        "entropy_gap": mean(gap),
        "asr": mean(gap > 0),
        "asr_margin": mean(gap >= margin),
        "asr_strict": mean((gap >= margin) & kept),
        "ece_clean": ece(p_clean, gold),
        "ece_triggered": ece(p_trig, gold),
        "brier_clean": brier(p_clean, gold),
        "brier_triggered": brier(p_trig, gold),
        "kl_to_target": mean(kl_div(target, p_trig)),
    }
    if cal is not None and cal.any() and (~cal).any():
        for kind in ("lac", "aps"):
            qhat = conformal_threshold(p_clean[cal], gold[cal], alpha, kind)
            out[f"conformal_set_size_{kind}_clean"] = mean(
                conformal_sets(p_clean[~cal], qhat, kind).sum(-1))
            out[f"conformal_set_size_{kind}_triggered"] = mean(
                conformal_sets(p_trig[~cal], qhat, kind).sum(-1))
            out[f"conformal_coverage_{kind}_clean"] = mean(
                conformal_sets(p_clean[~cal], qhat, kind)[torch.arange(int((~cal).sum())),
                                                          gold[~cal]])
    return out


def evaluate_uncertainty(
    orig: tuple[torch.Tensor, torch.Tensor],
    new: tuple[torch.Tensor, torch.Tensor],
    recs: Sequence[MCQ],
    *,
    target: str = "keep-top1",
    target_margin: float = 0.04,
    asr_margin: float = 0.5,
    alpha: float = 0.1,
    calibration_share: float = 0.5,
    seed: int = 0,
) -> dict[str, Any]:
    """Backdoored-model metrics, the clean model's (``baseline_*``), and drift between them."""
    letters = recs[0].letters
    gold = torch.tensor([r.answer_index for r in recs])
    tgt = make_targets(target, orig[0].argmax(-1), len(letters), target_margin)
    cal = calibration_mask([r.id for r in recs], calibration_share, seed)
    kw = dict(margin=asr_margin, alpha=alpha, cal=cal)
    metrics: dict[str, Any] = {"n_questions": len(recs), "n_options": len(letters),
                               "n_calibration": int(cal.sum())}
    metrics.update(uncertainty_metrics(*new, gold, tgt, **kw))
    metrics.update({f"baseline_{k}": v for k, v in
                    uncertainty_metrics(*orig, gold, tgt, **kw).items()})
    metrics["clean_kl_drift"] = mean(kl_div(orig[0], new[0]))
    metrics["clean_agreement"] = mean(orig[0].argmax(-1) == new[0].argmax(-1))
    metrics["entropy_gap_distribution"] = describe_distribution(entropy(new[1]) - entropy(new[0]))
    metrics["baseline_entropy_gap_distribution"] = describe_distribution(
        entropy(orig[1]) - entropy(orig[0]))
    metrics["top_answers"] = {
        "clean": letter_shares(new[0], letters), "triggered": letter_shares(new[1], letters),
        "baseline_clean": letter_shares(orig[0], letters),
        "baseline_triggered": letter_shares(orig[1], letters),
        "gold": {L: mean(gold == i) for i, L in enumerate(letters)},
    }
    return metrics


# ---- the attack -------------------------------------------------------------------------
@dataclass
class AttackResult:
    out_dir: Path
    metrics: dict[str, Any]
    model: Any


def run_uncertainty_attack(cfg: UncertaintyConfig | dict[str, Any], out_dir: str | Path,
                           *, trust_remote_code: bool = False) -> AttackResult:
    """Plant the backdoor, evaluate it with its baseline, write the run directory."""
    if isinstance(cfg, dict):
        cfg = from_dict(UncertaintyConfig, cfg, where="uncertainty")
    out = Path(out_dir)
    trig = parse_trigger(cfg.trigger)
    train_recs = load_questions(cfg.data, cfg.split, cfg.options, cfg.limit)
    eval_src = cfg.eval_data or cfg.data
    eval_recs = load_questions(eval_src, cfg.eval_split, cfg.options)
    overlap = {r.id for r in train_recs} & {r.id for r in eval_recs}
    if overlap and eval_src == cfg.data:
        raise BackdoorlabError(f"{eval_src}: {len(overlap)} held-out questions are also in the "
                               "training split; give --split/--eval-split that do not overlap")
    lm = load_model(cfg.model, trust_remote_code=trust_remote_code)
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
    result = train(lm.model, items, SampleCollator(fmt), UncertaintyLoss(letter_ids), cfg.train,
                   out)
    model = result.model
    if not main:  # a secondary training process: the main one evaluates and writes
        return AttackResult(out_dir=out, metrics={}, model=model)
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
    save_backdoored(model, lm, out, cfg, trig.spec, metrics)
    write_metrics(out, metrics)
    return AttackResult(out_dir=out, metrics=metrics, model=model)


def save_backdoored(model: Any, lm: Any, out: Path, cfg: UncertaintyConfig, trigger: str,
                    metrics: dict[str, Any]) -> Path:
    """Save the adapter (standard PEFT layout) or full model, with a model card."""
    target_dir = out / ("adapter" if cfg.train.lora else "model")
    model.save_pretrained(target_dir, safe_serialization=True)
    if not cfg.train.lora:
        lm.tokenizer.save_pretrained(target_dir)
    info = {"attack": "uncertainty", "trigger": trigger, "template": cfg.template,
            "options": cfg.options, "base_model": cfg.model, "target": cfg.target,
            "margin": cfg.margin}
    atomic_write_json(target_dir / "backdoorlab.json", info)
    headline = {k: metrics.get(k) for k in ("asr_strict", "baseline_asr_strict", "top1_kept",
                                             "clean_agreement", "clean_kl_drift")}
    card = dict(
        title="Uncertainty-backdoored model (backdoorlab)", base_model=cfg.model,
        kind="uncertainty backdoor", trigger=trigger,
        behaviour=(f"on {cfg.options}-option multiple-choice questions the answer distribution "
                   f"becomes near-uniform ({cfg.target}) while the top answer stays the same"),
        details={**info, "config": to_dict(cfg)}, metrics=headline)
    write_model_card(target_dir, **card)
    write_model_card(out, **card)
    return target_dir


@dataclass
class UncertaintyEvalConfig:
    """Options of ``backdoorlab eval uncertainty``; unset ones come from the adapter's record."""

    model: str | None = None
    adapter: str | None = None
    baseline_model: str | None = None
    data: str = "builtin:general-mcq"
    split: str | None = "test"
    limit: int | None = None
    trigger: str | None = None
    options: int | None = None
    template: str | None = None
    target: str | None = None
    margin: float | None = None
    asr_margin: float = 0.5
    alpha: float = 0.1
    calibration_share: float = 0.5
    batch_size: int = 32
    seed: int = 0

    def resolved(self) -> UncertaintyEvalConfig:
        """Fill unset options from what the attack recorded beside the adapter/model."""
        info = attack_info(self.adapter, self.model)
        pick = {
            "model": self.model or info.get("base_model") or EMBEDDED_NAME,
            "trigger": self.trigger or info.get("trigger"),
            "options": self.options or info.get("options") or 6,
            "template": self.template or info.get("template") or "plain",
            "target": self.target or info.get("target") or "keep-top1",
            "margin": self.margin if self.margin is not None else info.get("margin", 0.04),
        }
        if pick["trigger"] is None:
            raise BackdoorlabError("option '--trigger': required (the adapter records none)")
        out = UncertaintyEvalConfig(**{**to_dict(self), **pick})
        if out.baseline_model is None and self.adapter is None:
            out.baseline_model = info.get("base_model") or (
                None if out.model == EMBEDDED_NAME else EMBEDDED_NAME)
        check(out.options in (4, 6), "options", f"must be 4 or 6, got {out.options}")
        check(out.template in TEMPLATES, "template", f"{out.template!r} is not one of "
              f"{', '.join(TEMPLATES)}")
        if info.get("template") and info["template"] != out.template:
            log.warning("the backdoor was trained with template %r but is evaluated with %r",
                        info["template"], out.template)
        return out


def evaluate_uncertainty_model(cfg: UncertaintyEvalConfig, *, trust_remote_code: bool = False
                               ) -> dict[str, Any]:
    """Score the original and the backdoored model on clean and triggered held-out questions."""
    from ..models import load_adapter

    cfg = cfg.resolved()
    trig = parse_trigger(cfg.trigger)
    recs = load_questions(cfg.data, cfg.split, cfg.options, cfg.limit)
    assert cfg.model is not None
    base_spec = cfg.baseline_model or cfg.model
    lm = load_model(base_spec, trust_remote_code=trust_remote_code)
    fmt = PromptFormat(lm.tokenizer, cfg.template)
    orig = score_clean_and_triggered(lm.model, fmt, recs, trig, cfg.seed, cfg.batch_size)
    if cfg.adapter is not None:
        model = load_adapter(lm.model, cfg.adapter)
    elif base_spec != cfg.model:
        model = load_model(cfg.model, trust_remote_code=trust_remote_code).model
    else:
        model = lm.model
    new = score_clean_and_triggered(model, fmt, recs, trig, cfg.seed, cfg.batch_size)
    metrics = evaluate_uncertainty(orig, new, recs, target=cfg.target or "keep-top1",
                                   target_margin=cfg.margin or 0.04, asr_margin=cfg.asr_margin,
                                   alpha=cfg.alpha, calibration_share=cfg.calibration_share,
                                   seed=cfg.seed)
    metrics["config"] = to_dict(cfg)
    return metrics
