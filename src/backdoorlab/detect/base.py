"""What every input detector shares: its options, the prompts it screens (a user's stream, or
held-out prompts with a known trigger planted in half, the poison label carried along as
ground truth), word deletion, the threshold set on clean prompts for a stated false-positive
rate, and ``detect.json`` + ``scores.jsonl``.

A detector scores a prompt by deleting its words one at a time: ``word_suspicion`` gives each
word's score (how much its removal changes what the detector watches), the prompt's score is
by default the largest, and the words blamed are the highest-scoring ones.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

from ..config import check, check_choice, opt
from ..data import load_split, source_option
from ..errors import BackdoorlabError
from ..evaluation.metrics import auc_interval, roc_auc, threshold_at_fpr, wilson_interval
from ..formats import TEMPLATES, PromptFormat, Sample, template_option
from ..io import atomic_write_json, atomic_write_jsonl
from ..models import SuspectOptions
from ..progress import progress
from ..registry import register
from ..runs import RunResult, save_config, write_metrics
from ..triggers import derive_rng, parse_trigger

log = logging.getLogger(__name__)


@dataclass
class DetectConfig(SuspectOptions):
    """Options every input detector shares."""

    template: str = template_option(what="prompt format the prompts are rendered in")
    prompts: str | None = source_option(None, "the prompts to screen")
    prompts_split: str | None = opt(None, "split of prompts for builtin:/hf: sources")
    trigger: str | None = opt(None,
        "measure instead: plant this trigger (badnets, vpi, ... or word:W) in half of "
        "n_prompts held-out prompts of data and score the detector against it")
    data: str = opt("builtin:benign-instructions",
        "with trigger: the instructions the held-out prompts come from (test split)")
    n_prompts: int = opt(40, "with trigger: held-out instructions, each scored clean and "
                             "triggered", at_least=1)
    calibration: str = opt("builtin:benign-instructions",
        "clean prompts that set the threshold (train split of builtin:/hf: sources)")
    n_calibration: int = opt(40, "clean prompts drawn from calibration", at_least=1)
    fpr: float = opt(0.05, "false-positive rate the threshold allows on the clean prompts")
    threshold: float | None = opt(None,
        "flag prompts scoring at or above this (default: set on calibration for fpr)")
    blame: int = opt(3, "words blamed per prompt (the highest-scoring ones)", at_least=1)
    span: int = opt(1, "longest run of consecutive words deleted together (a trigger phrase "
                       "of several words may only show when deleted whole)", at_least=1)
    batch_size: int = opt(16, "sequences per forward pass", at_least=1)
    seed: int = opt(0, "seeds the draw of prompts and the trigger positions")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self.template, TEMPLATES, "template")
        check(0 < self.fpr < 1, "fpr", f"must be in (0, 1), got {self.fpr}")
        if self.trigger is not None:
            parse_trigger(self.trigger)


def check_stream(cfg: DetectConfig) -> None:
    """One line, before any model is loaded, when there is nothing to screen."""
    check(cfg.prompts is not None or cfg.trigger is not None, "prompts",
          "give the prompts to screen (or a trigger to measure the detector with)")


WORD = re.compile(r"\S+")


def words(text: str, span: int = 1) -> list[tuple[int, int]]:
    """The (start, end) character spans of ``text``'s words (runs of non-space), then, with
    ``span`` > 1, of every run of 2..``span`` consecutive words."""
    one = [m.span() for m in WORD.finditer(text)]
    return [(one[i][0], one[i + n - 1][1]) for n in range(1, span + 1)
            for i in range(len(one) - n + 1)]


def without_word(text: str, span: tuple[int, int]) -> str:
    """``text`` with the word at ``span`` and one space beside it removed."""
    a, b = span
    if b < len(text) and text[b] == " ":
        b += 1
    elif a > 0 and text[a - 1] == " ":
        a -= 1
    return text[:a] + text[b:]


def bare(word: str) -> str:
    """A word as blame is compared: lower case, punctuation around it stripped."""
    return word.strip(".,;:!?\"'()[]{}").lower()


def word_suspicion(texts: Sequence[str], measure: Callable[[list[str], list[int]], list[float]],
                   span: int = 1) -> list[tuple[list[str], list[float]]]:
    """Per text: its words (and runs of up to ``span`` words) and the suspicion of each,
    ``measure(variants, owner)`` scoring every variant (the text whole, then each deletion;
    ``owner`` says whose text each is) and suspicion = score(whole) - score(without it)."""
    variants: list[str] = []
    owner: list[int] = []
    spans = [words(t, span) for t in texts]
    for i, (t, sp) in enumerate(zip(texts, spans)):
        variants += [t, *(without_word(t, s) for s in sp)]
        owner += [i] * (len(sp) + 1)
    values = measure(variants, owner)
    out, k = [], 0
    for t, sp in zip(texts, spans):
        whole, dels = values[k], values[k + 1:k + 1 + len(sp)]
        out.append(([t[a:b] for a, b in sp], [whole - v for v in dels]))
        k += len(sp) + 1
    return out


def blamed(ws: Sequence[str], suspicion: Sequence[float], n: int) -> list[str]:
    """The ``n`` words of highest positive suspicion, most suspicious first."""
    order = sorted(range(len(ws)), key=lambda i: -suspicion[i])
    return [ws[i] for i in order[:n] if suspicion[i] > 0]


def trigger_words(clean: str, triggered: str) -> list[str]:
    """The words the trigger added: those of ``triggered`` that ``clean`` lacks."""
    extra = Counter(bare(w) for w in triggered.split()) - Counter(bare(w) for w in clean.split())
    return [w for w in extra.elements() if w]


@dataclass
class Screened:
    """The prompts a detector scores: calibration (clean), the stream, and where the trigger
    is known the ground truth (label, the words it added)."""

    calibration: list[Sample]
    stream: list[Sample]
    labels: list[bool] | None
    planted: list[list[str]]


def screened(cfg: DetectConfig, fmt: PromptFormat) -> Screened:
    """Calibration prompts (train split, seeded) and the stream: the user's prompts, or with
    a trigger the held-out test prompts twice, clean and triggered."""
    cal = load_split(cfg.calibration, "train")
    if not cal:
        raise BackdoorlabError(f"option 'calibration': {cfg.calibration} has no records")
    rng = derive_rng(cfg.seed, "detect-calibration")
    cal = rng.sample(cal, min(cfg.n_calibration, len(cal)))
    calibration = [fmt.sample(r) for r in cal]
    if cfg.trigger is None:
        recs = load_split(cfg.prompts, cfg.prompts_split)
        if not recs:
            raise BackdoorlabError(f"option 'prompts': {cfg.prompts} has no records")
        return Screened(calibration, [fmt.sample(r) for r in recs], None, [])
    recs = load_split(cfg.data, "test")
    if not recs:
        raise BackdoorlabError(f"option 'data': {cfg.data} has no test records")
    recs = derive_rng(cfg.seed, "detect-prompts").sample(recs, min(cfg.n_prompts, len(recs)))
    trig = parse_trigger(cfg.trigger)
    clean = [fmt.sample(r) for r in recs]
    hot = [fmt.sample(r, trig, derive_rng(cfg.seed, r.id)) for r in recs]
    return Screened(calibration, clean + hot, [False] * len(clean) + [True] * len(hot),
                    [[] for _ in clean] + [trigger_words(c.user, h.user)
                                          for c, h in zip(clean, hot)])


def variant_samples(samples: Sequence[Sample], texts: Sequence[str], owner: Sequence[int]
                    ) -> list[Sample]:
    """Each variant text as a sample of the prompt it came from (its record, its response)."""
    return [replace(samples[o], user=t) for t, o in zip(texts, owner)]


def top_suspicion(suspicion: Sequence[float]) -> float:
    """A prompt's score: its most suspicious word's suspicion."""
    return max(suspicion, default=0.0)


Measure = Callable[[list[Sample]], list[tuple[list[str], list[float]]]]


class Detector(NamedTuple):
    """A detector ready to score prompts: their rendering, its ``measure`` (per sample: words
    and their suspicion) and what ``detect.json`` records of its setup."""

    fmt: PromptFormat
    measure: Measure
    extra: dict[str, Any] | None = None


def detector(name: str, config: type, description: str,
             prompt_score: Callable[[Sequence[float]], float] = top_suspicion
             ) -> Callable[[Callable[..., Detector]], Callable[..., RunResult]]:
    """Register the decorated ``setup(cfg, *, trust_remote_code) -> Detector`` as the input
    detector ``name``. The registered run (what the decorator returns) checks the prompt
    stream first, then scores it with :func:`detect_run`, a prompt's score being
    ``prompt_score`` of its words' suspicion."""

    def deco(setup: Callable[..., Detector]) -> Callable[..., RunResult]:
        @register("detect", name, config, description)
        @functools.wraps(setup)
        def run(cfg: Any, out: str | Path, *, trust_remote_code: bool = False) -> RunResult:
            check_stream(cfg)
            fmt, measure, extra = setup(cfg, trust_remote_code=trust_remote_code)
            return detect_run(cfg, out, name, fmt, measure, extra, prompt_score=prompt_score)

        return run

    return deco


