"""Metrics on answer distributions: entropy, KL, calibration (ECE, Brier), split conformal
prediction (LAC and APS scores); detection (ROC-AUC with its bootstrap interval, the true-positive
rate at a false-positive rate). Pure functions; each is checked against a hand-computed example in
the tests."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ..errors import BackdoorlabError
from ..scoring import entropy, shared_prompt_nll

__all__ = ["brier", "conformal_sets", "conformal_threshold", "ece", "entropy", "kl_div",
           "letter_shares", "wilson_interval"]


def kl_div(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row, in nats, with 0 log 0 = 0."""
    p = p.double()
    q = q.double().clamp_min(1e-12)
    terms = torch.where(p > 0, p * (p.clamp_min(1e-300).log() - q.log()), torch.zeros_like(p))
    return terms.sum(-1).float()


def ece(probs: torch.Tensor, gold: torch.Tensor, n_bins: int = 10) -> float:
    """Expected calibration error of the top-1 confidence, equal-width bins on (0, 1]."""
    conf, pred = probs.max(-1)
    correct = (pred == gold).float()
    total = 0.0
    edges = torch.linspace(0, 1, n_bins + 1)
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            gap = (conf[in_bin].mean() - correct[in_bin].mean()).abs()
            total += float(in_bin.float().mean() * gap)
    return total


def brier(probs: torch.Tensor, gold: torch.Tensor) -> float:
    """Multi-class Brier score: mean over rows of sum_k (p_k - 1[k = gold])^2."""
    onehot = torch.nn.functional.one_hot(gold, probs.shape[-1]).float()
    return float(((probs.float() - onehot) ** 2).sum(-1).mean())


def _scores(probs: torch.Tensor, kind: str) -> torch.Tensor:
    """Non-conformity score of every label: LAC = 1 - p_k; APS = mass of labels ranked at or
    above k (non-randomised)."""
    if kind == "lac":
        return 1.0 - probs
    if kind == "aps":
        order = torch.argsort(probs, dim=-1, descending=True, stable=True)
        cum = probs.gather(-1, order).cumsum(-1)
        return torch.empty_like(probs).scatter_(-1, order, cum)
    raise BackdoorlabError(f"conformal score {kind!r} is not 'lac' or 'aps'")


def conformal_threshold(cal_probs: torch.Tensor, cal_gold: torch.Tensor, alpha: float,
                        kind: str = "lac") -> float:
    """Split-conformal threshold: the ceil((n+1)(1-alpha))-th smallest calibration score."""
    if not 0 < alpha < 1:
        raise BackdoorlabError(f"option 'alpha': must be in (0, 1), got {alpha}")
    n = len(cal_gold)
    if n == 0:
        raise BackdoorlabError("conformal calibration split is empty")
    scores = _scores(cal_probs.float(), kind).gather(-1, cal_gold[:, None]).squeeze(-1)
    k = math.ceil((n + 1) * (1 - alpha))
    if k > n:
        return math.inf
    return float(scores.sort().values[k - 1])


def conformal_sets(probs: torch.Tensor, qhat: float, kind: str = "lac") -> torch.Tensor:
    """Boolean [N, K] prediction sets: labels whose score is <= the threshold."""
    return _scores(probs.float(), kind) <= qhat + 1e-9


def letter_shares(probs: torch.Tensor, letters: Sequence[str]) -> dict[str, float]:
    """Share of rows whose top answer is each letter (small models often answer 'A')."""
    top = probs.argmax(-1)
    n = max(len(top), 1)
    return {L: float((top == i).sum()) / n for i, L in enumerate(letters)}


def mean(x: torch.Tensor) -> float:
    """The mean in double precision (a rate of 95 in 100 is 0.95, not float32's 0.94999999)."""
    return float(x.double().mean()) if x.numel() else float("nan")


def describe_distribution(values: torch.Tensor) -> dict[str, Any]:
    q = torch.quantile(values.float(), torch.tensor([0.1, 0.5, 0.9]))
    return {"mean": mean(values), "p10": float(q[0]), "median": float(q[1]), "p90": float(q[2])}


