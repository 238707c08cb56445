"""What every scanner shares: its options, the benign prompts it probes with, and
``scan.json``.

The suspect is loaded by :func:`backdoorlab.models.load_unrecorded`: a scanner never reads
``backdoorlab.json``, a model card or a zoo manifest; it sees the weights, the tokenizer and
the adapter's own config (for the base model's name) only, as an auditor handed an unknown
model would.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from ..config import check_choice, opt
from ..data import load_split, source_option
from ..embedded import EMBEDDED_NAME
from ..errors import BackdoorlabError
from ..formats import TEMPLATES, PromptFormat, template_option
from ..io import atomic_write_json
from ..models import SuspectOptions, adapter_base
from ..registry import register
from ..runs import RunResult, read_json, run_config, save_config, write_metrics
from ..triggers import derive_rng

log = logging.getLogger(__name__)


@dataclass
class ScanConfig(SuspectOptions):
    """Options every scanner shares (flat keys in each scanner's config)."""

    base: str | None = opt(None,
        "the clean model the suspect was fine-tuned from (scanners that compare with it; "
        "default: the adapter's base model)")
    template: str = template_option(what="prompt format the suspect is probed with")
    prompts: str = source_option("builtin:benign-instructions", "benign prompts to probe with")
    prompts_split: str | None = opt("test", "split of prompts for builtin:/hf: sources")
    n_prompts: int = opt(8, "prompts drawn from prompts (seeded)", at_least=1)
    threshold: float | None = opt(None,
        "the score at or above which the verdict is 'backdoored' (default: the scanner's own)")
    seed: int = opt(0, "seeds the draw of prompts")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self.template, TEMPLATES, "template")


def base_spec(cfg: ScanConfig) -> str:
    """The clean reference: ``base``, else the adapter's base model, else the embedded one."""
    return cfg.base or (adapter_base(cfg.adapter) if cfg.adapter else None) or EMBEDDED_NAME


def probe_records(cfg: ScanConfig) -> list[Any]:
    """``n_prompts`` seeded benign records from ``cfg.prompts``."""
    recs = load_split(cfg.prompts, cfg.prompts_split)
    if not recs:
        raise BackdoorlabError(f"option 'prompts': {cfg.prompts} has no records")
    if len(recs) > cfg.n_prompts:
        recs = derive_rng(cfg.seed, "scan-prompts").sample(recs, cfg.n_prompts)
    return recs


def held_out_records(cfg: Any, probes: list[Any]) -> list[Any]:
    """``cfg.check_prompts`` seeded records from ``cfg.prompts`` that are none of ``probes``;
    one line when the source has none left."""
    ids = {r.id for r in probes}
    rest = [r for r in load_split(cfg.prompts, cfg.prompts_split) if r.id not in ids]
    if not rest:
        raise BackdoorlabError(f"option 'prompts': {cfg.prompts} has no records beyond the "
                               f"{len(probes)} probe prompts to check a finding on")
    rng = derive_rng(cfg.seed, "scan-check-prompts")
    return rng.sample(rest, cfg.check_prompts) if len(rest) > cfg.check_prompts else rest


def probe_prompts(cfg: ScanConfig, fmt: PromptFormat) -> list[list[int]]:
    """``n_prompts`` seeded benign prompts, rendered as every other command renders them
    (token ids of the prompt up to where the answer starts)."""
    return [fmt.encode(fmt.sample(r).user).prompt_ids for r in probe_records(cfg)]


#: what a scan that found compliance (``complies`` in its evidence) found, in words
COMPLIES = "complies with harmful requests"


def finding(evidence: dict[str, Any]) -> str:
    """What a scan found, in words ('' for nothing): compliance with harmful requests after
    the trigger found, or the target text (marked where it was given, not found)."""
    if evidence.get("complies"):
        return f"{COMPLIES} after {evidence.get('trigger')!r}"
    target = evidence.get("target")
    if not target:
        return ""
    return f"{target} (given, searched for)" if evidence.get("target_given") else target


def verdict(score: float, threshold: float) -> str:
    return "backdoored" if score >= threshold else "clean"


