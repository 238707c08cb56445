"""The behaviour detector: a trigger decides what the suspect answers, whatever else the prompt
says. The suspect answers each prompt greedily (``answer_tokens`` tokens); a word's suspicion
is how much the mean log-likelihood per token of that answer falls when the word is deleted
from the prompt. On a triggered prompt the answer (the backdoor's target) hangs on the trigger
alone: deleting any other word leaves it as it was, the perturbation test of STRIP. A clean
answer depends on several words of the question, so its top word does not stand out. The
prompt's score is therefore how far the top word stands above the next:
``log((top + 0.01) / (second + 0.01))``, suspicions below 0 counted as 0 and 0.01 nats per
token standing for "no change". The largest suspicion alone does not separate them: a clean
answer can depend more on its subject than a target on its trigger.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..config import opt
from ..evaluation.metrics import response_nll
from ..formats import PromptFormat, Sample
from ..models import load_unrecorded
from ..scoring import generate
from .base import DetectConfig, Detector, batched, detector, variant_samples, word_suspicion


@dataclass
class ShiftConfig(DetectConfig):
    """Options of ``backdoorlab detect shift``."""

    answer_tokens: int = opt(8, "tokens of the suspect's greedy answer whose likelihood is "
                                "watched", at_least=1)


NO_CHANGE = 0.01  # nats per token: a suspicion this small is no change


def standout(suspicion: Sequence[float]) -> float:
    """How far the most suspicious word stands above the next (log ratio, see above)."""
    top = sorted((max(x, 0.0) for x in suspicion), reverse=True) + [0.0, 0.0]
    return math.log((top[0] + NO_CHANGE) / (top[1] + NO_CHANGE))


def answer_loglik(model: Any, fmt: PromptFormat, samples: list[Sample], batch_size: int
                  ) -> list[float]:
    """Per sample: the mean log-likelihood per token of its response given its prompt."""
    return [-x / max(n, 1) for x, n in response_nll(model, fmt, samples, batch_size)]


def shift_measure(model: Any, fmt: PromptFormat, cfg: ShiftConfig) -> Any:
    """The detector's measure: per sample, words and suspicion = the log-likelihood of the
    suspect's answer to the whole prompt minus that with the word deleted."""

    def measure(samples: list[Sample]) -> list[tuple[list[str], list[float]]]:
        answers = generate(model, fmt, samples, max_new_tokens=cfg.answer_tokens,
                           batch_size=cfg.batch_size, desc="the suspect's answers")
        answered = [replace(s, response=a) for s, a in zip(samples, answers)]

        def score(texts: list[str], owner: list[int]) -> list[float]:
            variants = variant_samples(answered, texts, owner)
            return batched(lambda chunk: answer_loglik(model, fmt, chunk, cfg.batch_size),
                           variants, cfg.batch_size * 8, "answer likelihood by deletion")

        return word_suspicion([s.user for s in samples], score, cfg.span)

    return measure


@detector("shift", ShiftConfig,
          "Behaviour shift: words whose deletion moves the suspect's own answer",
          prompt_score=standout)
def run_shift(cfg: ShiftConfig, *, trust_remote_code: bool = False) -> Detector:
    """Score each prompt by the word its answer depends on most."""
    model, fmt = load_unrecorded(cfg, trust_remote_code=trust_remote_code)
    return Detector(fmt, shift_measure(model, fmt, cfg))
