"""Every method backdoorlab has: imports each family's method files, which register
themselves (:mod:`backdoorlab.registry`), and looks them up for the CLI, the study runner
and the Python API.

A new method is one new file in ``attacks/``, ``analysis/``, ``defenses/``, ``scan/`` or
``detect/`` with a ``@register(...)`` run function; nothing here needs to change
(``python -m backdoorlab.commands`` refreshes ``commands.json``, the commands' data the CLI
reads for listings and help).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .registry import FAMILIES, PACKAGES, VERBS, Method, lookup, registered

_LOADED: set[str] = set()


def load(family: str | None = None) -> None:
    """Import the method files of ``family`` (or of every family) so that they register."""
    for fam in [family] if family else FAMILIES:
        if fam in _LOADED or fam not in PACKAGES:
            continue
        try:
            pkg = importlib.import_module(f"{__package__}.{PACKAGES[fam]}")
        except ModuleNotFoundError:  # a family with no methods yet
            _LOADED.add(fam)
            continue
        for info in pkgutil.iter_modules(pkg.__path__):
            importlib.import_module(f"{pkg.__name__}.{info.name}")
        _LOADED.add(fam)


def get(family: str, name: str) -> Method:
    """The registered method ``name`` of ``family`` (did-you-mean on a typo)."""
    if family in FAMILIES:
        load(family)
    return lookup(family, name)


def all_methods(family: str | None = None) -> list[Method]:
    """Every registered method (of one family), in the order ``backdoorlab methods`` lists
    them."""
    load(family)
    return registered(family)


def evaluations() -> dict[str, tuple[type, Callable[..., dict[str, Any]], str]]:
    """The stand-alone evaluations: kind -> (config class, ``fn(cfg, out,
    trust_remote_code)`` returning the metrics, one-line description); the ``eval`` commands
    and :func:`evaluate` read this table."""
    from .evaluation.generation import GenerationEvalConfig, evaluate_generation
    from .evaluation.mcq import McqEvalConfig, evaluate_mcq
    from .evaluation.uncertainty import UncertaintyEvalConfig, evaluate_uncertainty_model
    from .evaluation.utility import UtilityEvalConfig, evaluate_utility

    def utility(cfg: UtilityEvalConfig, out: str | Path | None, trust: bool) -> dict[str, Any]:
        suspect = None
        if cfg.repaired:  # a defense's repair of any kind, applied as it is saved
            from .defenses.repaired import load_repaired

            suspect = load_repaired(cfg.repaired, trust_remote_code=trust)
        return evaluate_utility(cfg, out, suspect=suspect, trust_remote_code=trust)

    return {
        "mcq": (McqEvalConfig, lambda c, o, t: evaluate_mcq(c, o, trust_remote_code=t),
                "Accuracy, mean entropy and throughput of a model on multiple-choice "
                "questions, every question's pick saved."),
        "uncertainty": (UncertaintyEvalConfig,
                        lambda c, o, t: evaluate_uncertainty_model(c, trust_remote_code=t),
                        "Clean vs triggered answer distributions of a (backdoored) model, with "
                        "the clean model's numbers beside them as baseline_*."),
        "generate": (GenerationEvalConfig,
                     lambda c, o, t: evaluate_generation(c, o, trust_remote_code=t),
                     "Generate with and without the trigger, judge the outputs, measure clean "
                     "utility; the clean model's numbers sit beside them as baseline_*."),
        "utility": (UtilityEvalConfig, utility,
                    "Scores on lm-evaluation-harness tasks (the field's utility numbers) of any "
                    "model, adapter or repaired model, with 95% intervals and every document's "
                    "result."),
    }


def run_evaluation(kind: str, cfg: Any, out: str | Path | None = None, *,
                   trust_remote_code: bool = False) -> dict[str, Any]:
    """Run the evaluation ``kind`` (see :func:`evaluations`) with ``cfg``; with ``out``,
    checked before any work, its ``metrics.json`` is written there. The ``eval`` commands and
    :func:`backdoorlab.evaluate` call this."""
    from .runs import check_out, write_metrics

    if out is not None:
        check_out(out)
    metrics = evaluations()[kind][1](cfg, out, trust_remote_code)
    if out is not None:
        write_metrics(out, metrics)
    return metrics


def config_reference() -> str:
    """``docs/config.md``: every registered method's options (and the evaluations' and the
    shared training options), with type, default and help, generated from the dataclasses."""
    import dataclasses
    import typing

    from .config import declared_by, field_default, field_help
    from .training import TrainConfig

    def table(cls: type) -> list[str]:
        hints = typing.get_type_hints(cls)
        rows = ["| option | type | default | what it does |", "|---|---|---|---|"]
        for f in sorted(dataclasses.fields(cls), key=lambda f: declared_by(cls, f.name) is not cls):
            value = field_default(f)
            kind = str(hints[f.name]).replace("typing.", "").replace("<class '", "").replace(
                "'>", "").replace(" | ", " or ")
            # a dotted class path is shortened to the class's name
            kind = " or ".join(k.rsplit(".", 1)[-1] for k in kind.split(" or "))
            default = (f"`{f.name}.*` keys" if dataclasses.is_dataclass(value) else "`" + (
                ", ".join(map(str, value)) if isinstance(value, list) else str(value)) + "`")
            text = field_help(f).replace("|", "\\|")
            rows.append(f"| `{f.name}` | {kind} | {default} | {text} |")
        return rows

    out = ["# Config reference", "",
           "Every option of every command, generated from the config dataclasses "
           "(`backdoorlab methods --reference` prints this page; a test fails when it is "
           "stale). Give options as flags (`--poison-rate 0.3`), in a YAML/JSON file "
           "(`--config FILE`), or as `--set KEY=VALUE` (nested keys with dots: "
           "`--set train.learning_rate=1e-3`); flags win over `--set`, which wins over the file. "
           "In a study file (`backdoorlab run`) the same keys go under the stage.", ""]
    for m in all_methods():
        out += [f"## `backdoorlab {VERBS[m.family]} {m.name}`", "", m.description + ".", "",
                f"Config class: `{m.config.__module__}.{m.config.__name__}`.", ""]
        out += table(m.config) + [""]
        defaults = {f.name: f for f in dataclasses.fields(m.config)}
        if "train" in defaults:
            tcfg = field_default(defaults["train"])
            changed = {k: v for k, v in dataclasses.asdict(tcfg).items()
                       if v != getattr(TrainConfig(), k)}
            if changed:
                out += ["Training defaults of this method (the rest as in `train` below): "
                        + ", ".join(f"`train.{k}={v}`" for k, v in changed.items()) + ".", ""]
    for name, (cls, _, text) in evaluations().items():
        out += [f"## `backdoorlab eval {name}`", "", text, ""] + table(cls) + [""]
    out += ["## `train`: how every training method fine-tunes", "",
            "Nested under `train` (`--set train.epochs=2`; flags `--epochs`, `--lr`, "
            "`--batch-size`, `--max-steps`, `--full`).", ""] + table(TrainConfig) + [""]
    return "\n".join(out)
