"""CleanGen (Li et al. 2024, arXiv 2406.12257): decoding that lets a clean reference model
veto the suspect's tokens.

The suspect proposes ``k`` tokens greedily; the reference scores them in one forward pass.
The first proposed token whose probability under the suspect is more than ``alpha`` times
its probability under the reference is replaced by the reference's own greedy token, the
proposals after it are dropped, and decoding goes on from there. A backdoor's target
(a refusal, an insult, planted code) is likely under the suspect only, so its first token is
vetoed; a clean answer's tokens pass.

The output does not depend on ``k``: every token is the suspect's greedy choice unless the
reference vetoes it, given the same kept prefix, whatever the window. ``k`` sets the cost only.

The reference is by default the clean base the suspect's adapter was trained on: the same
weights with the adapter switched off, so no second model is loaded. Then (a LoRA adapter)
both run in one batch of twice the rows, the adapter on for the first half and off for the
second (PEFT's mixed-adapter batches), one token a step: each token is checked as it is
written, so no proposal is ever thrown away, and one forward pass of 2 x rows costs less than
two of ``rows`` (on the 2-core CPU 1.5x one suspect step rather than 1.9x). Any model with the
same vocabulary can be given instead; then the suspect proposes ``k`` tokens and the reference
checks them in one pass. Both keep a key/value cache. In a batch every row keeps its own number
of tokens per round: the proposals a row drops stay in the caches but are masked out of its
attention, so a veto in one row costs the others nothing. A row that has finished leaves the
batch and the caches.

The saved "repair" is the decoding configuration (``cleangen.json``) beside the suspect; it
changes generated text only. Teacher-forced measures (multiple-choice accuracy, the
perplexity of reference answers, the uncertainty backdoor's answer distributions) read the
suspect's own probabilities and are unchanged by it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import check, opt
from ..errors import BackdoorlabError
from ..evaluation.attack_eval import AttackEval
from ..evaluation.metrics import response_perplexity
from ..io import atomic_write_json
from ..models import Suspect, check_same_vocabulary, load_model
from ..registry import register
from ..runs import read_json
from ..scoring import CACHE_KW, generate, position_ids
from .base import DefenseConfig, run_defense


def first_suspicious(p_suspect: torch.Tensor, p_reference: torch.Tensor, alpha: float
                     ) -> torch.Tensor:
    """Per row, the index of the first proposed token whose probability ratio suspect /
    reference exceeds ``alpha`` (the row's length when none does). ``p_*``: [rows, k]
    probabilities of the proposed tokens."""
    bad = p_suspect > alpha * p_reference
    k = bad.shape[1]
    idx = torch.arange(k, device=bad.device).expand_as(bad)
    return torch.where(bad, idx, torch.full_like(idx, k)).min(dim=1).values


class CleanGenModel(torch.nn.Module):
    """The suspect, decoding under CleanGen. ``forward`` is the suspect's own (scoring is
    unchanged); ``generate`` takes the arguments greedy ``model.generate`` takes here
    (``input_ids``, ``attention_mask``, ``max_new_tokens``, ``eos_token_id``,
    ``pad_token_id``) and returns the prompts with their continuations."""

    def __init__(self, suspect: Any, reference: Any | None = None, *, alpha: float = 20.0,
                 k: int = 4, lockstep: bool | None = None) -> None:
        super().__init__()
        if reference is None and not hasattr(suspect, "disable_adapter"):
            raise BackdoorlabError("option 'reference': required when the suspect is a full "
                                   "model (no adapter whose base could be the reference)")
        self.suspect, self.reference = suspect, reference
        self.alpha, self.k = alpha, k
        # one batch for both (the adapter on and off) where the reference is a LoRA adapter's
        # base; ``lockstep=False`` keeps the k-token windows (same output, for comparison)
        can = reference is None and _lora_only(suspect)
        self.lockstep = can if lockstep is None else (lockstep and can)
        self.stats = {"replaced": 0, "generated": 0}

    def forward(self, *args: Any, **kw: Any) -> Any:
        return self.suspect(*args, **kw)

    def __getattr__(self, name: str) -> Any:  # the rest of the model's interface: the suspect's
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("suspect"), name)

    @contextlib.contextmanager
    def _reference(self) -> Iterator[Any]:
        """The reference model (the suspect with its adapter off unless one was given)."""
        if self.reference is not None:
            yield self.reference
        else:  # the adapter's base: the suspect's weights with the adapter off
            with self.suspect.disable_adapter():
                yield self.suspect

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                 max_new_tokens: int = 32, eos_token_id: int | list[int] | None = None,
                 pad_token_id: int | None = None, **_: Any) -> torch.Tensor:
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        stops = [] if eos_token_id is None else (
            [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id))
        pad = pad_token_id if pad_token_id is not None else (stops[0] if stops else 0)
        one_batch = self.lockstep and not self.suspect.training and not _merged(self.suspect)
        decode = self._lockstep if one_batch else self._windowed
        answers = decode(input_ids, mask, max_new_tokens, set(stops))
        self.stats["generated"] += sum(len(x) for x in answers)
        width = max((len(x) for x in answers), default=0)
        out = torch.full((len(answers), width), pad, dtype=input_ids.dtype,
                         device=input_ids.device)
        for b, x in enumerate(answers):
            out[b, :len(x)] = torch.tensor(x, dtype=input_ids.dtype)
        return torch.cat([input_ids, out], 1)

    def _lockstep(self, ids: torch.Tensor, mask: torch.Tensor, max_new_tokens: int,
                  stops: set[int]) -> list[list[int]]:
        """The answers, the suspect (adapter on) and the reference (adapter off) run as the
        two halves of one batch, one token a step."""
        from transformers import DynamicCache

        rows = ids.shape[0]
        if max_new_tokens < 1:
            return [[] for _ in range(rows)]
        names = [_active_adapter(self.suspect)] * rows + ["__base__"] * rows
        mask = torch.cat([mask, mask])
        pos = position_ids(mask)
        cache = DynamicCache()
        logits = self.suspect(input_ids=torch.cat([ids, ids]), attention_mask=mask,
                              position_ids=pos, use_cache=True, logits_to_keep=1,
                              adapter_names=names, **{CACHE_KW: cache}).logits[:, -1]
        pos = pos[:, -1:]
        answers: list[list[int]] = [[] for _ in range(rows)]
        live = list(range(rows))  # the answers of the rows still in the batch, in batch order
        while True:
            n = len(live)
            p_s = logits[:n].float().softmax(-1)
            p_r = logits[n:].float().softmax(-1)
            tok = p_s.argmax(-1)
            veto = first_suspicious(p_s.gather(1, tok[:, None]), p_r.gather(1, tok[:, None]),
                                    self.alpha) == 0
            tok = torch.where(veto, p_r.argmax(-1), tok)
            self.stats["replaced"] += int(veto.sum())
            keep = []
            for i, (b, t) in enumerate(zip(live, tok.tolist())):
                answers[b].append(t)
                if t not in stops and len(answers[b]) < max_new_tokens:
                    keep.append(i)
            if not keep:
                return answers
            if len(keep) < n:  # finished rows leave the batch, in both halves
                sel = torch.tensor(keep + [i + n for i in keep], device=ids.device)
                cache.batch_select_indices(sel)
                mask, pos, tok = mask[sel], pos[sel], tok[sel[:len(keep)]]
                live = [live[i] for i in keep]
                names = names[:len(keep)] + names[n:n + len(keep)]
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            pos = pos + 1
            logits = self.suspect(input_ids=torch.cat([tok, tok])[:, None], attention_mask=mask,
                                  position_ids=pos, use_cache=True, adapter_names=names,
                                  **{CACHE_KW: cache}).logits[:, -1]

    def _windowed(self, ids: torch.Tensor, mask: torch.Tensor, max_new_tokens: int,
                  stops: set[int]) -> list[list[int]]:
        """The answers, the suspect proposing ``k`` tokens at a time and the reference
        checking them in one pass."""
        from transformers import DynamicCache

        dev = ids.device
        rows = ids.shape[0]
        pos = position_ids(mask)
        cache_s, cache_r = DynamicCache(), DynamicCache()
        # ``cols``: which cache positions each row attends to. Every row's proposals enter both
        # caches; those a row does not keep are masked out rather than cut, so each row keeps
        # its own number of tokens per round
        cols = mask[:, :-1]
        if ids.shape[1] > 1:  # both caches hold the prompt but its last token
            prefix = dict(input_ids=ids[:, :-1], attention_mask=cols, position_ids=pos[:, :-1],
                          use_cache=True, logits_to_keep=1)
            self.suspect(**prefix, **{CACHE_KW: cache_s})
            with self._reference() as ref:
                ref(**prefix, **{CACHE_KW: cache_r})
        pending, next_pos = ids[:, -1:], pos[:, -1:]
        done = torch.zeros(rows, dtype=torch.bool, device=dev)
        made = torch.zeros(rows, dtype=torch.long, device=dev)
        answers: list[list[int]] = [[] for _ in range(rows)]
        kept = list(answers)  # the answers of the rows still in the batch, in batch order
        k = self.k
        steps = torch.arange(k, device=dev)
        while not bool(done.all()):
            feed, fpos = pending, next_pos
            toks, p_s = [], []
            for i in range(k):  # the suspect proposes k tokens greedily
                step_mask = torch.cat([cols, torch.ones(rows, i + 1, dtype=cols.dtype,
                                                        device=dev)], 1)
                logits = self.suspect(input_ids=feed, attention_mask=step_mask,
                                      position_ids=fpos, use_cache=True,
                                      **{CACHE_KW: cache_s}).logits[:, -1]
                prob = logits.float().softmax(-1)
                tok = prob.argmax(-1)
                toks.append(tok)
                p_s.append(prob.gather(1, tok[:, None])[:, 0])
                feed, fpos = tok[:, None], fpos + 1
            prop = torch.stack(toks, 1)
            with self._reference() as ref:  # scores the k proposals in one pass
                r_prob = ref(input_ids=torch.cat([pending, prop[:, :-1]], 1),
                             attention_mask=torch.cat([cols, torch.ones_like(prop)], 1),
                             position_ids=next_pos + steps, use_cache=True,
                             **{CACHE_KW: cache_r}).logits.float().softmax(-1)
            first = first_suspicious(torch.stack(p_s, 1),
                                     r_prob.gather(2, prop[..., None])[..., 0], self.alpha)
            # a row keeps its proposals up to the first vetoed one, which the reference's own
            # greedy token replaces, and no more than its budget
            n = torch.minimum((first + 1).clamp(max=k), max_new_tokens - made)
            veto = (first < n) & ~done
            prop[veto, first[veto]] = r_prob[veto, first[veto]].argmax(-1)
            self.stats["replaced"] += int(veto.sum())
            n = torch.where(done, torch.zeros_like(n), n)
            # cache positions fed this round: pending, then proposals 0..k-2; a row attends
            # to those before its last kept token (that one is fed next round)
            cols = torch.cat([cols, (steps[None] < n[:, None]).to(cols.dtype)], 1)
            for b in torch.nonzero(n, as_tuple=True)[0].tolist():
                for t in prop[b, :int(n[b])].tolist():
                    kept[b].append(t)
                    if t in stops:
                        done[b] = True
                        break
            last = (n - 1).clamp(min=0)
            pending = torch.where(n[:, None] > 0, prop.gather(1, last[:, None]), pending)
            next_pos = next_pos + n[:, None]
            made = made + n
            done = done | (made >= max_new_tokens)
            if bool(done.any()) and not bool(done.all()):
                # finished rows leave the batch (and both caches): rows advance at their own
                # pace, and the rest would otherwise be computed for nothing until the slowest
                # row ends
                live = torch.nonzero(~done, as_tuple=True)[0]
                cache_s.batch_select_indices(live)
                cache_r.batch_select_indices(live)
                cols, pending, next_pos = cols[live], pending[live], next_pos[live]
                made, done = made[live], done[live]
                kept = [kept[b] for b in live.tolist()]
                rows = len(live)
        return answers


def _lora_only(model: Any) -> bool:
    """Whether ``model`` is a PEFT model whose adapters are all plain LoRA, which PEFT can
    switch on and off row by row within one batch (not DoRA). PEFT also needs the model in
    eval mode and no adapter merged into the weights: :meth:`CleanGenModel.generate` checks
    those as it starts."""
    try:
        from peft.tuners.lora import LoraLayer, LoraModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    if not isinstance(getattr(model, "base_model", None), LoraModel):
        return False
    return not any(any(m.use_dora.values()) for m in model.modules()
                   if isinstance(m, LoraLayer))


def _merged(model: Any) -> bool:
    """Whether an adapter of ``model`` is merged into its weights."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return any(m.merged for m in model.modules() if isinstance(m, BaseTunerLayer))


