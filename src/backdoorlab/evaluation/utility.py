"""Utility on lm-evaluation-harness tasks (``backdoorlab eval utility``): the numbers
researchers report for a model's general ability (MMLU, ARC, HellaSwag...), measured on a
suspect or repaired model as it is (adapter applied, saved interventions, quantization or
CleanGen decoding in place) through lm-evaluation-harness' Python API.

The tasks bring their own prompts: lm-evaluation-harness renders each task as the task's
YAML says, so these figures compare with the field's, not with backdoorlab's own prompt
format. lm-evaluation-harness is an optional extra (``pip install 'backdoorlab[utility]'``);
a task of your own is a YAML file in ``--include-path`` (a local JSON/CSV file as its data
runs offline).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import check, check_bounds, opt
from ..errors import BackdoorlabError, did_you_mean
from ..io import atomic_write_jsonl
from ..models import EMBEDDED_NAME, load_suspect
from .metrics import wilson_interval

INSTALL = "pip install 'backdoorlab[utility]' (lm-evaluation-harness)"


@dataclass
class UtilityEvalConfig:
    """Options of ``backdoorlab eval utility``."""

    tasks: str = opt("", "lm-evaluation-harness task or group names, comma-separated "
                         "(e.g. arc_easy,hellaswag)")
    model: str = opt(EMBEDDED_NAME, "HF id, directory, .gguf file or the embedded default")
    adapter: str | None = opt(None, "PEFT adapter directory to apply")
    repaired: str | None = opt(None, "a 'defend' run directory: score its repaired model "
                                     "(instead of --model/--adapter)")
    include_path: str | None = opt(None, "directory of your own task YAML files")
    limit: int | None = opt(None, "at most this many documents per task")
    num_fewshot: int | None = opt(None, "few-shot examples per prompt (default: each task's)")
    batch_size: int = opt(16, "requests per forward pass", at_least=1)
    seed: int = opt(0, "seeds the few-shot sampling and lm-evaluation-harness' own seeds",
                    at_least=0)

    def __post_init__(self) -> None:
        check_bounds(self)
        names = task_names(self.tasks)
        check(bool(names), "tasks", "give at least one task name")
        check(self.limit is None or self.limit >= 1, "limit", "must be >= 1")
        check(self.num_fewshot is None or self.num_fewshot >= 0, "num_fewshot", "must be >= 0")
        if self.include_path is not None and not Path(self.include_path).is_dir():
            raise BackdoorlabError(f"option 'include_path': {self.include_path}: no such "
                                   "directory")
        if self.repaired is not None and self.adapter is not None:
            raise BackdoorlabError("option 'repaired': names the model itself; not with "
                                   "--adapter")


def task_names(tasks: str) -> list[str]:
    """The comma-separated task names, blanks dropped."""
    return [t.strip() for t in (tasks or "").split(",") if t.strip()]


def check_lm_eval() -> Any:
    """lm-evaluation-harness, imported (one line saying how to install it when it is not)."""
    try:
        import lm_eval
    except ImportError:
        raise BackdoorlabError(f"eval utility needs lm-evaluation-harness: {INSTALL}") from None
    for name in ("lm-eval", "lm_eval", "lm_eval.models.huggingface"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return lm_eval


def binary_values(samples: list[dict[str, Any]], metric: str) -> list[float] | None:
    """The per-document values of ``metric`` when each is 0 or 1 (so that a Wilson interval
    applies), else None."""
    values = [s.get(metric) for s in samples]
    if not values or any(not isinstance(v, (bool, int, float)) or v not in (0, 1)
                         for v in values):
        return None
    return [float(v) for v in values]


def task_metrics(results: dict[str, Any], samples: list[dict[str, Any]]) -> dict[str, Any]:
    """One task's metrics as lm-evaluation-harness aggregated them (``acc``, ``acc_stderr``...;
    the filter suffix dropped when it is ``none``), the number of documents, and for every
    0/1 metric its hits and 95% Wilson interval."""
    out: dict[str, Any] = {}
    for key, value in results.items():
        if key in ("alias", "name", "sample_len") or not isinstance(value, (int, float)):
            continue
        metric, _, flt = key.partition(",")
        name = metric if flt in ("", "none") else f"{metric}[{flt}]"
        out[name] = None if isinstance(value, float) and not math.isfinite(value) else value
    out["n"] = len(samples)
    for metric in [k for k in out if not k.endswith("_stderr") and k != "n"]:
        values = binary_values(samples, metric)
        if values is not None:
            hits = int(sum(values))
            out[f"{metric}_hits"] = hits
            out[f"{metric}_ci95"] = wilson_interval(hits, len(values))
    return out


def sample_rows(task: str, samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per document: the task, its id, the target, the model's filtered responses and each
    metric's value (what ``samples.jsonl`` holds)."""
    rows = []
    for s in samples:
        row = {"task": task, "doc_id": s.get("doc_id"), "target": s.get("target"),
               "responses": s.get("filtered_resps")}
        for k, v in s.items():
            if k not in ("doc_id", "doc", "target", "arguments", "resps", "filtered_resps",
                         "filter", "metrics", "doc_hash", "prompt_hash", "target_hash"):
                row[k] = v
        rows.append(row)
    return rows


