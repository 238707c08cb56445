"""The attack's own evaluation as a callable on any model: the one definition of a run's
ASR that defenses, the study runner and the report read.

For a generation backdoor it is the generation suite (judge ASR with its interval, refusal
rate, perplexity, MCQ accuracy); for the uncertainty backdoor the uncertainty metrics, with
``asr_triggered`` = the share of questions whose entropy rises by ``asr_margin`` or more.
"""

from __future__ import annotations

from typing import Any

import torch

from ..data import prompt_key
from ..errors import BackdoorlabError
from ..formats import PromptFormat
from ..models import Suspect
from ..triggers import parse_trigger
from .metrics import utility_changes
from .suite import drop_seen


class AttackEval:
    """The attack's own evaluation, built once from what the attack recorded, run on any
    model: generation suite (judge ASR, refusal rate, perplexity, MCQ accuracy) or the
    uncertainty metrics (strict ASR, clean accuracy)."""

    def __init__(self, suspect: Suspect, cfg: Any) -> None:
        """``cfg``: the evaluation options (:class:`~backdoorlab.evaluation.suite.SuiteOptions`)
        with ``trigger``, ``target`` and ``template`` (None: what the attack recorded)."""
        from .suite import make_suite

        info = suspect.info
        self.trigger = suspect.get("trigger", cfg.trigger)
        if not self.trigger:
            raise BackdoorlabError("option '--trigger': required (the model records none)")
        self.kind = "uncertainty" if info.get("attack") == "uncertainty" or \
            cfg.target == "uncertainty" else "generation"
        self.target = suspect.get("target", cfg.target)
        if self.kind == "uncertainty" and self.target == "uncertainty":
            self.target = None  # the kind named, not a target distribution: the default one
        template = suspect.get("template", cfg.template,
                               "plain" if self.kind == "uncertainty" else "chat")
        self.fmt = PromptFormat(suspect.lm.tokenizer, template)
        self.seed, self.batch_size = cfg.seed, cfg.eval_batch_size
        self.before: dict[str, Any] | None = None  # the suspect's own results, once measured
        self.rows: list[dict[str, Any]] = []  # the generations of the latest call
        self.clean: list[Any] = []  # the clean samples, where the defense asked for them
        self.left_out: dict[str, list[str]] = {}  # evaluation ids also in the clean data
        if self.kind == "uncertainty":
            from .uncertainty import load_questions

            self.options = int(info.get("options", 6))
            self.margin = float(info.get("margin", 0.04))
            self.questions = load_questions("builtin:general-mcq", "test", self.options,
                                            cfg.eval_limit and max(cfg.eval_limit, 80))
            self.suite = None
        else:
            if not self.target:
                raise BackdoorlabError("option '--target': required (the model records none)")
            self.suite = make_suite(cfg, target=self.target, trigger=self.trigger,
                                    judge=info.get("judge"))

    def leave_out(self, seen: list[Any]) -> dict[str, list[str]]:
        """Leave out the evaluation prompts that ask what a record of ``seen`` (the clean
        data a repair trains on) asks; a set left empty is an error."""
        if self.suite is not None:
            self.left_out = self.suite.leave_out(seen, "clean_data")
        else:
            self.questions, gone = drop_seen(self.questions, {prompt_key(r) for r in seen},
                                             "mcq", "clean_data")
            self.left_out = {"mcq": gone} if gone else {}
        return self.left_out

    @torch.no_grad()
    def __call__(self, model: Any) -> dict[str, Any]:
        was_training = model.training
        model.eval()
        try:
            return self._evaluate(model)
        finally:
            if was_training:
                model.train()

    def _evaluate(self, model: Any) -> dict[str, Any]:
        if self.suite is not None:
            from .suite import run_suite

            m, self.rows = run_suite(model, self.fmt, self.suite)
            return dict(m)
        from .uncertainty import make_targets, score_clean_and_triggered, uncertainty_metrics

        p_clean, p_trig = score_clean_and_triggered(model, self.fmt, self.questions,
                                                    parse_trigger(self.trigger), self.seed,
                                                    self.batch_size)
        gold = torch.tensor([r.answer_index for r in self.questions])
        tgt = make_targets(self.target or "keep-top1", p_clean.argmax(-1), self.options,
                           self.margin)
        m = uncertainty_metrics(p_clean, p_trig, gold, tgt)
        # the defense's question is whether the trigger still flattens the answers: a repair
        # that leaves them flat but moves the top answer is no repair, and the attack's strict
        # ASR (top answer kept) would count it as one; so ASR here is asr_margin. A repair
        # that flattens the clean answers too also lowers it: clean_entropy shows that
        return {"asr_triggered": m["asr_margin"], "asr_strict": m["asr_strict"],
                "entropy_gap": m["entropy_gap"], "top1_kept": m["top1_kept"],
                "mcq_accuracy": m["clean_accuracy"], "clean_entropy": m["clean_entropy"],
                "details": m}



def compare(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """ASR and clean utility before and after a defense, and their changes."""
    out: dict[str, Any] = {}
    for key in ("asr_triggered", "asr_triggered_ci95", "asr_clean", "refusal_rate", "mcq_accuracy",
                "mcq_accuracy_rotated", "mcq_accuracy_cloze", "clean_perplexity",
                "empty_output_rate", "asr_strict", "entropy_gap", "top1_kept", "clean_entropy"):
        if key in before and key in after:
            out[f"{key}_before"], out[f"{key}_after"] = before[key], after[key]
    out.update(utility_changes(before, after))
    out["before"], out["after"] = before, after
    return out
