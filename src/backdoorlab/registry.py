"""The registry of methods: every attack, analysis and defense registers once, in its own
file, with its name, its config dataclass, its run function and a one-line description.

>>> @register("defense", "crow", CrowConfig, "CROW: layer-consistency fine-tuning")
... def run_crow(cfg, out, *, trust_remote_code=False): ...

The CLI, the study runner (``backdoorlab run``) and the Python API look methods up here, and
``backdoorlab methods`` lists them. :meth:`Method.run` is the one signature every method
shares: ``run(cfg, out) -> RunResult``, ``cfg`` a config object or a plain mapping (checked
like a config file, unknown keys named with a did-you-mean).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import from_dict, to_dict
from .errors import BackdoorlabError, unknown
from .runs import RunResult, check_out

#: the method families, as the CLI names them
#: (``backdoorlab attack|analyze|defend|scan|detect``)
FAMILIES = ("attack", "analysis", "defense", "scan", "detect")
#: the CLI verb of each family
VERBS = {"attack": "attack", "analysis": "analyze", "defense": "defend", "scan": "scan",
         "detect": "detect"}
#: the package each family's method files live in
PACKAGES = {"attack": "attacks", "analysis": "analysis", "defense": "defenses", "scan": "scan",
            "detect": "detect"}
#: files a run directory may hold that are artefacts worth returning (name -> relative path)
ARTIFACTS = ("adapter", "model", "interventions.json", "generations.jsonl", "probs.safetensors",
             "heads.safetensors", "vector.safetensors", "probe.safetensors", "curve.json",
             "defense.json", "detect.json", "scores.jsonl", "report.html")


@dataclass(frozen=True)
class Method:
    """One registered method."""

    family: str
    name: str
    config: type
    runner: Callable[..., Any]
    description: str

    def make_config(self, cfg: Any = None, **options: Any) -> Any:
        """``cfg`` (a config object, a mapping, or None for the defaults) with ``options``
        (dotted keys such as ``train.epochs`` allowed) applied on top, checked."""
        if isinstance(cfg, self.config) and not options:
            return cfg
        base: dict[str, Any] = {}
        if isinstance(cfg, self.config):
            base = to_dict(cfg)
        elif isinstance(cfg, Mapping):
            base = dict(cfg)
        elif cfg is not None:
            raise BackdoorlabError(f"{self.family} {self.name}: expected a "
                                   f"{self.config.__name__} or a mapping, got "
                                   f"{type(cfg).__name__}")
        return from_dict(self.config, {**base, **options}, where=f"{self.family} {self.name}")

    def run(self, cfg: Any, out: str | Path, *, trust_remote_code: bool = False) -> RunResult:
        """Run the method into the directory ``out``; every method returns a
        :class:`~backdoorlab.runs.RunResult`."""
        cfg = self.make_config(cfg)
        check_out(out)
        res = self.runner(cfg, out, trust_remote_code=trust_remote_code)
        if isinstance(res, RunResult):
            res.artifacts = {**collect_artifacts(res.out_dir), **res.artifacts}
            return res
        return RunResult(out_dir=Path(out), metrics=res, artifacts=collect_artifacts(out))


def collect_artifacts(out: str | Path) -> dict[str, Path]:
    """The artefacts a run directory holds, by name (``adapter``, ``model``, ...)."""
    d = Path(out)
    found = {name.split(".")[0]: d / name for name in ARTIFACTS if (d / name).exists()}
    found.update({p.stem: p for p in sorted(d.glob("*.png"))})
    return found


_METHODS: dict[tuple[str, str], Method] = {}


def register(family: str, name: str, config: type, description: str
             ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated run function as ``family``'s method ``name``. The function
    receives a checked config object; called directly it also takes a plain mapping."""
    if family not in FAMILIES:
        raise BackdoorlabError(f"register: unknown family {family!r}")

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        if (family, name) in _METHODS:
            raise BackdoorlabError(f"{family} {name!r} is registered twice")

        @functools.wraps(fn)
        def run(cfg: Any, out: str | Path, **kw: Any) -> Any:
            return fn(method.make_config(cfg), out, **kw)

        method = Method(family, name, config, fn, description)
        _METHODS[(family, name)] = method
        return run

    return deco


def registered(family: str | None = None) -> list[Method]:
    """The methods registered so far (all families, or one), by family then name."""
    order = {f: i for i, f in enumerate(FAMILIES)}
    return sorted((m for m in _METHODS.values() if family in (None, m.family)),
                  key=lambda m: (order[m.family], m.name))


def lookup(family: str, name: str) -> Method:
    """A registered method; an unknown name is an error with a did-you-mean."""
    if family not in FAMILIES:
        raise unknown("method family", family, FAMILIES)
    try:
        return _METHODS[(family, name)]
    except KeyError:
        raise unknown(family, name, [m.name for m in registered(family)]) from None