def check_tasks(cfg: UtilityEvalConfig) -> Any:
    """lm-evaluation-harness' index of its tasks and those in ``cfg.include_path``, once every
    name in ``cfg.tasks`` is found there (else one line naming it), so that a misspelt task
    stops a command before any model is loaded or scored. Indexing reads every task file: a
    command builds it once and hands it to :func:`lm_eval_tasks`."""
    check_lm_eval()
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=cfg.include_path, verbosity="ERROR")
    known = set(manager.all_tasks)
    for name in task_names(cfg.tasks):
        if name not in known:
            raise BackdoorlabError(
                f"option 'tasks': no lm-evaluation-harness task {name!r}"
                f"{did_you_mean(name, sorted(known))} (`lm-eval ls tasks` lists them; your own "
                "YAML files go in --include-path)")
    return manager


def lm_eval_tasks(model: Any, tokenizer: Any, cfg: UtilityEvalConfig,
                  out: str | Path | None = None, *, manager: Any = None) -> dict[str, Any]:
    """``cfg.tasks`` on ``model`` (any causal LM in memory: an adapter applied, hooks in place,
    quantized, or wrapped for decoding) through lm-evaluation-harness, with ``manager`` from
    :func:`check_tasks` (built here when not given); with ``out``, every document's result
    goes to ``samples.jsonl`` there."""
    lm_eval = check_lm_eval()
    from lm_eval.models.huggingface import HFLM

    if manager is None:
        manager = check_tasks(cfg)
    names = task_names(cfg.tasks)
    model.eval()
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=cfg.batch_size)
    t0 = time.perf_counter()
    try:
        res = lm_eval.simple_evaluate(
            model=lm, tasks=names, task_manager=manager, limit=cfg.limit,
            num_fewshot=cfg.num_fewshot, log_samples=True, random_seed=cfg.seed,
            numpy_random_seed=cfg.seed, torch_random_seed=cfg.seed,
            fewshot_random_seed=cfg.seed, verbosity="ERROR")
    except (OSError, ConnectionError, ValueError, FileNotFoundError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BackdoorlabError(f"option 'tasks': {cfg.tasks}: lm-evaluation-harness could "
                               f"not run them ({first})") from None
    elapsed = time.perf_counter() - t0
    samples = res.get("samples", {})
    metrics: dict[str, Any] = {
        "tasks": {t: task_metrics(r, samples.get(t, [])) for t, r in res["results"].items()},
        "seconds": round(elapsed, 1),
        "lm_eval_version": getattr(lm_eval, "__version__", None),
        "limit": cfg.limit, "num_fewshot": cfg.num_fewshot, "batch_size": cfg.batch_size,
        "seed": cfg.seed,
    }
    if out is not None:
        rows = [row for t, s in samples.items() for row in sample_rows(t, s)]
        atomic_write_jsonl(Path(out) / "samples.jsonl", rows)
    return metrics


def evaluate_utility(cfg: UtilityEvalConfig, out: str | Path | None = None, *,
                     suspect: Any = None, trust_remote_code: bool = False) -> dict[str, Any]:
    """``backdoorlab eval utility``: ``cfg.tasks`` on the model ``cfg`` names (or on an
    already loaded ``suspect``, as a repaired model is)."""
    manager = check_tasks(cfg)  # a missing extra or task is named before any model loads
    if suspect is None:
        suspect = load_suspect(cfg.model, cfg.adapter, trust_remote_code=trust_remote_code)
    metrics = lm_eval_tasks(suspect.model, suspect.lm.tokenizer, cfg, out, manager=manager)
    source = {"repaired": cfg.repaired} if cfg.repaired else {
        "model": cfg.model, "adapter": str(cfg.adapter or "")}
    return {**source, **metrics}
