"""A study in one file: ``backdoorlab run EXPERIMENT.yaml``.

Stages, each optional, each writing into the run directory::

    attack    -> RUN/attack/           (plants and evaluates the backdoor beside the clean model)
    evaluate  -> RUN/evaluate/         (the attack's own evaluation, other settings if wanted)
    analyze   -> RUN/analyze/<name>/   (probe, heads, ablate, vector, consistency)
    defend    -> RUN/defend/<name>/    (crow, finetune, prune, ablate-heads, subtract-vector,
                                        cleangen, quantize; each evaluates before and after)
    report    -> RUN/report.html, RUN/report.md

Every stage's config is checked before any work starts (unknown keys and bad values are
reported with their line in the YAML file). ``RUN/resolved.json`` holds the config with every
default filled in; ``RUN/stages.json`` records each finished stage with the hash of its config
(and of the stages it builds on), so a stage whose hash and outputs are unchanged is not redone.
An interrupted stage resumes from its last training checkpoint; ``--from STAGE`` redoes a
stage and everything after it.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import from_dict, load_yaml, to_dict, yaml_error
from .errors import BackdoorlabError, unknown
from .io import atomic_write_json
from .memory import peak_memory, reset_peak
from .runs import check_out, config_hash, read_json, write_metrics

log = logging.getLogger(__name__)

TOP_KEYS = ("name", "model", "seed", "attack", "evaluate", "analyze", "defend", "report")


def _classes(family: str) -> dict[str, tuple[type, Any]]:
    """The registered methods of ``family``: name -> (config class, run function)."""
    from .catalog import all_methods

    return {m.name: (m.config, m.run) for m in all_methods(family)}


@dataclass
class Stage:
    """One unit of work: its name (``analyze.heads``), config object and runner."""

    name: str
    cfg: Any
    run: Any
    out: Path
    depends: list[str] = field(default_factory=list)


class YamlLines:
    """Line numbers of the keys of a YAML mapping (``attack.train.epochs`` -> 12)."""

    def __init__(self, text: str) -> None:
        import yaml

        self.lines: dict[str, int] = {}
        try:
            node = yaml.compose(text)
        except yaml.YAMLError:
            node = None
        if node is not None:
            self._walk(node, "")

    def _walk(self, node: Any, prefix: str) -> None:
        import yaml

        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = f"{prefix}{k.value}"
                self.lines[key] = k.start_mark.line + 1
                self._walk(v, key + ".")

    def find(self, section: str, option: str | None) -> int | None:
        """The line of ``section.option`` (or of its last dotted part), else of ``section``."""
        if option:
            for cand in (f"{section}.{option}", f"{section}.{option.split('.')[-1]}"):
                if cand in self.lines:
                    return self.lines[cand]
            for k, v in self.lines.items():
                if k.startswith(section + ".") and k.endswith("." + option.split(".")[-1]):
                    return v
        return self.lines.get(section)


def _build(cls: type, data: dict[str, Any], section: str, where: str, lines: YamlLines) -> Any:
    try:
        return from_dict(cls, data, where=section)
    except BackdoorlabError as exc:
        msg = str(exc)
        m = re.search(r"(?:option|key) '([^']+)'", msg)
        line = lines.find(section, m.group(1) if m else None)
        at = f"{where}:{line}: " if line else f"{where}: "
        raise BackdoorlabError(f"{at}{section}: {msg}") from None


def plan(spec: dict[str, Any], run_dir: Path, *, where: str = "experiment",
         text: str = "") -> tuple[list[Stage], dict[str, Any]]:
    """Check the whole experiment and turn it into stages (no work is done here)."""
    lines = YamlLines(text)
    if not isinstance(spec, dict):
        raise BackdoorlabError(f"{where}: expected a mapping of stages")
    for key in spec:
        if key not in TOP_KEYS:
            line = lines.lines.get(str(key))
            raise BackdoorlabError(f"{where}:{line or '?'}: " + str(unknown("key", str(key),
                                                                             TOP_KEYS)))
    model = spec.get("model")
    seed = spec.get("seed", 0)
    common = {"seed": seed}
    stages: list[Stage] = []
    resolved: dict[str, Any] = {"name": spec.get("name") or run_dir.name, "model": model,
                                "seed": seed}
    adapter = None
    for section in ("attack", "evaluate"):
        if spec.get(section) is not None and not isinstance(spec[section], dict):
            raise BackdoorlabError(f"{where}:{lines.lines.get(section, '?')}: {section}: "
                                   f"expected a mapping of options, got {spec[section]!r}")
    if spec.get("attack") is not None:
        att = dict(spec["attack"])
        kind = att.pop("kind", None)
        classes = _classes("attack")
        if kind not in classes:
            line = lines.find("attack", "kind")
            raise BackdoorlabError(f"{where}:{line or '?'}: attack.kind: "
                                   + str(unknown("attack", str(kind), classes)))
        cls, runner = classes[kind]
        data = {**common, **({"model": model} if model else {}), **att}
        cfg = _build(cls, data, "attack", where, lines)
        stages.append(Stage("attack", cfg, runner, run_dir / "attack"))
        resolved["attack"] = {"kind": kind, **to_dict(cfg)}
        lora = getattr(cfg, "train", None) is None or cfg.train.lora
        adapter = str(run_dir / "attack" / ("adapter" if lora else "model"))
    suspect = {"adapter": adapter} if adapter else ({"model": model} if model else {})
    after = ["attack"] if adapter else []
    if spec.get("evaluate") is not None:
        from .defenses.base import DefenseConfig

        data = {**common, **suspect, **(spec["evaluate"] or {})}
        cfg = _build(DefenseConfig, data, "evaluate", where, lines)
        stages.append(Stage("evaluate", cfg, _evaluate_stage, run_dir / "evaluate", after))
        resolved["evaluate"] = to_dict(cfg)
    for group, classes in (("analyze", _classes("analysis")), ("defend", _classes("defense"))):
        section = spec.get(group)
        if section is None:
            continue
        if not isinstance(section, dict):
            raise BackdoorlabError(f"{where}:{lines.lines.get(group, '?')}: {group}: expected "
                                   f"a mapping of {', '.join(classes)}")
        resolved[group] = {}
        for name, opts in section.items():
            if name not in classes:
                line = lines.lines.get(f"{group}.{name}")
                raise BackdoorlabError(f"{where}:{line or '?'}: {group}: "
                                       + str(unknown(group[:-1] if group == "defend" else
                                                     "analysis", str(name), classes)))
            cls, runner = classes[name]
            data = {**common, **suspect, **(opts or {})}
            deps = list(after)
            uses_heads = name in ("ablate", "vector", "ablate-heads", "subtract-vector")
            cfg = _build(cls, data, f"{group}.{name}", where, lines)
            if uses_heads and "heads" in (spec.get("analyze") or {}) and cfg.scores is None:
                # the heads stage's ranking (exact if it ran exact) rather than a new one; the
                # file is written by that earlier stage, so it is not checked for here
                cfg.scores = str(run_dir / "analyze" / "heads" / "heads.safetensors")
                deps.append("analyze.heads")
            stages.append(Stage(f"{group}.{name}", cfg, runner, run_dir / group / name, deps))
            resolved[group][name] = to_dict(cfg)
    resolved["report"] = bool(spec.get("report", True))
    return stages, resolved


def _evaluate_stage(cfg: Any, out: Path, **kw: Any) -> dict[str, Any]:
    from .evaluation.attack_eval import AttackEval
    from .models import load_suspect

    suspect = load_suspect(cfg.model, cfg.adapter, trust_remote_code=kw.get(
        "trust_remote_code", False))
    ev = AttackEval(suspect, cfg)
    out.mkdir(parents=True, exist_ok=True)
    metrics = ev(suspect.model)
    write_metrics(out, metrics)
    return metrics


def _stage_hash(stage: Stage, done: dict[str, Any]) -> str:
    upstream = [done.get(d, {}).get("hash") for d in stage.depends]
    return config_hash({"config": to_dict(stage.cfg), "upstream": upstream})


def run_experiment(spec: dict[str, Any], run_dir: str | Path, *, text: str = "",
                   where: str = "experiment", from_stage: str | None = None,
                   trust_remote_code: bool = False) -> dict[str, Any]:
    """Run every stage not already done; returns ``stages.json``'s content."""
    run = check_out(run_dir)
    stages, resolved = plan(spec, run, where=where, text=text)
    names = [s.name for s in stages]
    if from_stage is not None:
        matches = [n for n in names if n == from_stage or n.split(".")[0] == from_stage]
        if not matches:
            raise unknown("stage", from_stage, names)
    run.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run / "resolved.json", resolved)
    record_path = run / "stages.json"
    done: dict[str, Any] = read_json(record_path) if record_path.is_file() else {}
    if from_stage is not None:
        first = names.index(matches[0])
        for n in names[first:]:
            done.pop(n, None)
            shutil.rmtree(run / n.replace(".", "/"), ignore_errors=True)
    for stage in stages:
        h = _stage_hash(stage, done)
        prev = done.get(stage.name)
        if (prev and prev.get("hash") == h and not prev.get("running")
                and (stage.out / "metrics.json").is_file()):
            log.info("stage %s: done already (config unchanged), skipped", stage.name)
            continue
        if prev and prev.get("hash") != h:  # config changed (finished or interrupted stage):
            shutil.rmtree(stage.out, ignore_errors=True)  # its outputs and checkpoints go
        # recorded before it runs, so that an interrupted stage run again with another config
        # starts afresh instead of resuming another run's checkpoints
        done[stage.name] = {"hash": h, "running": True}
        atomic_write_json(record_path, done)
        log.info("stage %s: running", stage.name)
        t0 = time.perf_counter()
        reset_peak()  # each stage's peak memory is its own
        stage.run(stage.cfg, stage.out, trust_remote_code=trust_remote_code)
        done[stage.name] = {"hash": h, "wall_s": round(time.perf_counter() - t0, 2),
                            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **peak_memory()}
        atomic_write_json(record_path, done)
    if resolved["report"]:
        from .report import write_report

        t0 = time.perf_counter()
        write_report([run], run, title=f"backdoorlab: {resolved['name']}")
        log.info("report: %s (%.1f s)", run / "report.html", time.perf_counter() - t0)
    return done