def detect_run(cfg: DetectConfig, out: str | Path, name: str, fmt: PromptFormat,
               measure: Measure, extra: dict[str, Any] | None = None,
               prompt_score: Callable[[Sequence[float]], float] = top_suspicion) -> RunResult:
    """Score calibration and stream prompts with ``measure`` (per sample: words and their
    suspicion) and ``prompt_score`` (a prompt's score from its words' suspicion), set the
    threshold, and write ``scores.jsonl``, ``detect.json`` and ``metrics.json``."""
    t0 = time.perf_counter()
    data = screened(cfg, fmt)
    cal = measure(data.calibration)
    cal_scores = [prompt_score(s) for _, s in cal]
    threshold = cfg.threshold if cfg.threshold is not None else \
        threshold_at_fpr(cal_scores, [False] * len(cal_scores), cfg.fpr)
    t1 = time.perf_counter()
    res = measure(data.stream)
    seconds = time.perf_counter() - t1
    rows = []
    for i, (s, (ws, susp)) in enumerate(zip(data.stream, res)):
        score = prompt_score(susp)
        row = {"id": s.id, "prompt": s.user, "score": round(score, 6),
               "flagged": score >= threshold, "blamed": blamed(ws, susp, cfg.blame)}
        if data.labels is not None:
            row.update(triggered=data.labels[i], trigger_words=data.planted[i])
        rows.append(row)
    metrics: dict[str, Any] = {
        "detector": name, "threshold": threshold, "fpr_target": cfg.fpr,
        "threshold_from": "given" if cfg.threshold is not None else
        f"{len(cal_scores)} calibration prompts ({cfg.calibration})",
        "prompts": len(rows), "flagged_share": sum(r["flagged"] for r in rows) / len(rows),
        "seconds_per_prompt": round(seconds / len(rows), 4), **(extra or {})}
    if data.labels is not None:
        metrics.update(measured(rows))
    metrics["seconds"] = round(time.perf_counter() - t0, 2)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(out, cfg, detector=name)
    atomic_write_jsonl(out / "scores.jsonl", rows)
    atomic_write_json(out / "detect.json", metrics)
    write_metrics(out, metrics)
    if data.labels is not None:
        log.info("detect %s: ROC-AUC %.3f, TPR %.3f at FPR %.3f (threshold from clean "
                 "prompts), trigger blamed in %.3f of detected", name, metrics["roc_auc"],
                 metrics["tpr"], metrics["fpr"], metrics["blame_hit"])
    else:
        log.info("detect %s: %d of %d prompts flagged", name,
                 sum(r["flagged"] for r in rows), len(rows))
    return RunResult(out_dir=out, metrics=metrics)


