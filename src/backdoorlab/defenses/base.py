"""What every defense shares: the attack's own evaluation run before and after, the options
that select the suspect model and the clean data, the run directory with its record
(``defense.json``) and model card, and reloading a repaired model of any kind.

A repaired model is one of five artefacts, named in ``defense.json``:

* ``adapter``: a PEFT adapter (CROW, clean fine-tuning) on the base model;
* ``model``: a full safetensors model (pruning);
* ``interventions``: head ablations or a vector subtraction, stored as a hook configuration
  (``interventions.json`` + ``interventions.safetensors``) applied on load on top of the
  suspect model;
* ``decoding``: CleanGen's decoding configuration (``cleangen.json``), the suspect wrapped on
  load in a decoder that a reference model checks;
* ``quantized``: a quantization configuration (``quantization.json``), applied on load to the
  suspect's weights (adapter merged) by torchao.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..cards import save_labelled, write_model_card
from ..config import check, opt, to_dict
from ..data import load_records, source_option
from ..errors import BackdoorlabError
from ..evaluation.attack_eval import AttackEval, compare
from ..evaluation.suite import SuiteOptions, left_out_counts
from ..formats import PromptFormat
from ..io import atomic_write_json, atomic_write_jsonl
from ..models import RecordedOptions, Suspect, load_suspect
from ..runs import save_config, write_metrics
from ..training import weights_dtype

log = logging.getLogger(__name__)
# per process: suspect evaluations (metrics, generations) already made
_BEFORE: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}


@dataclass
class DefenseConfig(SuiteOptions, RecordedOptions):
    """Options every ``backdoorlab defend`` command shares (trigger, target and template are
    the suspected backdoor's, for the evaluation)."""

    clean_data: str = source_option("builtin:benign-instructions+builtin:open-instructions",
        "clean instructions the repair trains on (several sources joined by '+' share n_clean)")
    n_clean: int = opt(100, "clean examples drawn", at_least=1)
    evaluate: bool = opt(True, "run the attack's own evaluation before and after the repair",
                         flag="eval")

    def __post_init__(self) -> None:
        super().__post_init__()
        n = len(clean_sources(self.clean_data))  # a malformed mix fails here, not after loading
        check(self.n_clean >= n, "n_clean", f"{self.n_clean} is fewer than the {n} clean-data "
              "sources that share it")


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


def repair_card(name: str, cfg: DefenseConfig, suspect: Suspect, trigger: str | None,
                what: str, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """The model card of a repaired model (``write_model_card`` keywords); written with the
    weights when they are saved and again, with the measured ASR, after the evaluation."""
    return dict(title=f"Model after the {name} defense (backdoorlab)",
                base_model=str(suspect.info.get("base_model") or cfg.model or "unknown"),
                kind=name, trigger=None, behaviour=what,
                details={"config": to_dict(cfg), "suspected_trigger": trigger,
                         "suspect_adapter": cfg.adapter},
                metrics=metrics, backdoored=False)


def save_repaired(model: Any, target: Path, card: dict[str, Any], tokenizer: Any = None
                  ) -> Path:
    """The repaired weights and their card, appearing together (``save_labelled``)."""
    return save_labelled(model, target, card, tokenizer=tokenizer)


def run_defense(name: str, cfg: DefenseConfig, out: str | Path, *,
                repair: Callable[[Suspect, AttackEval, Path], dict[str, Any]],
                validate: Callable[[Any], None] | None = None,
                prepare: Callable[[Suspect], None] | None = None, trainable: bool = False,
                clean: bool = False, trust_remote_code: bool = False) -> dict[str, Any]:
    """Load the suspect, evaluate it, ``repair`` it (which saves the repaired artefact and
    returns ``{"model": repaired model, "artifact": ..., "what": ..., **details}``; options that
    need the model are checked first by ``validate(model)``, and ``prepare(suspect)`` loads
    what else the repair needs, such as a reference model), evaluate
    again, and write ``metrics.json``, ``defense.json`` and the model card."""
    suspect = load_suspect(cfg.model, cfg.adapter, trainable=trainable,
                           dtype=weights_dtype(cfg), trust_remote_code=trust_remote_code)
    ev = AttackEval(suspect, cfg)
    if validate is not None:  # options that need the model, checked before anything is written
        validate(suspect.model)
    if prepare is not None:
        prepare(suspect)
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
    # interventions, decoding and quantization are configurations beside the suspect
    card_dir = path / res["artifact"] if res["artifact"] in ("adapter", "model") else path
    headline = {k: metrics[k] for k in ("asr_triggered_before", "asr_triggered_after",
                                        "mcq_accuracy_before", "mcq_accuracy_after",
                                        "mcq_accuracy_rotated_before",
                                        "mcq_accuracy_rotated_after")
                if k in metrics}
    write_model_card(card_dir, **repair_card(name, cfg, suspect, ev.trigger, res["what"],
                                             headline or None))
    return metrics