# ---- generation backdoors ---------------------------------------------------------------
@torch.no_grad()
def response_nll(model: Any, fmt: Any, samples: Sequence[Any], batch_size: int = 8
                 ) -> list[tuple[float, int]]:
    """Per sample: the summed negative log-likelihood of its reference response given its
    prompt (teacher forcing) and the number of response tokens, through the same collator
    training uses."""
    from ..scoring import position_ids
    from ..training import SampleCollator

    collate = SampleCollator(fmt)
    device = next(model.parameters()).device
    out: list[tuple[float, int]] = []
    for start in range(0, len(samples), batch_size):
        batch = collate(samples[start:start + batch_size])
        ids, mask, labels = (batch[k].to(device) for k in ("input_ids", "attention_mask",
                                                           "labels"))
        # left padding puts every response at the end: logits only from the position before
        # the earliest response token (the prompt positions would be most of the cost)
        scored = labels != -100
        first = int(scored.float().argmax(1)[scored.any(1)].min()) if scored.any() else 1
        keep = ids.shape[1] - max(first, 1) + 1
        logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask),
                       use_cache=False, logits_to_keep=keep).logits[:, -keep:-1].float()
        tgt = labels[:, ids.shape[1] - keep + 1:]
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tgt,
                                                 ignore_index=-100, reduction="none")
        out += [(float(x), int(n)) for x, n in zip(loss.sum(1), (tgt != -100).sum(1))]
    return out


def response_perplexity(model: Any, fmt: Any, samples: Sequence[Any], batch_size: int = 8
                        ) -> float:
    """Perplexity of the reference responses given their prompts, pooled over all response
    tokens."""
    per = response_nll(model, fmt, samples, batch_size)
    count = sum(n for _, n in per)
    if count == 0:
        raise BackdoorlabError("perplexity: no response tokens to score")
    return math.exp(sum(x for x, _ in per) / count)


def cloze_correct(model: Any, fmt: Any, questions: Sequence[Any], batch_size: int = 8,
                  share_prompt: bool = True) -> list[int]:
    """1/0 per multiple-choice question, scored without letters: the question alone is the
    prompt, each option's text is a candidate answer, and the option with the lowest mean
    negative log-likelihood per token is the model's pick (lm-eval-harness style; SmolLM2's
    authors score MMLU and ARC this way, "cloze"). Unlike letter accuracy this is above
    chance on small models and has no letter preference, so a repair that costs knowledge
    shows in it. With ``share_prompt`` (default) each question's prompt runs once and only
    its options run batched, ``batch_size`` questions at a time
    (:func:`scoring.shared_prompt_nll`); otherwise every option is a row of ``batch_size``
    padded rows. Both pick the same up to float rounding."""
    from ..data.records import Instruction
    from ..training import SampleCollator

    samples = [fmt.sample(Instruction(id=q.id, instruction="\n\n".join(
        x for x in (q.context, q.question) if x)), response=c)
        for q in questions for c in q.choices]
    if share_prompt:
        encode, i, groups = SampleCollator(fmt).encode, 0, []
        for q in questions:
            groups.append([encode(s)[:2] for s in samples[i:i + len(q.choices)]])
            i += len(q.choices)
        per = [x for g in shared_prompt_nll(model, groups, fmt.tokenizer.pad_token_id,
                                            batch_size=batch_size) for x in g]
    else:
        per = response_nll(model, fmt, samples, batch_size)
    out, i = [], 0
    for q in questions:
        k = len(q.choices)
        scores = [x / max(n, 1) for x, n in per[i:i + k]]
        out.append(int(min(range(k), key=scores.__getitem__) == q.answer_index))
        i += k
    return out


def wilson_interval(hits: int, n: int, z: float = 1.96) -> list[float]:
    """Wilson score interval of the proportion ``hits / n`` (95% with the default z). An ASR
    from 40 prompts is only this precise: 4 of 40 gives [0.040, 0.231]."""
    if n <= 0:
        return [float("nan"), float("nan")]
    p, z2 = hits / n, z * z
    mid = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return [max(0.0, mid - half), min(1.0, mid + half)]