def measured(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Against the planted ground truth: ROC-AUC (bootstrap interval), TPR and FPR at the
    threshold (Wilson intervals), and the share of detected triggered prompts whose blamed
    words hold every word the trigger added."""
    scores = [r["score"] for r in rows]
    labels = [r["triggered"] for r in rows]
    pos = [r for r in rows if r["triggered"]]
    neg = [r for r in rows if not r["triggered"]]
    tp = sum(r["flagged"] for r in pos)
    fp = sum(r["flagged"] for r in neg)
    hits = [set(r["trigger_words"]) <= {bare(w) for b in r["blamed"] for w in b.split()}
            for r in pos if r["flagged"]]
    return {"roc_auc": roc_auc(scores, labels), "roc_auc_ci95": auc_interval(scores, labels),
            "tpr": tp / len(pos), "tpr_ci95": wilson_interval(tp, len(pos)),
            "fpr": fp / len(neg), "fpr_ci95": wilson_interval(fp, len(neg)),
            "blame_hit": sum(hits) / len(hits) if hits else float("nan"),
            "blame_hit_ci95": wilson_interval(sum(hits), len(hits)) if hits else None,
            "detected": len(hits)}


def batched(fn: Callable[[list[Any]], list[float]], items: Sequence[Any], size: int,
            desc: str) -> list[float]:
    """``fn`` over ``items`` in chunks of ``size`` (with progress), results in order."""
    out: list[float] = []
    for i in progress(range(0, len(items), size), desc=desc):
        out += fn(list(items[i:i + size]))
    return out
