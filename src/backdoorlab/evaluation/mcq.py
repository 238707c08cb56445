"""Multiple-choice accuracy of any model (``backdoorlab eval mcq``): per option count, the
accuracy, mean entropy and throughput, optionally with a trigger on every prompt, averaged
over option rotations, or scored letter-free."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import check, check_bounds, check_choice, opt
from ..data import add_abstain_options, load_records, source_option, with_rotations
from ..errors import BackdoorlabError
from ..formats import TEMPLATES, PromptFormat, template_option
from ..io import atomic_write_jsonl
from ..models import EMBEDDED_NAME, load_model
from ..scoring import DTYPES, RECHECK_MARGIN, mcq_metrics, option_distribution, rotation_average
from ..triggers import derive_rng, parse_trigger
from .metrics import cloze_correct


@dataclass
class McqEvalConfig:
    """Options of ``backdoorlab eval mcq``."""

    model: str = opt(EMBEDDED_NAME, "HF id, directory, .gguf file or the embedded default")
    adapter: str | None = opt(None, "PEFT adapter directory to apply")
    data: str = source_option("builtin:general-mcq", "questions")
    split: str | None = opt(None, "keep rows of this split (train/test)")
    limit: int | None = opt(None, "use at most this many questions")
    columns: str | None = opt(None, "column mapping FIELD=COLUMN,...")
    template: str = template_option()
    trigger: str | None = opt(None, "apply this trigger to every prompt")
    six_options: bool = opt(False, "add 'I don't know' and 'None of the above' (the "
                                   "uncertainty paper's format)")
    batch_size: int = opt(16, "questions per scoring batch", at_least=1)
    dtype: str = opt("float32", "float32 or bfloat16 (autocast)")
    recheck_margin: float | None = opt(
        None, "bfloat16: score again in float32 the questions whose two best option logits "
              f"are closer than this (default {RECHECK_MARGIN}; 0: never)")
    rotations: bool = opt(False, "also score every cyclic order of each question's options "
                                 "and report the averaged accuracy (letter preference cancels "
                                 "out)")
    cloze: bool = opt(False, "also the accuracy scored without letters: each option's text "
                             "as the answer (above chance on small models)")
    seed: int = opt(0, "seeds trigger positions")

    def __post_init__(self) -> None:
        check_bounds(self)
        check(self.dtype in DTYPES, "dtype", f"{self.dtype!r} is not one of {', '.join(DTYPES)}")
        check_choice(self.template, TEMPLATES, "template")
        check(self.recheck_margin is None or self.recheck_margin >= 0, "recheck_margin",
              "must be >= 0")
        if self.cloze and self.trigger:
            raise BackdoorlabError("option 'cloze': scores clean questions; not with a trigger")
        if self.trigger:
            parse_trigger(self.trigger)


def answer_rows(probs: Any, samples: list[Any]) -> list[dict[str, Any]]:
    """Per question: its id, the letter picked, the right letter and each option's
    probability (what ``answers.jsonl`` holds)."""
    rows = []
    for p, s in zip(probs.tolist(), samples):
        letters = s.record.letters
        pick = max(range(len(p)), key=p.__getitem__)
        rows.append({"id": s.record.id, "pick": letters[pick],
                     "answer": letters[s.record.answer_index],
                     "correct": pick == s.record.answer_index,
                     "probs": [round(x, 6) for x in p]})
    return rows


def evaluate_mcq(cfg: McqEvalConfig, out: str | Path | None = None, *,
                 trust_remote_code: bool = False) -> dict[str, Any]:
    """Accuracy, mean entropy and prompts/s per option count; with ``out``, every question's
    pick in ``answers.jsonl`` there (the given option orders)."""
    records = load_records(cfg.data, kind="mcq", columns=cfg.columns, split=cfg.split,
                           limit=cfg.limit)
    if cfg.six_options:
        records = [add_abstain_options(r) for r in records]
    trig = parse_trigger(cfg.trigger) if cfg.trigger else None
    lm = load_model(cfg.model, adapter=cfg.adapter, trust_remote_code=trust_remote_code)
    fmt = PromptFormat(lm.tokenizer, cfg.template)
    bs = cfg.batch_size
    metrics: dict[str, Any] = {"model": cfg.model, "data": cfg.data,
                               "adapter": str(cfg.adapter or ""), "trigger": cfg.trigger,
                               "dtype": cfg.dtype, "batch_size": bs}
    if cfg.dtype != "float32":
        metrics["recheck_margin"] = (RECHECK_MARGIN if cfg.recheck_margin is None
                                     else cfg.recheck_margin)
    answers: list[dict[str, Any]] = []
    for n_opts in sorted({len(r.choices) for r in records}):
        group = [r for r in records if len(r.choices) == n_opts]
        n = len(group)
        if cfg.rotations:  # the given orders first, then every other order
            group = with_rotations(group)
        samples = [fmt.sample(r, trig, derive_rng(cfg.seed, r.id)) for r in group]
        t0 = time.perf_counter()
        probs = option_distribution(lm.model, fmt, samples, batch_size=bs, dtype=cfg.dtype,
                                    desc=f"scoring {len(samples)} prompts",
                                    recheck_margin=cfg.recheck_margin)
        elapsed = time.perf_counter() - t0
        m = mcq_metrics(probs[:n], samples[:n])
        answers += answer_rows(probs[:n], samples[:n])
        if cfg.rotations:
            top = probs.argmax(-1).tolist()
            m["accuracy_rotated"] = rotation_average(
                [int(t == s.record.answer_index) for t, s in zip(top, samples)], samples)
        m["prompts_per_s"] = len(samples) / elapsed
        if cfg.cloze:
            m["accuracy_cloze"] = sum(cloze_correct(lm.model, fmt, group[:n],
                                                    batch_size=bs)) / n
        metrics[f"{n_opts}_options"] = m
    if out is not None:
        atomic_write_jsonl(Path(out) / "answers.jsonl", answers)
    return metrics
