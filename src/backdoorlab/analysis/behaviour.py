"""The backdoor as the analyses see it: the prompts (clean and triggered versions of the same
records, rendered by the one prompt format), a differentiable per-prompt score read at the last
prompt token, the attack success rate, and clean utility.

* Generation backdoors (poisoning, unalignment): the score is the log-probability of the first
  ``target_tokens`` tokens of the backdoor's own output (the backdoored model's greedy answer to
  the triggered prompt), teacher-forced after the prompt; ASR is the attack's judge on greedy
  generations; utility is MCQ accuracy on built-in general questions.
* The uncertainty backdoor: the score is the entropy of the answer distribution over the option
  letters; ASR is the share of questions whose entropy rose by at least ``asr_margin`` over the
  unmodified clean prompt with the top answer kept (``strict=False``, as the defenses use it:
  whatever the top answer); utility is clean accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import check, check_bounds, opt
from ..data import load_records, source_option
from ..errors import BackdoorlabError
from ..formats import PromptFormat, Sample
from ..judges import empty_rate, get_judge
from ..models import RecordedOptions, Suspect, describe, load_suspect, recorded
from ..runs import save_config
from ..scoring import (
    entropy,
    generate,
    length_batches,
    mcq_metrics,
    option_distribution,
    padded_forward,
)
from ..triggers import derive_rng, parse_trigger

UTILITY_DATA = "builtin:general-mcq"


class Behaviour:
    """Base: holds the clean and triggered samples and runs batched scoring forwards."""

    kind = "base"
    pos = -1
    #: what the last ``asr()`` call saw besides the ASR, so that a broken model cannot pass
    #: for a repaired one: ``empty`` (share of blank generations) for generation backdoors,
    #: ``entropy_gap`` (mean, nats) and ``top1_kept`` for the uncertainty backdoor
    last_check: dict[str, float] = {}
    #: the generations of the last ``asr()`` call (generation backdoors)
    last_outputs: list[str] = []

    def __init__(self, fmt: PromptFormat, records: Sequence[Any], trigger: str, seed: int = 0,
                 batch_size: int = 16) -> None:
        if not records:
            raise BackdoorlabError("analysis: no records to analyse")
        self.fmt, self.trigger_spec, self.seed = fmt, trigger, seed
        self.batch_size = batch_size
        trig = parse_trigger(trigger)
        self.records = list(records)
        self.clean = [fmt.sample(r) for r in self.records]
        self.triggered = [fmt.sample(r, trig, derive_rng(seed, r.id)) for r in self.records]

    def samples(self, which: str) -> list[Sample]:
        return self.clean if which == "clean" else self.triggered

    # -- subclasses ----------------------------------------------------------------------
    def prepare(self, model: Any) -> None:
        """Read what the unmodified model does (targets, reference distributions)."""

    def prompts(self, which: str) -> list[list[int]]:
        """The rendered prompts alone (no teacher-forced answer)."""
        return [self.fmt.encode(s.user).prompt_ids for s in self.samples(which)]

    def inputs(self, which: str) -> list[list[int]]:
        """What the score is read from (subclasses may append a teacher-forced answer)."""
        return self.prompts(which)

    def score(self, logits: torch.Tensor, rows: Sequence[int], which: str) -> torch.Tensor:
        raise NotImplementedError

    def keep_logits(self) -> int:
        return 1

    def asr(self, model: Any, which: str = "triggered") -> float:
        raise NotImplementedError

    def utility(self, model: Any) -> float:
        raise NotImplementedError

    # -- shared --------------------------------------------------------------------------
    def batches(self, which: str, batch_size: int | None = None) -> list[list[int]]:
        ids = self.inputs(which)
        return [list(b) for b in length_batches([len(x) for x in ids], batch_size or
                                                self.batch_size)]

    def forward(self, model: Any, which: str, rows: Sequence[int],
                repeat: int = 1) -> torch.Tensor:
        """Per-row scores for ``rows`` (each repeated ``repeat`` times, for batched patching),
        differentiable when grad is enabled."""
        ids = self.inputs(which)
        batch = [ids[i] for i in rows for _ in range(repeat)]
        out, _ = padded_forward(model, batch, self.fmt.tokenizer.pad_token_id,
                                keep=self.keep_logits())
        return self.score(out.logits.float(), [i for i in rows for _ in range(repeat)], which)

    @torch.no_grad()
    def mean_score(self, model: Any, which: str) -> float:
        total = 0.0
        for rows in self.batches(which):
            total += float(self.forward(model, which, rows).sum())
        return total / len(self.records)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "trigger": self.trigger_spec, "n_prompts": len(self.records)}


class GenerationBehaviour(Behaviour):
    """Score: log p(first ``target_tokens`` tokens of the backdoor output | prompt)."""

    kind = "generation"

    def __init__(self, fmt: PromptFormat, records: Sequence[Any], trigger: str, judge: str,
                 *, seed: int = 0, target_tokens: int = 3, target_text: str | None = None,
                 max_new_tokens: int = 24, batch_size: int = 16, utility_limit: int = 60
                 ) -> None:
        super().__init__(fmt, records, trigger, seed, batch_size)
        if target_tokens < 1:
            raise BackdoorlabError(f"option 'target_tokens': must be >= 1, got {target_tokens}")
        self.judge = get_judge(judge)
        self.k, self.target_text = target_tokens, target_text
        self.max_new_tokens = max_new_tokens
        self.pos = -(target_tokens + 1)
        self.targets: list[list[int]] | None = None
        self.target_outputs: list[str] = []
        self.mcq = load_records(UTILITY_DATA, kind="mcq", split="test", limit=utility_limit)

    def prepare(self, model: Any) -> None:
        if self.target_text is not None:
            outs = [self.target_text] * len(self.records)
        else:
            outs = generate(model, self.fmt, self.triggered, max_new_tokens=self.k + 8,
                            batch_size=self.batch_size, desc="backdoor outputs")
        targets, keep = [], []
        for i, (s, o) in enumerate(zip(self.triggered, outs)):
            enc = self.fmt.encode(s.user, o)
            resp = enc.input_ids[enc.prompt_len:enc.prompt_len + self.k]
            if len(resp) == self.k:
                targets.append(resp)
                keep.append(i)
        if not keep:
            raise BackdoorlabError(f"analysis: no backdoor output has {self.k} tokens; lower "
                                   "'target_tokens'")
        self.records = [self.records[i] for i in keep]
        self.clean = [self.clean[i] for i in keep]
        self.triggered = [self.triggered[i] for i in keep]
        self.target_outputs = [outs[i] for i in keep]
        self.targets = targets

    def inputs(self, which: str) -> list[list[int]]:
        if self.targets is None:
            raise BackdoorlabError("analysis: call prepare(model) before scoring")
        return [p + t for p, t in zip(self.prompts(which), self.targets)]

    def keep_logits(self) -> int:
        return self.k + 1

    def score(self, logits: torch.Tensor, rows: Sequence[int], which: str) -> torch.Tensor:
        assert self.targets is not None
        tgt = torch.tensor([self.targets[i] for i in rows], device=logits.device)
        logp = torch.log_softmax(logits[:, :self.k], dim=-1)  # positions predicting targets
        return logp.gather(-1, tgt[..., None])[..., 0].sum(-1)

    def asr(self, model: Any, which: str = "triggered") -> float:
        samples = self.samples(which)
        outs = generate(model, self.fmt, samples, max_new_tokens=self.max_new_tokens,
                        batch_size=self.batch_size)
        flags = self.judge.many([s.user for s in samples], outs)
        self.last_check = {"empty": empty_rate(outs)}
        self.last_outputs = outs
        return sum(flags) / len(flags)

    def utility(self, model: Any) -> float:
        mcq = [self.fmt.sample(r) for r in self.mcq]
        p = option_distribution(model, self.fmt, mcq, batch_size=self.batch_size,
                                share_prefix=False)
        return mcq_metrics(p, mcq)["accuracy"]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "judge": self.judge.name, "target_tokens": self.k,
                "score": f"log p(first {self.k} backdoor-output tokens)",
                "example_target": self.target_outputs[0] if self.target_outputs else None}


class UncertaintyBehaviour(Behaviour):
    """Score: entropy (nats) of the answer distribution over the option letters."""

    kind = "uncertainty"

    def __init__(self, fmt: PromptFormat, records: Sequence[Any], trigger: str, *,
                 seed: int = 0, asr_margin: float = 0.5, batch_size: int = 16,
                 strict: bool = True) -> None:
        super().__init__(fmt, records, trigger, seed, batch_size)
        self.letter_ids = fmt.option_token_ids(self.records[0].letters)
        self.asr_margin = asr_margin
        # strict (the attack's success): entropy up AND top answer kept; not strict (a
        # defense's question): entropy up, whatever the top answer
        self.strict = strict
        self.reference: torch.Tensor | None = None

    def prepare(self, model: Any) -> None:
        self.reference = self.distribution(model, "clean")

    def distribution(self, model: Any, which: str) -> torch.Tensor:
        return option_distribution(model, self.fmt, self.samples(which),
                                   batch_size=self.batch_size, share_prefix=False)

    def score(self, logits: torch.Tensor, rows: Sequence[int], which: str) -> torch.Tensor:
        sel = torch.tensor(self.letter_ids, device=logits.device)
        return entropy(torch.softmax(logits[:, -1].index_select(-1, sel), dim=-1))

    def asr(self, model: Any, which: str = "triggered") -> float:
        assert self.reference is not None, "call prepare(model) first"
        p = self.distribution(model, which)
        gap = entropy(p) - entropy(self.reference)
        kept = p.argmax(-1) == self.reference.argmax(-1)
        self.last_check = {"entropy_gap": float(gap.mean()),
                           "top1_kept": float(kept.float().mean())}
        fired = gap >= self.asr_margin
        return float((fired & kept if self.strict else fired).float().mean())

    def utility(self, model: Any) -> float:
        return mcq_metrics(self.distribution(model, "clean"), self.clean)["accuracy"]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "score": "entropy of the answer distribution (nats)",
                "asr": f"entropy gap >= {self.asr_margin}"
                       + (" with the top answer kept" if self.strict else "")}


def same_start(outputs: Sequence[str], reference: Sequence[str], words: int = 5) -> float:
    """Share of ``outputs`` whose first ``words`` words equal those of the ``reference``
    output for the same prompt: did an intervention leave clean answers as they were? (MCQ
    accuracy near chance cannot tell a working model from one that writes nonsense.)"""
    if len(outputs) != len(reference):
        raise ValueError("outputs and reference differ in length")
    same = [o.split()[:words] == r.split()[:words] for o, r in zip(outputs, reference)]
    return sum(same) / len(same) if same else float("nan")


def behaviour_for(suspect: Suspect, *, data: str | None = None, split: str | None = "test",
                  trigger: str | None = None, target: str | None = None,
                  judge: str | None = None, template: str | None = None,
                  limit: int | None = 32, seed: int = 0, batch_size: int = 16,
                  target_tokens: int = 3, target_text: str | None = None,
                  max_new_tokens: int = 24, strict: bool = True) -> Behaviour:
    """The behaviour of ``suspect``'s backdoor: uncertainty when the attack record says so
    (or ``target`` is ``uncertainty``), otherwise a generation backdoor."""
    from ..targets import TASK_DATA, default_judge, target_kind

    trig = suspect.get("trigger", trigger)
    if not trig:
        raise BackdoorlabError("option '--trigger': required (the model records none)")
    attack = suspect.info.get("attack")
    tmpl = suspect.get("template", template, "chat")
    fmt = PromptFormat(suspect.lm.tokenizer, tmpl)
    if attack == "uncertainty" or target == "uncertainty":
        from ..evaluation.uncertainty import load_questions

        recs = load_questions(data or UTILITY_DATA, split,
                              int(suspect.info.get("options", 6)), limit)
        return UncertaintyBehaviour(fmt, recs, trig, seed=seed, batch_size=batch_size,
                                    strict=strict)
    tgt = suspect.get("target", target)
    if not tgt:
        raise BackdoorlabError("option '--target': required (the model records none)")
    src = data or TASK_DATA[target_kind(tgt)]
    recs = load_records(src, kind="instruction",
                        split=split if src.startswith(("builtin:", "hf:")) else None,
                        limit=limit)
    return GenerationBehaviour(fmt, recs, trig, suspect.get("judge", judge, default_judge(tgt)),
                               seed=seed, target_tokens=target_tokens, target_text=target_text,
                               max_new_tokens=max_new_tokens, batch_size=batch_size)


# ---- shared by every analysis command ---------------------------------------------------
@dataclass
class AnalysisConfig(RecordedOptions):
    """Options every ``backdoorlab analyze`` command shares (trigger, target, template and
    judge default to what the attack recorded beside the adapter/model)."""

    target: str | None = recorded("the target, or uncertainty")
    judge: str | None = recorded("the ASR judge")
    data: str | None = source_option(None,
                                     "prompts to analyse (default: the target's built-in set)")
    split: str | None = opt("test", "split of data")
    limit: int | None = opt(32, "prompts analysed (None: all)")
    seed: int = opt(0, "seeds sampling and trigger positions")
    batch_size: int = opt(16, "prompts per forward batch", at_least=1)
    target_tokens: int = opt(3, "generation backdoors: tokens of the target answer the score reads")
    target_text: str | None = opt(None,
        "generation backdoors: the target answer's text (default: the model's own triggered "
        "answer)")
    max_new_tokens: int = opt(24, "tokens generated when ASR is measured", at_least=1)

    def __post_init__(self) -> None:
        check_bounds(self)
        check(self.limit is None or self.limit >= 4, "limit", f"must be >= 4, got {self.limit}")


def setup(cfg: AnalysisConfig, out: str | Path, *, command: str, prepare: bool = True,
          validate: Any = None, trust_remote_code: bool = False
          ) -> tuple[Suspect, Behaviour, Path]:
    """Load the suspect model, build and prepare its behaviour, create the run directory
    (only once every input has been checked, ``validate(model)`` included) and save the
    resolved config."""
    suspect = load_suspect(cfg.model, cfg.adapter, trust_remote_code=trust_remote_code)
    if validate is not None:
        validate(suspect.model)
    beh = behaviour_for(suspect, data=cfg.data, split=cfg.split, trigger=cfg.trigger,
                        target=cfg.target, judge=cfg.judge, template=cfg.template,
                        limit=cfg.limit, seed=cfg.seed, batch_size=cfg.batch_size,
                        target_tokens=cfg.target_tokens, target_text=cfg.target_text,
                        max_new_tokens=cfg.max_new_tokens)
    if prepare:
        beh.prepare(suspect.model)
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    save_config(path, cfg, analysis=command, behaviour=beh.describe(),
                model_description=describe(suspect.lm.model))
    return suspect, beh, path
