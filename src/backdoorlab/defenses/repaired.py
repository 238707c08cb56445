"""What a defense wrote, read back: the ``defense.json`` record, the repaired model of any
kind (adapter, full model, interventions) and the before/after evaluation of a finished
defense run (``backdoorlab eval defense``)."""

from __future__ import annotations

import time
from dataclasses import fields
from pathlib import Path
from typing import Any

from ..errors import BackdoorlabError
from ..evaluation.attack_eval import AttackEval, compare
from ..evaluation.suite import SuiteOptions, left_out_counts
from ..evaluation.utility import UtilityEvalConfig, check_tasks, lm_eval_tasks
from ..io import atomic_write_json
from ..models import Suspect, check_adapter_dir, load_model, load_suspect
from ..runs import read_json, run_config
from .base import DefenseConfig, clean_records


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
    elif kind in ("decoding", "quantized"):
        from .cleangen import load_cleangen
        from .quantize import load_quantized

        s = load_suspect(rec.get("model"), rec.get("adapter"),
                         trust_remote_code=trust_remote_code)
        s.model = load_cleangen(s, d, trust_remote_code=trust_remote_code) \
            if kind == "decoding" else load_quantized(s, d)
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
                     limit: int | None = None, utility: UtilityEvalConfig | None = None,
                     trust_remote_code: bool = False) -> dict[str, Any]:
    """Evaluate the suspect a defense started from and the model it wrote, with the attack's
    own evaluation and the run's evaluation options, leaving out what the defense trained on;
    with ``utility``, also its lm-evaluation-harness tasks on both (``tasks``: task ->
    before/after). ``metrics.json`` goes to ``out`` (default: ``eval_defense.json`` in the
    defense run directory)."""
    d = Path(repaired)
    rec = defense_record(d)
    task_index = check_tasks(utility) if utility is not None else None
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
    tasks_before = (lm_eval_tasks(suspect.model, suspect.lm.tokenizer, utility,
                                  manager=task_index)["tasks"] if utility else {})
    del suspect  # one model in memory at a time (a 7B suspect and its repair need not fit)
    fixed = load_repaired(d, trust_remote_code=trust_remote_code)
    metrics = {"defense": rec["defense"], "repaired": str(d), **compare(before, ev(fixed.model)),
               **left_out_counts(ev.left_out)}
    if utility:
        after = lm_eval_tasks(fixed.model, fixed.lm.tokenizer, utility, manager=task_index)["tasks"]
        metrics["tasks"] = {t: {"before": tasks_before.get(t), "after": after.get(t)}
                            for t in after}
    metrics["eval_wall_s"] = round(time.perf_counter() - t0, 2)
    atomic_write_json(Path(out or d) / ("metrics.json" if out else "eval_defense.json"),
                      metrics)
    return metrics
