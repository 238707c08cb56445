"""ONION (Qi et al. 2021) as a detector: a trigger word is out of place, so deleting it makes
the prompt read more fluently to a clean language model. A word's suspicion is how much the
prompt's mean negative log-likelihood per token (as rendered for the model, from where the
user's text starts) falls when the word is deleted; the prompt's score is its most suspicious
word's. It needs no access to the suspect: the reference is by default the clean model the
suspect's adapter was trained from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..config import opt
from ..embedded import EMBEDDED_NAME
from ..formats import PromptFormat, Sample
from ..models import adapter_base, load_model
from ..scoring import check_context, left_pad, length_batches, model_device, position_ids
from .base import DetectConfig, Detector, batched, detector, word_suspicion


@dataclass
class OnionConfig(DetectConfig):
    """Options of ``backdoorlab detect onion``."""

    reference: str | None = opt(None,
        "the clean language model whose perplexity is read (default: the adapter's base, else "
        "model, else the embedded model)")


@torch.no_grad()
def text_nll(model: Any, fmt: PromptFormat, texts: list[str], batch_size: int) -> list[float]:
    """Per text: the mean negative log-likelihood per token of its rendered prompt, from the
    first token where it differs from the rendering of an empty message."""
    empty = fmt.prompt_ids("")
    seqs = [fmt.prompt_ids(t) for t in texts]
    check_context(model, [len(s) for s in seqs])
    starts = []
    for s in seqs:
        n = 0
        while n < min(len(s), len(empty)) - 1 and s[n] == empty[n]:
            n += 1
        starts.append(max(n, 1))
    out = [0.0] * len(seqs)
    dev = model_device(model)
    for idx in length_batches([len(s) for s in seqs], batch_size):
        ids, mask = left_pad([seqs[i] for i in idx], fmt.tokenizer.pad_token_id or 0)
        logits = model(input_ids=ids.to(dev), attention_mask=mask.to(dev),
                       position_ids=position_ids(mask).to(dev), use_cache=False).logits.float()
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2),
                                                ids[:, 1:].to(dev), reduction="none")
        width = ids.shape[1]
        for row, i in enumerate(idx):
            first = width - len(seqs[i]) + starts[i]  # left padding shifts every position
            out[i] = float(nll[row, first - 1:].mean())
    return out


def onion_measure(nll: Any, span: int = 1) -> Any:
    """The detector's measure: per sample, words and suspicion = mean NLL of the prompt
    minus that without the word, ``nll(texts)`` giving each text's mean NLL."""

    def measure(samples: list[Sample]) -> list[tuple[list[str], list[float]]]:
        return word_suspicion([s.user for s in samples], lambda texts, owner: nll(texts),
                              span)

    return measure


@detector("onion", OnionConfig,
          "ONION: words whose deletion makes the prompt more fluent to a clean model")
def run_onion(cfg: OnionConfig, *, trust_remote_code: bool = False) -> Detector:
    """Score each prompt by its least fluent word under the reference model."""
    ref = cfg.reference or (adapter_base(cfg.adapter) if cfg.adapter else None) or cfg.model \
        or EMBEDDED_NAME
    lm = load_model(ref, trust_remote_code=trust_remote_code)
    model = lm.model.eval()
    fmt = PromptFormat(lm.tokenizer, cfg.template)

    def nll(texts: list[str]) -> list[float]:
        return batched(lambda chunk: text_nll(model, fmt, chunk, cfg.batch_size), texts,
                       cfg.batch_size * 8, "ONION: prompt perplexity")

    return Detector(fmt, onion_measure(nll, cfg.span), {"reference": ref})
