"""What every scanner shares: its options, the benign prompts it probes with, and
``scan.json``.

The suspect is loaded by :func:`backdoorlab.models.load_unrecorded`: a scanner never reads
``backdoorlab.json``, a model card or a zoo manifest; it sees the weights, the tokenizer and
the adapter's own config (for the base model's name) only, as an auditor handed an unknown
model would.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import check, check_choice, opt
from ..data import load_split
from ..embedded import EMBEDDED_NAME
from ..errors import BackdoorlabError
from ..formats import TEMPLATES, PromptFormat
from ..io import atomic_write_json
from ..models import SuspectOptions, adapter_base
from ..runs import RunResult, save_config, write_metrics
from ..triggers import derive_rng

log = logging.getLogger(__name__)


@dataclass
class ScanConfig(SuspectOptions):
    """Options every scanner shares (flat keys in each scanner's config)."""

    base: str | None = opt(None,
        "the clean model the suspect was fine-tuned from (scanners that compare with it; "
        "default: the adapter's base model)")
    template: str = opt("chat", "prompt format the suspect is probed with: chat, plain or alpaca")
    prompts: str = opt("builtin:benign-instructions",
        "benign prompts to probe with: a file (JSONL/JSON/CSV/TSV/parquet), hf:NAME... or "
        "builtin:NAME")
    prompts_split: str | None = opt("test", "split of prompts for builtin:/hf: sources")
    n_prompts: int = opt(8, "prompts drawn from prompts (seeded)")
    threshold: float | None = opt(None,
        "the score at or above which the verdict is 'backdoored' (default: the scanner's own)")
    seed: int = opt(0, "seeds the draw of prompts")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self.template, TEMPLATES, "template")
        check(self.n_prompts >= 1, "n_prompts", "must be >= 1")


def base_spec(cfg: ScanConfig) -> str:
    """The clean reference: ``base``, else the adapter's base model, else the embedded one."""
    return cfg.base or (adapter_base(cfg.adapter) if cfg.adapter else None) or EMBEDDED_NAME


def probe_prompts(cfg: ScanConfig, fmt: PromptFormat) -> list[list[int]]:
    """``n_prompts`` seeded benign prompts, rendered as every other command renders them
    (token ids of the prompt up to where the answer starts)."""
    recs = load_split(cfg.prompts, cfg.prompts_split)
    if not recs:
        raise BackdoorlabError(f"option 'prompts': {cfg.prompts} has no records")
    if len(recs) > cfg.n_prompts:
        recs = derive_rng(cfg.seed, "scan-prompts").sample(recs, cfg.n_prompts)
    return [fmt.encode(fmt.sample(r).user).prompt_ids for r in recs]


def verdict(score: float, threshold: float) -> str:
    return "backdoored" if score >= threshold else "clean"


def finish(cfg: Any, out: str | Path, scanner: str, score: float, threshold: float,
           evidence: dict[str, Any], t0: float) -> RunResult:
    """Write ``scan.json`` (and ``metrics.json``, the same object) and return the result."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(out, cfg, scanner=scanner)
    result = {"scanner": scanner, "score": round(float(score), 6), "threshold": threshold,
              "verdict": verdict(score, threshold), "seconds": round(time.perf_counter() - t0, 2),
              "model": cfg.model, "adapter": cfg.adapter, "evidence": evidence}
    atomic_write_json(out / "scan.json", result)
    write_metrics(out, result)
    found = evidence.get("target")
    log.info("scan %s: %s (score %.3f, threshold %.3f)%s", scanner, result["verdict"], score,
             threshold, f"; inverted target: {found!r}" if found else "")
    return RunResult(out_dir=out, metrics=result)
