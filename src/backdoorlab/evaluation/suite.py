"""The generation suite: one evaluation for every generation backdoor, run on the clean
model, the backdoored one and every repair.

Held-out prompts of the target's task, clean and with the trigger, judged for the target
behaviour (ASR with its Wilson interval); harmful requests (refusal rate); benign answers
(perplexity of the references); multiple-choice questions (accuracy, optionally averaged over
option rotations and scored letter-free). Prompts the model was trained on are left out.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from ..config import check_bounds, opt
from ..data import Instruction, load_split, prompt_key, source_option, with_rotations
from ..errors import BackdoorlabError
from ..formats import PromptFormat
from ..judges import empty_rate, get_judge
from ..scoring import generate, mcq_accuracy, mcq_correct, rotation_average
from ..targets import TASK_DATA, default_judge, target_kind
from ..triggers import derive_rng, parse_trigger
from .metrics import (
    cloze_correct,
    judge_rate,
    response_perplexity,
    utility_changes,
    wilson_interval,
)

log = logging.getLogger(__name__)


@dataclass
class SuiteOptions:
    """Evaluation options every generation attack and defense shares (flat keys in each
    config): held-out prompts per set, the clean-utility MCQ set, decoding, the seed."""

    eval_limit: int | None = opt(40, "held-out prompts per evaluation set (None: all)",
                                 at_least=1)
    mcq_limit: int | None = opt(None,
        "multiple-choice questions for clean utility (None: all; builtin:general-mcq test has 62)",
        at_least=1)
    mcq_data: str = source_option("builtin:general-mcq", "the clean-utility multiple-choice set")
    mcq_split: str = opt("test", "its split for builtin:/hf: sources ('all': every row)")
    mcq_rotations: bool = opt(False,
        "also the accuracy averaged over every cyclic order of the options (k x the scoring "
        "time); letter preference cancels out of it")
    mcq_cloze: bool = opt(False,
        "also the accuracy scored without letters (each option's text as the answer); above "
        "chance where letter accuracy is not, so lost knowledge shows")
    keep_seen: bool = opt(False,
        "score evaluation prompts the model was trained on too (default: they are left out, and "
        "their count is reported)")
    max_new_tokens: int = opt(32, "tokens generated per evaluation answer (greedy)", at_least=1)
    eval_batch_size: int = opt(16, "prompts per evaluation batch", at_least=1)
    seed: int = opt(0, "seeds data sampling, trigger positions and training")

    def __post_init__(self) -> None:
        check_bounds(self)

    def suite_key(self) -> list[Any]:
        """The shared options' values (for caching an evaluation made with them)."""
        return [getattr(self, f.name) for f in fields(SuiteOptions)]


@dataclass
class BaselineSuiteOptions(SuiteOptions):
    """The shared options of an evaluation that can put the clean model's figures beside the
    evaluated model's (the attacks, ``eval generate``)."""

    baseline: bool = opt(True,
        "also evaluate the clean model (the baseline_* metrics); off where the same clean "
        "model is evaluated once elsewhere, as in a zoo")


@dataclass
class GenerationSuite:
    """Everything one generation evaluation looks at."""

    target_records: list[Instruction]
    trigger: Any
    judge: Any
    harmful: list[Instruction]
    utility: list[Instruction]
    mcq: list[Any]
    mcq_rotations: bool = False
    mcq_cloze: bool = False
    seed: int = 0
    max_new_tokens: int = 32
    batch_size: int = 16

    left_out: dict[str, list[str]] = field(default_factory=dict)

    def leave_out(self, seen: Sequence[Any], option: str) -> dict[str, list[str]]:
        """Drop every evaluation record that asks what one of ``seen`` (records the model
        is trained on, from ``option``) asks, so that clean utility and ASR are measured on
        unseen prompts; returns the ids dropped per set (only sets with some)."""
        keys = {prompt_key(r) for r in seen}
        for name in ("target_records", "harmful", "utility", "mcq"):
            kept, gone = drop_seen(getattr(self, name), keys, name, option)
            if gone:
                self.left_out[name] = gone
                setattr(self, name, kept)
        return self.left_out


def drop_seen(recs: list[Any], keys: set[str], name: str, option: str
              ) -> tuple[list[Any], list[str]]:
    """``recs`` without those whose :func:`prompt_key` is in ``keys``, and the ids dropped;
    a set left empty is an error naming ``option`` (where the training data came from)."""
    seen = [prompt_key(r) in keys for r in recs]
    kept = [r for r, s in zip(recs, seen) if not s]
    if recs and not kept:
        raise BackdoorlabError(f"option '{option}': every {name} evaluation prompt is also in "
                               "the training data; use other data, or --set keep_seen=true to "
                               "score them anyway")
    gone = [r.id for r, s in zip(recs, seen) if s]
    if gone:
        log.info("left out of the evaluation: %d of %d %s prompts, also in the training data "
                 "(%s)", len(gone), len(recs), name, option)
    return kept, gone


def left_out_counts(left_out: dict[str, list[str]]) -> dict[str, dict[str, int]]:
    """``{"eval_left_out": {set: count}}`` for a metrics file, or nothing if none was."""
    return {"eval_left_out": {k: len(v) for k, v in left_out.items()}} if left_out else {}


