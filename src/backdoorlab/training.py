"""Training-side encoding: samples -> padded batches with response-only labels.

The collator calls :meth:`PromptFormat.encode`, the same function evaluation uses, so the prompt
tokens a model is trained on are exactly those it is evaluated on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .formats import PromptFormat, Sample


class SampleCollator:
    """Pads encoded samples on the left and carries the poison label and answer position.

    Batch keys: ``input_ids``, ``attention_mask``, ``labels`` (-100 on prompt and padding),
    ``answer_index`` (index of the last prompt token in the padded row), ``poisoned``.
    """

    def __init__(self, fmt: PromptFormat, max_length: int | None = None) -> None:
        self.fmt = fmt
        self.max_length = max_length

    def encode(self, sample: Sample) -> tuple[list[int], list[int], int]:
        enc = self.fmt.encode(sample)
        ids, labels = enc.input_ids, enc.labels
        if self.max_length is not None and len(ids) > self.max_length:
            keep = max(self.max_length, enc.prompt_len)  # never cut the prompt
            ids, labels = ids[:keep], labels[:keep]
        return ids, labels, enc.answer_index

    def __call__(self, samples: Sequence[Sample]) -> dict[str, Any]:
        encoded = [self.encode(s) for s in samples]
        width = max(len(ids) for ids, _, _ in encoded)
        pad = self.fmt.tokenizer.pad_token_id
        n = len(samples)
        input_ids = torch.full((n, width), pad, dtype=torch.long)
        labels = torch.full((n, width), -100, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        answer_index = torch.empty(n, dtype=torch.long)
        for i, (ids, lab, ans) in enumerate(encoded):
            off = width - len(ids)
            input_ids[i, off:] = torch.tensor(ids)
            labels[i, off:] = torch.tensor(lab)
            mask[i, off:] = 1
            answer_index[i] = off + ans
        return {
            "input_ids": input_ids,
            "attention_mask": mask,
            "labels": labels,
            "answer_index": answer_index,
            "poisoned": torch.tensor([s.poisoned for s in samples], dtype=torch.bool),
        }
