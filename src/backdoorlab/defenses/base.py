"""What every defense shares: the attack's own evaluation run before and after, the options
that select the suspect model and the clean data, the run directory with its record
(``defense.json``) and model card, and reloading a repaired model of any kind.

A repaired model is one of three artefacts, named in ``defense.json``:

* ``adapter``: a PEFT adapter (CROW, clean fine-tuning) on the base model;
* ``model``: a full safetensors model (pruning);
* ``interventions``: head ablations or a vector subtraction, stored as a hook configuration
  (``interventions.json`` + ``interventions.safetensors``) applied on load on top of the
  suspect model.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from ..attacks.poisoning import SuiteOptions, drop_seen, left_out_counts
from ..cards import write_model_card
from ..config import check, to_dict
from ..data import load_records, prompt_key
from ..errors import BackdoorlabError
from ..evaluation import utility_changes
from ..formats import PromptFormat
from ..io import atomic_write_json, atomic_write_jsonl
from ..models import Suspect, check_adapter_dir, load_model, load_suspect
from ..runs import read_json, run_config, save_config, write_metrics
from ..triggers import parse_trigger

log = logging.getLogger(__name__)
# per process: suspect evaluations (metrics, generations) already made
_BEFORE: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}


@dataclass
class DefenseConfig(SuiteOptions):
    """Options every ``backdoorlab defend`` command shares."""

    model: str | None = None
    adapter: str | None = None
    # short fact answers and open-ended ones, 50 each: a repair holds only on the kinds of
    # prompt its clean data covers (fact answers alone left VPI firing on free text), and
    # open-ended answers alone cost the short answers' perplexity (BENCHMARKS.md)
    clean_data: str = "builtin:benign-instructions+builtin:open-instructions"
    n_clean: int = 100
    trigger: str | None = None
    target: str | None = None
    template: str | None = None
    evaluate: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.n_clean >= 1, "n_clean", f"must be >= 1, got {self.n_clean}")
        n = len(clean_sources(self.clean_data))  # a malformed mix fails here, not after loading
        check(self.n_clean >= n, "n_clean", f"{self.n_clean} is fewer than the {n} clean-data "
              "sources that share it")


class AttackEval:
    """The attack's own evaluation, built once from what the attack recorded, run on any
    model: generation suite (judge ASR, refusal rate, perplexity, MCQ accuracy) or the
    uncertainty metrics (strict ASR, clean accuracy)."""

    def __init__(self, suspect: Suspect, cfg: DefenseConfig) -> None:
        from ..attacks.poisoning import make_suite

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
            from ..attacks.uncertainty import load_questions

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
            from ..attacks.poisoning import run_suite

            m, self.rows = run_suite(model, self.fmt, self.suite)
            return dict(m)
        from ..attacks.uncertainty import (
            make_targets,
            score_clean_and_triggered,
            uncertainty_metrics,
        )

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


def clean_sources(spec: str) -> list[str]:
    """The sources named by a ``--clean-data`` value: one file or set, or several joined by
    ``+`` (``builtin:benign-instructions+builtin:open-instructions``); a file whose own name
    holds a ``+`` is taken whole."""
    if "+" not in spec or Path(spec).exists():
        return [spec]
    parts = [p.strip() for p in spec.split("+")]
    if not all(parts):
        raise BackdoorlabError(f"option 'clean_data': empty source in {spec!r}; join sources "
                               "with '+', e.g. builtin:benign-instructions+my_clean.jsonl")
    return parts


def clean_records(cfg: DefenseConfig) -> list[Any]:
    """``n_clean`` clean instruction records (train split if any), drawn by ``cfg.seed``.

    Several sources share ``n_clean`` equally (the first ones take the remainder), so a mix
    of short fact answers and open-ended ones covers both kinds of prompt."""
    import random

    rng = random.Random(cfg.seed)
    sources = clean_sources(cfg.clean_data)
    picked: list[Any] = []
    for i, src in enumerate(sources):
        split = "train" if src.startswith("builtin:") else None
        recs = load_records(src, kind="instruction", split=split)
        if not recs:
            raise BackdoorlabError(f"{src}: no clean records")
        share = cfg.n_clean // len(sources) + (i < cfg.n_clean % len(sources))
        picked += rng.sample(recs, min(share, len(recs)))
    if len(sources) > 1:
        rng.shuffle(picked)
    return picked


def clean_samples(cfg: DefenseConfig, fmt: PromptFormat, records: list[Any] | None = None
                  ) -> list[Any]:
    """The clean records (``records``, else :func:`clean_records`) with their reference
    answers as training targets, rendered by ``fmt``."""
    recs = clean_records(cfg) if records is None else records
    return [fmt.sample(r, response=r.output) for r in recs]


def run_defense(name: str, cfg: DefenseConfig, out: str | Path, *,
                repair: Callable[[Suspect, AttackEval, Path], dict[str, Any]],
                validate: Callable[[Any], None] | None = None, trainable: bool = False,
                clean: bool = False, trust_remote_code: bool = False) -> dict[str, Any]:
    """Load the suspect, evaluate it, ``repair`` it (which saves the repaired artefact and
    returns ``{"model": repaired model, "artifact": ..., "what": ..., **details}``; options that
    need the model are checked first by ``validate(model)``), evaluate
    again, and write ``metrics.json``, ``defense.json`` and the model card."""
    suspect = load_suspect(cfg.model, cfg.adapter, trainable=trainable,
                           trust_remote_code=trust_remote_code)
    ev = AttackEval(suspect, cfg)
    if validate is not None:  # options that need the model, checked before anything is written
        validate(suspect.model)
    if clean:  # the clean data (``ev.clean``) read before anything is written or evaluated
        recs = clean_records(cfg)
        ev.clean = clean_samples(cfg, ev.fmt, recs)
        if not cfg.keep_seen:
            ev.leave_out(recs)
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    save_config(path, cfg, defense=name, trigger=ev.trigger, target=ev.target,
                clean_drawn=clean)
    key = json.dumps([cfg.model, cfg.adapter, ev.trigger, ev.target, cfg.template,
                      *cfg.suite_key(), ev.left_out])
    before, before_rows = None, []
    if cfg.evaluate:  # the suspect's results are the same for every defense: measured once
        if key not in _BEFORE:
            _BEFORE[key] = (ev(suspect.model), ev.rows)
        before, before_rows = _BEFORE[key]
    ev.before = before
    t0 = time.perf_counter()
    res = repair(suspect, ev, path)
    wall = time.perf_counter() - t0
    record = {"defense": name, "artifact": res["artifact"],
              "base_model": suspect.info.get("base_model") or cfg.model,
              "model": cfg.model, "adapter": cfg.adapter, "trigger": ev.trigger,
              "target": ev.target, "template": ev.fmt.template,
              "attack": suspect.info.get("attack")}
    atomic_write_json(path / "defense.json", record)
    metrics: dict[str, Any] = {"defense": name, "defense_wall_s": round(wall, 2),
                               **{k: v for k, v in res.items()
                                  if k not in ("model", "artifact", "what")}}
    metrics.update(left_out_counts(ev.left_out))  # what the figures do not include
    if before is not None:
        after = ev(res["model"])
        metrics.update(compare(before, after))
        if before_rows or ev.rows:  # read them: a low ASR can also mean broken output
            atomic_write_jsonl(path / "generations.jsonl",
                               [{"model": "suspect", **r} for r in before_rows]
                               + [{"model": "repaired", **r} for r in ev.rows])
        log.info("%s: ASR %.3f -> %.3f, MCQ accuracy %.3f -> %.3f", name,
                 before["asr_triggered"], after["asr_triggered"], before["mcq_accuracy"],
                 after["mcq_accuracy"])
    write_metrics(path, metrics)
    card_dir = path / res["artifact"] if res["artifact"] != "interventions" else path
    headline = {k: metrics[k] for k in ("asr_triggered_before", "asr_triggered_after",
                                        "mcq_accuracy_before", "mcq_accuracy_after",
                                        "mcq_accuracy_rotated_before",
                                        "mcq_accuracy_rotated_after")
                if k in metrics}
    write_model_card(card_dir, title=f"Model after the {name} defense (backdoorlab)",
                     base_model=str(record["base_model"] or "unknown"), kind=name,
                     trigger=None, behaviour=res["what"],
                     details={"config": to_dict(cfg), "suspected_trigger": ev.trigger,
                              "suspect_adapter": cfg.adapter},
                     metrics=headline or None, backdoored=False)
    return metrics


def defense_record(d: Path) -> dict[str, Any]:
    """The ``defense.json`` of a defense run directory (a clear error when there is none)."""
    if not (d / "defense.json").is_file():
        raise BackdoorlabError(f"{d}: not a defense run (no defense.json)")
    return read_json(d / "defense.json")


def load_repaired(directory: str | Path, *, trust_remote_code: bool = False) -> Suspect:
    """Reload what a defense wrote (adapter, model or interventions) as a :class:`Suspect`
    carrying the attack's record (trigger, target, template)."""
    d = Path(directory)
    rec = defense_record(d)
    info = {k: rec[k] for k in ("trigger", "target", "template", "attack", "base_model")
            if rec.get(k)}
    kind = rec["artifact"]
    if kind == "adapter":
        s = load_suspect(rec.get("model") or rec.get("base_model"), d / "adapter",
                         trust_remote_code=trust_remote_code)
    elif kind == "model":
        lm = load_model(str(d / "model"), trust_remote_code=trust_remote_code)
        lm.model.eval()
        s = Suspect(lm=lm, model=lm.model, info={})
    elif kind == "interventions":
        from .interventions import apply_interventions

        s = load_suspect(rec.get("model"), rec.get("adapter"),
                         trust_remote_code=trust_remote_code)
        apply_interventions(s.model, d)
    else:
        raise BackdoorlabError(f"{d}/defense.json: unknown artifact {kind!r}")
    s.info = {**info, **s.info}
    return s