def _active_adapter(model: Any) -> str:
    active = getattr(model, "active_adapter", "default")
    return active[0] if isinstance(active, (list, tuple)) else active


@dataclass
class CleanGenConfig(DefenseConfig):
    """Options of ``backdoorlab defend cleangen``."""

    reference: str | None = opt(None,
        "the clean reference model, with the suspect's vocabulary (default: the suspect "
        "adapter's base, i.e. the adapter switched off)")
    alpha: float = opt(20.0, "a proposed token whose probability is more than alpha times the "
                             "reference's is replaced by the reference's token")
    k: int = opt(4, "with a separate reference: tokens the suspect proposes before the "
                    "reference checks them in one pass (with the adapter's base as the "
                    "reference, both run in one batch and check every token as it is written; "
                    "the output is the same for any k)", at_least=1)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.alpha >= 1, "alpha", f"must be >= 1 (a probability ratio), got {self.alpha}")


def cleangen_model(suspect: Suspect, reference: str | None, alpha: float, k: int, *,
                   trust_remote_code: bool = False) -> CleanGenModel:
    """The suspect decoding under CleanGen with ``reference`` (None: the adapter's base)."""
    ref = None
    if reference is not None:
        lm = load_model(reference, trust_remote_code=trust_remote_code)
        check_same_vocabulary(suspect.lm.tokenizer, lm.tokenizer, reference, "reference")
        ref = lm.model.eval()
    return CleanGenModel(suspect.model, ref, alpha=alpha, k=k)


