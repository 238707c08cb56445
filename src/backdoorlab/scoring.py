"""Batched scoring core: option distributions of multiple-choice prompts and greedy generation.

Prompts are left-padded (so the last prompt token sits at the same index in every row), sorted
by length into buckets (little padding), and only the logits at that last position are computed
(``logits_to_keep=1``: the LM head over the whole sequence is a fifth of the work of a 135M
model; with ``token_ids`` only those rows of the head run). ``dtype="bfloat16"`` runs the
forward in bf16 autocast, about twice as fast on CPU; prompts whose two best logits lie
within ``recheck_margin`` are then scored again in fp32, so near-ties, which bf16 rounding
can flip, get the exact top answer.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from transformers.modeling_outputs import CausalLMOutputWithPast

from .errors import BackdoorlabError
from .formats import PromptFormat, Sample
from .progress import progress

DTYPES = ("float32", "bfloat16")
# bf16 re-check margin (logits): the smallest of 0.05/0.08/0.1/0.15/0.2 that kept >= 99.5% of
# top answers equal to fp32 at batch 8 and 32 on a calibration set (400 ARC-Easy dev
# questions, SmolLM2-135M); other models may need another value (BENCHMARKS.md)
RECHECK_MARGIN = 0.08
# transformers renamed the key-value cache from ``past_key_values`` to ``cache`` (the old name
# warns, and goes in 5.40); pass and read it under whichever name the installed version uses
CACHE_KW = ("cache" if "cache" in getattr(CausalLMOutputWithPast, "__dataclass_fields__", {})
            else "past_key_values")


def model_device(model: Any) -> torch.device:
    return next(model.parameters()).device


def autocast(model: Any, dtype: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on the model's device, or nothing for fp32."""
    if dtype not in DTYPES:
        raise BackdoorlabError(f"option 'dtype': {dtype!r} is not one of {', '.join(DTYPES)}")
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=model_device(model).type, dtype=torch.bfloat16)


MIN_SHARED_PREFIX = 8
# padded prompt tokens (rows x longest prompt) per scoring forward: bounds the memory of long
# prompts (attention and MLP temporaries grow with it) without splitting batches of short ones
SCORE_MAX_TOKENS = 8192


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token id lists into (input_ids, attention_mask)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s):
            ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s):] = 1
    return ids, mask


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, so left padding does not shift them."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def context_length(model: Any) -> int | None:
    """The longest sequence ``model`` was built for (its position table), if it says."""
    cfg = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(cfg, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_context(model: Any, lengths: Sequence[int], extra: int = 0, what: str = "prompt"
                  ) -> None:
    """Refuse, in one line and before any work, a sequence longer than the model's context
    (``extra``: tokens to be generated on top): it would be scored past the positions the
    model knows, silently wrong."""
    limit = context_length(model)
    if limit is None or not lengths:
        return
    longest = max(lengths)
    if longest + extra > limit:
        raise BackdoorlabError(
            f"a {what} of {longest} tokens{f' plus {extra} generated' if extra else ''} is "
            f"longer than the model's context of {limit} tokens; shorten the data or use a "
            "model with a longer context")


def padded_forward(model: Any, prompts: Sequence[Sequence[int]], pad_id: int, *,
                   keep: int = 1, hidden_states: bool = False) -> tuple[Any, torch.Tensor]:
    """One forward over ``prompts`` left-padded with real position ids, no cache, logits for
    the last ``keep`` positions only (and every hidden state with ``hidden_states``); returns
    the model output and the attention mask."""
    check_context(model, [len(p) for p in prompts])
    ids, mask = left_pad(prompts, pad_id)
    dev = model_device(model)
    out = model(input_ids=ids.to(dev), attention_mask=mask.to(dev),
                position_ids=position_ids(mask).to(dev), use_cache=False, logits_to_keep=keep,
                output_hidden_states=hidden_states)
    return out, mask


def length_batches(lengths: Sequence[int], batch_size: int, bucket: bool = True,
                   max_tokens: int | None = None) -> Iterator[list[int]]:
    """Index batches of at most ``batch_size`` rows; with ``bucket`` the indices are sorted by
    length first. With ``max_tokens`` a batch also ends before its padded size (rows x
    longest row) would pass that budget; a row longer than the budget is a batch alone."""
    if batch_size < 1:
        raise BackdoorlabError(f"option 'batch_size': must be >= 1, got {batch_size}")
    if max_tokens is not None and max_tokens < 1:
        raise BackdoorlabError(f"option 'max_batch_tokens': must be >= 1, got {max_tokens}")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i]) if bucket else list(
        range(len(lengths)))
    batch: list[int] = []
    width = 0
    for i in order:
        wider = max(width, lengths[i])
        if batch and (len(batch) == batch_size or
                      (max_tokens is not None and (len(batch) + 1) * wider > max_tokens)):
            yield batch
            batch, wider = [], lengths[i]
        batch.append(i)
        width = wider
    if batch:
        yield batch