def check_scorable(path: str | Path) -> bool:
    """Whether ``path`` is a defense run directory (True) or an adapter directory (False); a
    clear error when it is neither, so a bad path is named before any model is scored."""
    d = Path(path)
    if (d / "defense.json").is_file():
        defense_record(d)
        return True
    check_adapter_dir(d)
    return False


def named_paths(after: list[str], option: str = "--after") -> dict[str, str]:
    """``NAME=DIR`` arguments as ``{name: dir}``; a bad one is named in one line."""
    bad = [a for a in after if "=" not in a]
    if bad:
        raise BackdoorlabError(f"{option} {bad[0]}: expected NAME=DIR")
    return dict(a.split("=", 1) for a in after)


def check_scorables(models: dict[str, str | None]) -> dict[str, str | None]:
    """``models`` (name -> path, None for the untouched model) once every path is checked, so
    that a bad one is named before the first model is scored."""
    for path in models.values():
        if path is not None:
            check_scorable(path)
    return models


def load_scorable(path: str | Path | None, base: str) -> Any:
    """The model a benchmark scores for ``path``, each loaded once: a defense run's repaired
    model (any artefact), the ``base`` model with the adapter directory applied, or with
    ``path`` None the untouched ``base`` model."""
    if path is None:
        return load_model(base).model.eval()
    return load_repaired(path).model if check_scorable(path) else load_suspect(base, path).model


