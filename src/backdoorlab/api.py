"""The Python API: the same registered methods the CLI runs, one verb per family.

>>> import backdoorlab as bl
>>> r = bl.attack("poison", trigger="badnets", target="refusal", out="runs/bd")
>>> r.metrics["asr_triggered"], r.adapter
>>> bl.defend("crow", adapter=r.adapter, out="runs/crow")
>>> bl.analyze("probe", adapter=r.adapter, out="runs/probe")
>>> bl.evaluate("generate", adapter=r.adapter)
>>> bl.detect("onion", prompts="requests.jsonl", adapter=r.adapter, out="runs/screen")

Options are the config fields (``backdoorlab methods``, ``docs/config.md``); nested ones
take dotted names through a mapping: ``bl.attack("poison", out=..., **{"train.epochs": 1})``
or ``config={"train": {"epochs": 1}}``. Every call returns a
:class:`~backdoorlab.runs.RunResult`.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    ``realign``, ``ablate-heads``, ``subtract-vector``, ``cleangen``, ``quantize``), evaluated
    before and after."""
    return _run("defense", name, out, config, trust_remote_code, options)


def analyze(name: str, *, out: str | Path, config: Any = None, trust_remote_code: bool = False,
            **options: Any) -> RunResult:
    """Explain a backdoor with the analysis ``name`` (``probe``, ``heads``, ``ablate``,
    ``vector``, ``consistency``, ``neurons``)."""
    return _run("analysis", name, out, config, trust_remote_code, options)


def scan(name: str, *, out: str | Path, config: Any = None, trust_remote_code: bool = False,
         **options: Any) -> RunResult:
    """Scan a suspect (``model=`` and/or ``adapter=``) for a backdoor without its trigger with
    the scanner ``name`` (``inversion``, ``contrast``, ``trigger``, ``weights``, ``mcq``, or
    ``audit``: one verdict from ``trigger`` and ``mcq``);
    ``metrics`` holds the score, the verdict and the evidence (``scan.json``)."""
    return _run("scan", name, out, config, trust_remote_code, options)


def detect(name: str, *, out: str | Path, config: Any = None, trust_remote_code: bool = False,
           **options: Any) -> RunResult:
    """Flag the prompts that carry a trigger with the input detector ``name`` (``onion``,
    ``shift``): ``prompts=`` a stream to screen, or ``trigger=`` to measure the detector on
    held-out prompts with that trigger planted in half; ``metrics`` holds the threshold and,
    with a trigger, ROC-AUC, TPR/FPR and how often the trigger was blamed (``detect.json``)."""
    return _run("detect", name, out, config, trust_remote_code, options)


def build_zoo(spec: str, *, out: str | Path, variant: str | None = None,
              shard: str | None = None, trust_remote_code: bool = False) -> dict[str, Any]:
    """Build (or finish) the zoo ``spec`` (a YAML file or ``builtin:smol``) into ``out``;
    returns its manifest (``zoo.json``)."""
    from .zoo import build

    return build(spec, out, variant=variant, shard=shard, trust_remote_code=trust_remote_code)


def scan_zoo(zoo: str | Path, *, out: str | Path,
             scanners: Sequence[str] = ("inversion", "contrast", "weights", "trigger",
                                        "comply", "code", "mcq", "audit"),
             fpr: float = 0.05, trust_remote_code: bool = False, **options: Any) -> dict[str, Any]:
    """Every scanner on every model of ``zoo``: ROC-AUC, TPR at ``fpr``, target recovery,
    seconds per model (``bench.json``); ``options`` go to each scanner that has them."""
    from .zoo import scan_zoo as bench

    return bench(zoo, out, scanners=list(scanners), options=options, fpr=fpr,
                 trust_remote_code=trust_remote_code)


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
    """Every registered method (of one family: ``attack``, ``analysis``, ``defense``,
    ``scan``)."""
    from .catalog import all_methods

    return all_methods(family)