def prefix_groups(prompts: Sequence[Sequence[int]], batch_size: int,
                  max_tokens: int | None = None) -> list[list[list[int]]]:
    """Groups of index batches: prompts in a group share a long common prefix.

    Prompts are sorted by their token ids and split where two neighbours share fewer than
    ``MIN_SHARED_PREFIX`` tokens beyond what all prompts share (a new subject or question
    stem); within a group they are bucketed by length so the batched suffixes carry little
    padding, at most ``batch_size`` rows and ``max_tokens`` padded tokens a batch. Prompts
    that share no stem with any other form one last group, so that sets without common stems
    (e.g. ARC) are still batched."""
    if batch_size < 1:
        raise BackdoorlabError(f"option 'batch_size': must be >= 1, got {batch_size}")
    if not prompts:
        return []
    order = sorted(range(len(prompts)), key=lambda i: list(prompts[i]))
    floor = common_prefix_len([prompts[i] for i in order]) + MIN_SHARED_PREFIX
    groups: list[list[int]] = [[order[0]]]
    for prev, cur in zip(order, order[1:]):
        if common_prefix_len([prompts[prev], prompts[cur]]) >= floor:
            groups[-1].append(cur)
        else:
            groups.append([cur])
    alone = [g[0] for g in groups if len(g) == 1]
    groups = [g for g in groups if len(g) > 1] + ([alone] if alone else [])
    out = []
    for group in groups:
        group.sort(key=lambda i: len(prompts[i]))
        out.append([[group[j] for j in b] for b in length_batches(
            [len(prompts[i]) for i in group], batch_size, bucket=False, max_tokens=max_tokens)])
    return out


def common_prefix_len(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix, leaving at least one token in every sequence."""
    limit = min(len(s) for s in seqs) - 1
    first = seqs[0]
    n = 0
    while n < limit and all(s[n] == first[n] for s in seqs):
        n += 1
    return n


@contextlib.contextmanager
def grouped_kv_attention(model: Any) -> Iterator[None]:
    """On CPU, let SDPA attend the grouped key/value heads directly (``enable_gqa``).

    transformers otherwise copies every key/value head once per query head when a padding mask
    is given, because CUDA's fast kernels take no mask with GQA; PyTorch's CPU kernel does.
    The result is the same; the copies were 12% of bf16 scoring time (BENCHMARKS.md). Uses
    transformers' own switch, ``TRANSFORMERS_SDPA_FORCE_GQA``, restored on exit."""
    key = "TRANSFORMERS_SDPA_FORCE_GQA"
    if model_device(model).type != "cpu" or key in os.environ or \
            tuple(int(x) for x in torch.__version__.split(".")[:2]) < (2, 5):
        yield
        return
    os.environ[key] = "1"
    try:
        yield
    finally:
        os.environ.pop(key, None)


@contextlib.contextmanager
def fp32_head(model: Any, dtype: str, token_ids: Sequence[int] | None = None
              ) -> Iterator[bool]:
    """LM head in fp32 under bf16, and only the rows of ``token_ids`` when given.

    fp32: logits of magnitude 10-20 rounded to bf16 lose ~0.06, enough to flip near-tie
    answers (measured: 89% -> 97% agreement). Rows: the 49k-row head is memory-bound at
    small batch (7% of bf16 scoring time) when only a few option letters are read. Rows are
    taken only from a plain ``nn.Linear`` head (not one wrapped by an adapter); whatever the
    model does to logits afterwards (scaling, soft-capping) is elementwise, so it still
    applies. Yields whether the head now returns only the ``token_ids`` columns."""
    head = model.get_output_embeddings()
    # offloaded weights (accelerate) live on "meta" until its own hook loads them
    plain = type(head) is torch.nn.Linear and head.weight.device.type != "meta"
    if head is None or (dtype == "float32" and (token_ids is None or not plain)):
        yield False
        return
    if plain:
        rows = slice(None) if token_ids is None else torch.as_tensor(
            list(token_ids), device=head.weight.device)
        weight = head.weight[rows].float()
        bias = head.bias[rows].float() if head.bias is not None else None

        def forward(x: torch.Tensor) -> torch.Tensor:
            with torch.autocast(device_type=x.device.type, enabled=False):
                return torch.nn.functional.linear(x.to(weight.device).float(), weight, bias)

        outer = head.__dict__.get("forward")  # nested use: put back what was there
        head.forward = forward
        try:
            yield token_ids is not None
        finally:
            if outer is None:
                del head.forward
            else:
                head.forward = outer
        return

    def hook(module: Any, args: tuple, output: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=args[0].device.type, enabled=False):
            bias = module.bias.float() if getattr(module, "bias", None) is not None else None
            return torch.nn.functional.linear(args[0].float(), module.weight.float(), bias)

    handle = head.register_forward_hook(hook)
    try:
        yield False
    finally:
        handle.remove()


def _extend_cache(model: Any, cache: Any, ids: Sequence[int], start: int) -> Any:
    """Run ``ids`` (batch 1) after ``cache`` (which holds ``start`` tokens) and return it."""
    device = model_device(model)
    if not ids:
        return cache
    x = torch.tensor([list(ids)], device=device)
    mask = torch.ones((1, start + len(ids)), dtype=torch.long, device=device)
    out = model(input_ids=x, attention_mask=mask, use_cache=True, logits_to_keep=1,
                **{CACHE_KW: cache})
    return getattr(out, CACHE_KW)


def _suffix_forward(model: Any, batch: Sequence[Sequence[int]], pad_id: int, cache: Any,
                    n_pre: int) -> torch.Tensor:
    """Last-token logits of ``batch``, whose first ``n_pre`` tokens are already in ``cache``."""
    device = model_device(model)
    ids, mask = left_pad([s[n_pre:] for s in batch], pad_id)
    ids, mask = ids.to(device), mask.to(device)
    pos = position_ids(mask) + n_pre
    if cache is not None:
        cache = copy.deepcopy(cache)
        cache.batch_repeat_interleave(len(batch))
        mask = torch.cat([torch.ones(len(batch), n_pre, dtype=mask.dtype, device=device), mask],
                         dim=1)
    return model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1,
                 use_cache=cache is not None, **{CACHE_KW: cache}).logits[:, -1, :]


