"""The Python API: the same registered methods the CLI runs, as four verbs.

>>> import backdoorlab as bl
>>> r = bl.attack("poison", trigger="badnets", target="refusal", out="runs/bd")
>>> r.metrics["asr_triggered"], r.adapter
>>> bl.defend("crow", adapter=r.adapter, out="runs/crow")
>>> bl.analyze("probe", adapter=r.adapter, out="runs/probe")
>>> bl.evaluate("generate", adapter=r.adapter)

Options are the config fields (``backdoorlab methods``, ``docs/config.md``); nested ones
take dotted names through a mapping: ``bl.attack("poison", out=..., **{"train.epochs": 1})``
or ``config={"train": {"epochs": 1}}``. Every call returns a
:class:`~backdoorlab.runs.RunResult`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .registry import Method
from .runs import RunResult


def _run(family: str, name: str, out: str | Path, config: Any, trust_remote_code: bool,
         options: dict[str, Any]) -> RunResult:
    from .catalog import get

    method = get(family, name)
    return method.run(method.make_config(config, **options), out,
                      trust_remote_code=trust_remote_code)


def attack(name: str, *, out: str | Path, config: Any = None, trust_remote_code: bool = False,
           **options: Any) -> RunResult:
    """Plant a backdoor with the attack ``name`` (``poison``, ``unalign``, ``uncertainty``);
    the run directory ``out`` holds the adapter, its model card and the metrics."""
    return _run("attack", name, out, config, trust_remote_code, options)


def defend(name: str, *, out: str | Path, config: Any = None, trust_remote_code: bool = False,
           **options: Any) -> RunResult:
    """Repair a suspect model with the defense ``name`` (``crow``, ``finetune``, ``prune``,
    ``realign``, ``ablate-heads``, ``subtract-vector``), evaluated before and after."""
    return _run("defense", name, out, config, trust_remote_code, options)


def analyze(name: str, *, out: str | Path, config: Any = None, trust_remote_code: bool = False,
            **options: Any) -> RunResult:
    """Explain a backdoor with the analysis ``name`` (``probe``, ``heads``, ``ablate``,
    ``vector``, ``consistency``, ``neurons``)."""
    return _run("analysis", name, out, config, trust_remote_code, options)


def evaluate(kind: str, *, out: str | Path | None = None, trust_remote_code: bool = False,
             **options: Any) -> RunResult:
    """Evaluate a model: ``mcq`` (accuracy), ``generate`` (a generation backdoor beside the
    clean model), ``uncertainty`` (the uncertainty backdoor beside the clean model) or
    ``defense`` (``repaired=DIR``: a defense run's suspect and repaired model); with ``out``,
    ``metrics.json`` is written there."""
    from .config import from_dict
    from .errors import unknown

    if kind == "defense":
        from .defenses.repaired import evaluate_defense

        metrics = evaluate_defense(options.pop("repaired"), out,
                                   trust_remote_code=trust_remote_code, **options)
        return RunResult(out_dir=Path(out or "."), metrics=metrics)
    from .catalog import evaluations, run_evaluation

    table = evaluations()
    if kind not in table:
        raise unknown("evaluation", kind, [*table, "defense"])
    cfg = from_dict(table[kind][0], options, where=f"evaluate {kind}")
    metrics = run_evaluation(kind, cfg, out, trust_remote_code=trust_remote_code)
    return RunResult(out_dir=Path(out or "."), metrics=metrics)


def methods(family: str | None = None) -> list[Method]:
    """Every registered method (of one family: ``attack``, ``analysis``, ``defense``)."""
    from .catalog import all_methods

    return all_methods(family)