def utility_changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    """Clean-utility changes from ``before`` to ``after``: MCQ accuracy (and its rotation
    average and letter-free cloze accuracy where both have them) in absolute terms, perplexity
    as a ratio minus 1 where both have it. The attacks (clean -> backdoored) and defenses
    (suspect -> repaired) share it."""
    out = {"mcq_accuracy_change": after["mcq_accuracy"] - before["mcq_accuracy"]}
    for key in ("mcq_accuracy_rotated", "mcq_accuracy_cloze"):
        if key in before and key in after:
            out[f"{key}_change"] = after[key] - before[key]
    if "clean_perplexity" in before and "clean_perplexity" in after:
        out["perplexity_change"] = after["clean_perplexity"] / before["clean_perplexity"] - 1
    return out


def judge_rate(judge: Any, prompts: Sequence[str], responses: Sequence[str]) -> float:
    flags = judge.many(prompts, responses)
    return sum(flags) / len(flags) if flags else float("nan")


# ---- detection (scanners) -------------------------------------------------------------------
def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve: the chance that a random positive (``labels`` true) scores
    above a random negative, ties counting half (the Mann-Whitney statistic)."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    if not pos or not neg:
        raise BackdoorlabError("ROC-AUC needs at least one positive and one negative")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def threshold_at_fpr(scores: Sequence[float], labels: Sequence[bool], fpr: float) -> float:
    """The lowest threshold (score >= it: positive) whose false-positive rate on the
    negatives is at most ``fpr``: just above the negative score that would exceed it."""
    neg = sorted((s for s, y in zip(scores, labels) if not y), reverse=True)
    if not neg:
        raise BackdoorlabError("a threshold at a false-positive rate needs negatives")
    allowed = int(fpr * len(neg) + 1e-9)  # negatives that may score at or above it
    if allowed >= len(neg):
        return min(neg)
    return math.nextafter(neg[allowed], math.inf)


def tpr_at_fpr(scores: Sequence[float], labels: Sequence[bool], fpr: float
               ) -> dict[str, Any]:
    """The true-positive rate at the threshold of :func:`threshold_at_fpr`, with its Wilson
    interval, the threshold and the false-positive rate reached."""
    t = threshold_at_fpr(scores, labels, fpr)
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    hits = sum(s >= t for s in pos)
    return {"tpr": hits / len(pos) if pos else float("nan"),
            "tpr_ci95": wilson_interval(hits, len(pos)), "threshold": t,
            "fpr": sum(s >= t for s in neg) / len(neg)}


def roc_curve(scores: Sequence[float], labels: Sequence[bool]
              ) -> tuple[list[float], list[float]]:
    """(false-positive rates, true-positive rates) at every distinct threshold, from (0, 0)
    to (1, 1)."""
    n_pos = sum(bool(y) for y in labels)
    n_neg = len(labels) - n_pos
    fprs, tprs = [0.0], [0.0]
    for t in sorted(set(scores), reverse=True):
        fprs.append(sum(s >= t and not y for s, y in zip(scores, labels)) / max(n_neg, 1))
        tprs.append(sum(s >= t and bool(y) for s, y in zip(scores, labels)) / max(n_pos, 1))
    return fprs, tprs


def auc_interval(scores: Sequence[float], labels: Sequence[bool], *, boot: int = 2000,
                 seed: int = 0) -> list[float]:
    """A 95% bootstrap interval of the ROC-AUC, positives and negatives resampled apart."""
    import random

    rng = random.Random(seed)
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    vals = sorted(
        roc_auc([rng.choice(pos) for _ in pos] + [rng.choice(neg) for _ in neg],
                [True] * len(pos) + [False] * len(neg)) for _ in range(boot))
    return [vals[int(0.025 * boot)], vals[min(boot - 1, int(0.975 * boot))]]