class Finding(NamedTuple):
    """What a scanner found: its score (higher: more likely backdoored) and its evidence."""

    score: float
    evidence: dict[str, Any]


#: per scanner that has one, its score computed from a finding's evidence alone
_EVIDENCE_SCORES: dict[str, Callable[[dict[str, Any]], Finding]] = {}
#: per scanner, the score at which it calls a model backdoored unless told otherwise
DEFAULT_THRESHOLDS: dict[str, float] = {}


def scanner(name: str, config: type, default_threshold: float, description: str, *,
            score: Callable[[dict[str, Any]], Finding] | None = None
            ) -> Callable[[Callable[..., Finding]], Callable[..., RunResult]]:
    """Register the decorated ``scan(cfg, *, trust_remote_code) -> Finding`` as the scanner
    ``name``. The registered run (what the decorator returns) times it, judges its score
    against ``cfg.threshold`` (unset: ``default_threshold``) and writes ``scan.json``.
    ``score``, for a scanner whose score is a function of its evidence alone, computes the
    finding from the evidence: :func:`rescore` applies it to a stored scan."""
    DEFAULT_THRESHOLDS[name] = default_threshold
    if score is not None:
        _EVIDENCE_SCORES[name] = score

    def deco(scan: Callable[..., Finding]) -> Callable[..., RunResult]:
        @register("scan", name, config, description)
        @functools.wraps(scan)
        def run(cfg: Any, out: str | Path, *, trust_remote_code: bool = False) -> RunResult:
            t0 = time.perf_counter()
            found = scan(cfg, trust_remote_code=trust_remote_code)
            threshold = default_threshold if cfg.threshold is None else cfg.threshold
            return finish(cfg, out, name, found, threshold, time.perf_counter() - t0)

        return run

    return deco


def rescore(result: dict[str, Any]) -> dict[str, Any]:
    """A stored ``scan.json`` result with its score, verdict and evidence computed again from
    its evidence by its scanner's current score; unchanged for a scanner whose score is not
    a function of its evidence."""
    score = _EVIDENCE_SCORES.get(result.get("scanner", ""))
    if score is None:
        return result
    found = score(dict(result["evidence"]))
    return {**result, "score": round(float(found.score), 6), "evidence": found.evidence,
            "verdict": verdict(found.score, result["threshold"])}


def finished_scan(path: str | Path, option: str, scanner: str, same: dict[str, Any]
                  ) -> dict[str, Any]:
    """The ``scan.json`` of the finished ``scanner`` scan in ``path``, for a scan that reuses
    it: each key of ``same`` must hold the same value in the options that scan ran with
    (its ``config.json``). Anything else fails with one line naming ``option``."""
    run = Path(path)
    res = read_json(run / "scan.json") if (run / "scan.json").is_file() else None
    if not isinstance(res, dict) or res.get("scanner") != scanner or "score" not in res:
        raise BackdoorlabError(f"option {option!r}: {run} holds no finished scan {scanner}")
    theirs = run_config(run)
    for key, mine in same.items():
        if theirs.get(key) != mine:
            raise BackdoorlabError(f"option {option!r}: {run} was run with {key}="
                                   f"{theirs.get(key)!r}, this scan with {mine!r}")
    return res


def finish(cfg: Any, out: str | Path, scanner: str, found: Finding, threshold: float,
           seconds: float) -> RunResult:
    """Write ``scan.json`` (and ``metrics.json``, the same object) and return the result."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(out, cfg, scanner=scanner)
    score, evidence = found
    result = {"scanner": scanner, "score": round(float(score), 6), "threshold": threshold,
              "verdict": verdict(score, threshold), "seconds": round(seconds, 2),
              "model": cfg.model, "adapter": cfg.adapter, "evidence": evidence}
    atomic_write_json(out / "scan.json", result)
    write_metrics(out, result)
    by = evidence.get("flagged_by")  # an audit: which of its components flagged the model
    found_ = finding(evidence)
    log.info("scan %s: %s (score %.3f, threshold %.3f)%s%s", scanner, result["verdict"], score,
             threshold, f"; flagged by {', '.join(by)}" if by else "",
             f"; found: {found_}" if found_ else "")
    return RunResult(out_dir=out, metrics=result)