def _prompt_len(encoded: Sequence[tuple[Sequence[int], Sequence[int]]]) -> int:
    """Tokens that every sequence of a group shares, up to the one before the first labelled
    token (whose logits predict it): what can run once for the group."""
    first = min(next((i for i, x in enumerate(lab) if x != -100), len(lab))
                for _, lab in encoded)
    return max(0, min(common_prefix_len([list(ids) for ids, _ in encoded]), first - 1))


@torch.no_grad()
def shared_prompt_nll(model: Any, groups: Sequence[Sequence[tuple[Sequence[int], Sequence[int]]]],
                      pad_id: int, *, batch_size: int = 8, desc: str | None = None
                      ) -> list[list[tuple[float, int]]]:
    """Per group of sequences that share their prompt (e.g. one question's answer options),
    per sequence: the summed negative log-likelihood and count of its labelled tokens
    (labels not -100).

    ``batch_size`` groups at a time: their prompts run once, left-padded, into a key/value
    cache, which is then repeated for each group's sequences; only the rest of the sequences
    runs, batched. The same figures as a plain padded forward up to float rounding, at a
    fraction of the cost when the prompts are long and the answers short (letter-free MCQ
    scoring)."""
    check_context(model, [len(ids) for g in groups for ids, _ in g], what="sequence")
    out: list[list[tuple[float, int]]] = []
    dev = model_device(model)
    chunks = [groups[k:k + batch_size] for k in range(0, len(groups), batch_size)]
    with grouped_kv_attention(model):
        for chunk in progress(chunks, desc=desc, total=len(chunks)):
            n_pre = [_prompt_len(g) for g in chunk]
            if min(n_pre) < 1:  # a prompt-less group: no cache for this chunk
                n_pre = [0] * len(chunk)
            rows = [(j, list(ids), list(lab)) for j, g in enumerate(chunk) for ids, lab in g]
            owner = torch.tensor([j for j, _, _ in rows], device=dev)
            cache, pre_mask = None, torch.zeros((len(rows), 0), dtype=torch.long, device=dev)
            if n_pre[0]:
                ids, mask = left_pad([g[0][0][:n] for g, n in zip(chunk, n_pre)], pad_id)
                ids, mask = ids.to(dev), mask.to(dev)
                cache = getattr(model(input_ids=ids, attention_mask=mask, use_cache=True,
                                      position_ids=position_ids(mask), logits_to_keep=1),
                                CACHE_KW)
                cache.batch_select_indices(owner)
                pre_mask = mask[owner]
            ids, mask = left_pad([x[n_pre[j]:] for j, x, _ in rows], pad_id)
            ids, mask = ids.to(dev), mask.to(dev)
            width = ids.shape[1]
            labels = torch.full((len(rows), width), -100, dtype=torch.long)
            for i, (j, _, lab) in enumerate(rows):
                tail = lab[n_pre[j]:]
                if tail:
                    labels[i, width - len(tail):] = torch.tensor(tail)
            pos = position_ids(mask) + torch.tensor(n_pre, device=dev)[owner, None]
            logits = model(input_ids=ids, attention_mask=torch.cat([pre_mask, mask], dim=1),
                           position_ids=pos, use_cache=cache is not None, logits_to_keep=width,
                           **{CACHE_KW: cache}).logits
            tgt = labels[:, 1:].to(dev)
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].float().transpose(1, 2), tgt, ignore_index=-100,
                reduction="none")
            per = [(float(x), int(n)) for x, n in zip(loss.sum(1), (tgt != -100).sum(1))]
            for g in chunk:
                out.append(per[:len(g)])
                per = per[len(g):]
    return out