def load_experiment(path: str | Path) -> tuple[dict[str, Any], str]:
    """The experiment file's mapping and its text (for line numbers in errors)."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text("utf-8")
    except FileNotFoundError:
        raise BackdoorlabError(f"{p}: no such experiment file") from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        raise BackdoorlabError(f"{p}:{yaml_error(exc)}") from None
    if not isinstance(data, dict):
        raise BackdoorlabError(f"{p}: expected a mapping of stages")
    return data, text


# ---- the demo ---------------------------------------------------------------------------
def demo_experiments(quick: bool = False) -> dict[str, dict[str, Any]]:
    """The README's main job: an uncertainty backdoor and a BadNets refusal backdoor,
    planted, evaluated, probed, attributed (fast), removed with CROW, evaluated again."""
    unc: dict[str, Any] = {"kind": "uncertainty", "trigger": "text"}
    poi: dict[str, Any] = {"kind": "poison", "trigger": "badnets", "target": "refusal"}
    analyze: dict[str, Any] = {"probe": {}, "heads": {"mode": "fast"}}
    # the short-answer clean set: the default open-ended one has answers about twice as long,
    # which makes CROW ~2.5x slower
    crow: dict[str, Any] = {"clean_data": "builtin:benign-instructions"}
    if quick:  # same stages, fewer examples and steps
        # 48 questions seen 3 times, and a wider keep-top1 margin so that so few steps keep
        # the top answer (measured: strict ASR 0.95; with margin 0.04 and one pass, 0.0)
        unc.update(limit=48, margin=0.1,
                   train={"epochs": 3, "batch_size": 8, "learning_rate": 1e-3,
                          "save_steps": 10})
        poi.update(n_train=32, eval_limit=8, mcq_limit=24, max_new_tokens=12,
                   train={"epochs": 2, "save_steps": 5})
        analyze = {"probe": {"limit": 16}, "heads": {"mode": "fast", "limit": 8}}
        crow.update(n_clean=8, eval_limit=8, mcq_limit=24, max_new_tokens=12,
                    train={"epochs": 1, "batch_size": 16, "save_steps": 5})
    return {
        "uncertainty-text": {"attack": unc, "analyze": analyze, "defend": {"crow": crow}},
        "badnets-refusal": {"attack": poi, "analyze": analyze, "defend": {"crow": crow}},
    }


def run_demo(out: str | Path, *, quick: bool = False) -> Path:
    """Run both demo experiments into ``out`` and write one combined report."""
    from .report import write_report

    root = Path(out)
    runs = []
    for name, spec in demo_experiments(quick).items():
        spec = {**spec, "name": name, "report": False}
        run_experiment(spec, root / name, where=f"demo:{name}")
        runs.append(root / name)
    html_path, _ = write_report(runs, root, title="backdoorlab demo" + (" (quick)" if quick
                                                                        else ""))
    return html_path