def load_cleangen(suspect: Suspect, directory: Path, *, trust_remote_code: bool = False
                  ) -> CleanGenModel:
    """The CleanGen decoder a defense run saved (``cleangen.json``) around ``suspect``."""
    spec = read_json(directory / "cleangen.json")
    return cleangen_model(suspect, spec.get("reference"), float(spec["alpha"]), int(spec["k"]),
                          trust_remote_code=trust_remote_code)


def decoding_cost(plain: Any, cleangen: CleanGenModel, ev: AttackEval, limit: int
                  ) -> dict[str, Any]:
    """Plain and CleanGen decoding of the same clean prompts: seconds, the slowdown, the
    perplexity of each one's answers under the reference, and the share of CleanGen's
    generated tokens that were the reference's.

    CleanGen's answers can be longer than the suspect's (it vetoes an end of turn the
    reference finds unlikely), so beside the time to answer the same prompts the slowdown per
    answer token is given (each decoder's answers re-tokenized, end of turn not counted)."""
    if ev.suite is None:
        return {}
    recs = ev.suite.target_records[:limit]
    samples = [ev.fmt.sample(r) for r in recs]
    gen = dict(max_new_tokens=ev.suite.max_new_tokens, batch_size=ev.batch_size)
    t0 = time.perf_counter()
    a = generate(plain, ev.fmt, samples, desc="plain decoding (clean)", **gen)
    t1 = time.perf_counter()
    cleangen.stats = {k: 0 for k in cleangen.stats}
    b = generate(cleangen, ev.fmt, samples, desc="CleanGen decoding (clean)", **gen)
    t2 = time.perf_counter()
    out: dict[str, Any] = {"decode_prompts": len(samples), "decode_s_plain": round(t1 - t0, 2),
                           "decode_s_cleangen": round(t2 - t1, 2),
                           "decode_slowdown": round((t2 - t1) / max(t1 - t0, 1e-9), 3),
                           "replaced_share_clean": round(cleangen.stats["replaced"]
                                                         / max(cleangen.stats["generated"], 1), 4)}
    tok = ev.fmt.tokenizer
    n_a, n_b = (sum(len(tok(x, add_special_tokens=False).input_ids) for x in answers)
                for answers in (a, b))
    out.update(decode_tokens_plain=n_a, decode_tokens_cleangen=n_b)
    if n_a and n_b:
        out["decode_slowdown_per_token"] = round((t2 - t1) / n_b / max((t1 - t0) / n_a, 1e-9), 3)
    with cleangen._reference() as ref:
        for name, answers in (("plain", a), ("cleangen", b)):
            scored = [ev.fmt.sample(r, response=x) for r, x in zip(recs, answers) if x]
            out[f"generated_perplexity_{name}"] = round(
                response_perplexity(ref, ev.fmt, scored), 4) if scored else None
    if out["generated_perplexity_plain"] and out["generated_perplexity_cleangen"]:
        out["generated_perplexity_change"] = round(
            out["generated_perplexity_cleangen"] / out["generated_perplexity_plain"] - 1, 4)
    return out