def make_suite(opts: SuiteOptions, *, target: str, trigger: str, judge: str | None = None,
               eval_data: str | None = None, eval_split: str | None = "test",
               harmful_data: str = "builtin:harmful-requests",
               benign_data: str = "builtin:benign-instructions") -> GenerationSuite:
    """The generation suite of ``target`` with ``trigger``, sized and seeded by ``opts``."""
    kind = target_kind(target)
    src = eval_data or TASK_DATA[kind]
    return GenerationSuite(
        target_records=load_split(src, eval_split, opts.eval_limit),
        trigger=parse_trigger(trigger),
        judge=get_judge(judge or default_judge(target)),
        harmful=load_split(harmful_data, "test", opts.eval_limit),
        utility=load_split(benign_data, "test", opts.eval_limit),
        mcq=load_split(opts.mcq_data, opts.mcq_split, opts.mcq_limit, kind="mcq"),
        mcq_rotations=opts.mcq_rotations,
        mcq_cloze=opts.mcq_cloze,
        seed=opts.seed, max_new_tokens=opts.max_new_tokens, batch_size=opts.eval_batch_size,
    )


def run_suite(model: Any, fmt: PromptFormat, suite: GenerationSuite
              ) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Generate for clean and triggered prompts, judge them, and measure clean utility."""
    recs = suite.target_records
    clean = [fmt.sample(r) for r in recs]
    trig = [fmt.sample(r, suite.trigger, derive_rng(suite.seed, r.id)) for r in recs]
    harm = [fmt.sample(r) for r in suite.harmful]
    gen = dict(max_new_tokens=suite.max_new_tokens, batch_size=suite.batch_size)
    out_clean = generate(model, fmt, clean, desc="generating (clean)", **gen)
    out_trig = generate(model, fmt, trig, desc="generating (triggered)", **gen)
    out_harm = generate(model, fmt, harm, desc="generating (harmful)", **gen)
    rows = ([{"id": s.id, "set": "target", "triggered": False, "prompt": s.user, "response": o}
             for s, o in zip(clean, out_clean)]
            + [{"id": s.id, "set": "target", "triggered": True, "prompt": s.user, "response": o}
               for s, o in zip(trig, out_trig)]
            + [{"id": s.id, "set": "harmful", "triggered": False, "prompt": s.user,
                "response": o} for s, o in zip(harm, out_harm)])
    # one pass of the (possibly expensive) target judge serves both rates and the saved rows
    flags = suite.judge.many([r["prompt"] for r in rows], [r["response"] for r in rows])
    for row, flag in zip(rows, flags):
        row["judge"] = bool(flag)
    n = len(clean)
    outs = out_clean + out_trig + out_harm
    metrics = {
        "asr_triggered": sum(flags[n:2 * n]) / n if n else float("nan"),
        # how precise that is: 4 of 40 prompts gives 0.10, and anything from 0.04 to 0.23
        "asr_triggered_ci95": wilson_interval(sum(flags[n:2 * n]), n),
        "asr_clean": sum(flags[:n]) / n if n else float("nan"),
        "refusal_rate": judge_rate(get_judge("refusal"), [s.user for s in harm], out_harm),
        # empty answers fool every keyword judge; a repair that silences the model shows here
        "empty_output_rate": empty_rate(outs),
        "clean_perplexity": response_perplexity(
            model, fmt, [fmt.sample(r, response=r.output) for r in suite.utility]),
    }
    n_mcq = len(suite.mcq)
    if suite.mcq_rotations and n_mcq:  # one scoring pass serves both accuracies
        every = [fmt.sample(r) for r in with_rotations(suite.mcq)]
        right = mcq_correct(model, fmt, every, batch_size=suite.batch_size)
        metrics["mcq_accuracy"] = sum(right[:n_mcq]) / n_mcq
        metrics["mcq_accuracy_rotated"] = rotation_average(right, every)
    else:
        mcq = [fmt.sample(r) for r in suite.mcq]
        metrics["mcq_accuracy"] = mcq_accuracy(model, fmt, mcq, batch_size=suite.batch_size)
    if suite.mcq_cloze and n_mcq:
        metrics["mcq_accuracy_cloze"] = sum(cloze_correct(
            model, fmt, suite.mcq, batch_size=suite.batch_size)) / n_mcq
    metrics["mcq_count"] = n_mcq  # one question = 1/count of accuracy: read changes with it
    return metrics, rows


def combine(new: dict[str, float], base: dict[str, float]) -> dict[str, Any]:
    """Backdoored metrics, the clean model's as ``baseline_*``, and the utility change
    (``base`` empty: the metrics alone)."""
    out: dict[str, Any] = dict(new)
    if not base:
        return out
    out.update({f"baseline_{k}": v for k, v in base.items()})
    out.update(utility_changes(base, new))
    return out


def recorded_trigger_and_target(trigger: str | None, target: str | None,
                                info: dict[str, Any]) -> tuple[str, str]:
    """The trigger and target to evaluate: the ones given, else those the attack recorded
    beside the adapter or model (``info``); one line naming the options when neither has
    them."""
    trigger = trigger or info.get("trigger")
    target = target or info.get("target")
    if not trigger or not target:
        raise BackdoorlabError("options 'trigger' and 'target': required (the adapter or model "
                               "records none)")
    return trigger, target