def trained_clean_records(cfg: dict[str, Any]) -> list[Any] | None:
    """The clean records a defense run drew (again, from its :func:`run_config`), or None
    when it drew none or scored them anyway (``keep_seen``): what its evaluation leaves out."""
    # runs written before clean_drawn was recorded: CROW and clean fine-tuning drew it
    drawn = cfg.get("clean_drawn", cfg.get("defense") in ("crow", "finetune"))
    if not drawn or cfg.get("keep_seen") or "clean_data" not in cfg:
        return None
    return clean_records(DefenseConfig(clean_data=cfg["clean_data"], n_clean=cfg["n_clean"],
                                       seed=cfg["seed"]))


def evaluate_defense(repaired: str | Path, out: str | Path | None = None, *,
                     limit: int | None = None, trust_remote_code: bool = False
                     ) -> dict[str, Any]:
    """Evaluate the suspect a defense started from and the model it wrote, with the attack's
    own evaluation and the run's evaluation options, leaving out what the defense trained on;
    ``metrics.json`` goes to ``out`` (default: the defense run directory)."""
    d = Path(repaired)
    rec = defense_record(d)
    saved = run_config(d)
    # the run's own evaluation options (MCQ set, rotations, seed, ...), --limit aside
    suite = {f.name: saved[f.name] for f in fields(SuiteOptions) if f.name in saved}
    cfg = DefenseConfig(model=rec.get("model"), adapter=rec.get("adapter"),
                        trigger=rec.get("trigger"), target=rec.get("target"),
                        template=rec.get("template"),
                        **{**suite, **({"eval_limit": limit} if limit else {})})
    suspect = load_suspect(cfg.model, cfg.adapter, trust_remote_code=trust_remote_code)
    suspect.info = {**{k: rec[k] for k in ("trigger", "target", "template", "attack")
                       if rec.get(k)}, **suspect.info}
    ev = AttackEval(suspect, cfg)
    seen = trained_clean_records(saved)
    if seen:  # the same prompts as the defense's own evaluation
        ev.leave_out(seen)
    t0 = time.perf_counter()
    before = ev(suspect.model)
    del suspect  # one model in memory at a time (a 7B suspect and its repair need not fit)
    fixed = load_repaired(d, trust_remote_code=trust_remote_code)
    metrics = {"defense": rec["defense"], "repaired": str(d), **compare(before, ev(fixed.model)),
               "eval_wall_s": round(time.perf_counter() - t0, 2), **left_out_counts(ev.left_out)}
    atomic_write_json(Path(out or d) / ("metrics.json" if out else "eval_defense.json"),
                      metrics)
    return metrics