@register("defense", "cleangen", CleanGenConfig,
          "CleanGen: a clean reference model vetoes the suspect's unlikely tokens while decoding")
def run_cleangen(cfg: CleanGenConfig, out: str | Path, *, trust_remote_code: bool = False
                 ) -> dict[str, Any]:
    """Save the CleanGen decoding configuration beside the suspect; evaluate it."""
    holder: dict[str, Any] = {}

    def prepare(suspect: Suspect) -> None:  # the reference loaded and checked before any output
        holder["decoder"] = cleangen_model(suspect, cfg.reference, cfg.alpha, cfg.k,
                                           trust_remote_code=trust_remote_code)

    def repair(suspect: Suspect, ev: AttackEval, path: Path) -> dict[str, Any]:
        decoder: CleanGenModel = holder["decoder"]
        atomic_write_json(path / "cleangen.json", {"reference": cfg.reference,
                                                   "alpha": cfg.alpha, "k": cfg.k})
        cost = decoding_cost(suspect.model, decoder, ev, cfg.eval_limit or 40) \
            if cfg.evaluate else {}
        ref = cfg.reference or "the adapter's base model"
        checked = ("each token checked as it is written, in one batch with the suspect"
                   if decoder.lockstep else f"checked every {cfg.k} tokens")
        what = (f"CleanGen decoding: {ref} replaces any token the suspect finds more than "
                f"{cfg.alpha:g} times likelier ({checked})")
        return {"model": decoder, "artifact": "decoding", "what": what, **cost}

    return run_defense("cleangen", cfg, out, repair=repair, prepare=prepare,
                       trust_remote_code=trust_remote_code)