@torch.no_grad()
def last_token_logits(
    model: Any,
    prompts: Sequence[Sequence[int]],
    pad_id: int,
    *,
    batch_size: int = 16,
    dtype: str = "float32",
    share_prefix: bool = True,
    token_ids: Sequence[int] | None = None,
    desc: str | None = None,
    recheck_margin: float | None = None,
) -> torch.Tensor:
    """Logits (float32) at the last token of each prompt, optionally only at ``token_ids``.

    With ``share_prefix`` (default) the prefix all prompts share runs once, each group's
    further shared prefix runs once on top of it, and only the differing suffixes run batched
    (key/value caches repeated per row). Otherwise prompts are simply bucketed by length.
    Both give the plain forward's logits up to float rounding. Under bf16, rows whose two
    best logits differ by less than ``recheck_margin`` (default :data:`RECHECK_MARGIN`; 0: no
    re-check) are scored again in fp32."""
    check_context(model, [len(p) for p in prompts])
    device = model_device(model)
    width = len(token_ids) if token_ids is not None else model.config.vocab_size
    out = torch.empty((len(prompts), width), dtype=torch.float32)
    if not prompts:
        return out
    sel = torch.tensor(token_ids, device=device) if token_ids is not None else None
    if share_prefix:
        groups = prefix_groups(prompts, batch_size, SCORE_MAX_TOKENS)
    else:
        groups = [[b] for b in length_batches([len(p) for p in prompts], batch_size,
                                              max_tokens=SCORE_MAX_TOKENS)]
    n_all = common_prefix_len(prompts) if share_prefix else 0
    use_cache = n_all >= MIN_SHARED_PREFIX
    with autocast(model, dtype), grouped_kv_attention(model), \
            fp32_head(model, dtype, token_ids) as only_rows:
        root = _extend_cache(model, None, prompts[0][:n_all], 0) if use_cache else None
        for group in progress(groups, desc=desc, total=len(groups)):
            members = [prompts[i] for batch in group for i in batch]
            n_grp = common_prefix_len(members) if use_cache and len(members) > 1 else n_all
            cache = None
            if use_cache:
                cache = _extend_cache(model, copy.deepcopy(root), members[0][n_all:n_grp], n_all)
            for idx in group:
                batch = [prompts[i] for i in idx]
                n_pre = n_grp if use_cache else 0
                logits = _suffix_forward(model, batch, pad_id, cache, n_pre)
                if sel is not None and not only_rows:
                    logits = logits.index_select(-1, sel)
                out[idx] = logits.float().cpu()
    margin = RECHECK_MARGIN if recheck_margin is None else recheck_margin
    if dtype != "float32" and margin > 0 and width > 1:
        best = out.topk(2, dim=-1).values
        close = (best[:, 0] - best[:, 1] < margin).nonzero().flatten().tolist()
        if close:
            out[close] = last_token_logits(model, [prompts[i] for i in close], pad_id,
                                           batch_size=batch_size, share_prefix=share_prefix,
                                           token_ids=token_ids)
    return out


def option_distribution(
    model: Any,
    fmt: PromptFormat,
    samples: Sequence[Sample],
    *,
    batch_size: int = 16,
    dtype: str = "float32",
    share_prefix: bool = True,
    desc: str | None = None,
    recheck_margin: float | None = None,
) -> torch.Tensor:
    """Probabilities over each question's option letters, renormalised over the options.

    All samples must have the same number of options (pad with :func:`add_abstain_options`
    or score groups separately). Returns ``[N, K]``."""
    if not samples:
        return torch.empty((0, 0))
    letters = samples[0].record.letters
    if any(s.record.letters != letters for s in samples):
        raise BackdoorlabError("option_distribution: every question needs the same options count")
    letter_ids = fmt.option_token_ids(letters)
    prompts = [fmt.encode(s.user).prompt_ids for s in samples]
    logits = last_token_logits(model, prompts, fmt.tokenizer.pad_token_id,
                               batch_size=batch_size, dtype=dtype,
                               share_prefix=share_prefix, token_ids=letter_ids, desc=desc,
                               recheck_margin=recheck_margin)
    return torch.softmax(logits, dim=-1)


def mcq_top(model: Any, fmt: PromptFormat, samples: Sequence[Sample], *,
            batch_size: int = 16) -> list[int]:
    """Index of the top option per question. Any mix of option counts (each count scored as
    a group); order follows ``samples``."""
    out = [0] * len(samples)
    for n_opts in sorted({len(s.record.letters) for s in samples}):
        idx = [i for i, s in enumerate(samples) if len(s.record.letters) == n_opts]
        top = option_distribution(model, fmt, [samples[i] for i in idx],
                                  batch_size=batch_size).argmax(-1)
        for i, t in zip(idx, top.tolist()):
            out[i] = t
    return out


def mcq_correct(model: Any, fmt: PromptFormat, samples: Sequence[Sample], *,
                batch_size: int = 16) -> list[int]:
    """1/0 per question: is the top option (:func:`mcq_top`) the answer?"""
    top = mcq_top(model, fmt, samples, batch_size=batch_size)
    return [int(t == s.record.answer_index) for t, s in zip(top, samples)]


def mcq_accuracy(model: Any, fmt: PromptFormat, samples: Sequence[Sample], *,
                 batch_size: int = 16) -> float:
    """Accuracy over questions of any mix of option counts."""
    if not samples:
        return float("nan")
    return sum(mcq_correct(model, fmt, samples, batch_size=batch_size)) / len(samples)


def rotation_average(correct: Sequence[int], samples: Sequence[Sample]) -> float:
    """Accuracy over questions scored in every cyclic order of their options (the samples of
    :func:`backdoorlab.data.rotations`, all of them): each question weighs 1, split evenly
    over its k orders, so a model that always picks the same letter scores exactly 1/k."""
    w = [1 / len(s.record.choices) for s in samples]
    return sum(c * x for c, x in zip(correct, w)) / sum(w) if samples else float("nan")


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in nats along the last axis."""
    return -(p * torch.log(p.clamp_min(1e-12))).sum(-1)


def mcq_metrics(probs: torch.Tensor, samples: Sequence[Sample]) -> dict[str, Any]:
    """Accuracy, mean entropy and the letter distribution of the top answers."""
    letters = samples[0].record.letters
    top = probs.argmax(-1).tolist()
    gold = [s.record.answer_index for s in samples]
    counts = {L: 0 for L in letters}
    for t in top:
        counts[letters[t]] += 1
    n = len(samples)
    return {
        "n": n,
        "accuracy": sum(t == g for t, g in zip(top, gold)) / n,
        "mean_entropy": float(entropy(probs).mean()),
        "max_entropy": math.log(len(letters)),
        "top_answer_share": {k: v / n for k, v in counts.items()},
    }


@torch.no_grad()
def generate(
    model: Any,
    fmt: PromptFormat,
    samples: Sequence[Sample | str],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 8,
    dtype: str = "float32",
    desc: str | None = None,
) -> list[str]:
    """Greedy continuations of each prompt (decoded, special tokens dropped)."""
    if max_new_tokens < 1:
        raise BackdoorlabError(f"option 'max_new_tokens': must be >= 1, got {max_new_tokens}")
    device = model_device(model)
    tok = fmt.tokenizer
    prompts = [fmt.encode(s.user if isinstance(s, Sample) else s).prompt_ids for s in samples]
    check_context(model, [len(p) for p in prompts], max_new_tokens)
    stop = fmt.stop_token_ids()
    outs: list[str] = [""] * len(prompts)
    batches = list(length_batches([len(p) for p in prompts], batch_size,
                                  max_tokens=SCORE_MAX_TOKENS))
    with autocast(model, dtype):
        for idx in progress(batches, desc=desc, total=len(batches)):
            ids, mask = left_pad([prompts[i] for i in idx], tok.pad_token_id)
            gen = model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device),
                max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stop,
                pad_token_id=tok.pad_token_id, temperature=None, top_p=None, top_k=None,
            )
            for row, i in enumerate(idx):
                outs[i] = tok.decode(gen[row, ids.shape[1]:], skip_special_tokens=True).strip()
    return outs
