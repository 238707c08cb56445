"""Compare a backdoored model with repaired ones on more than a defense's own evaluation:

* :func:`heldout_asr` (``backdoorlab eval heldout``): a generation backdoor's ASR on every
  held-out prompt (96 for the built-in instructions) with its Wilson 95% interval, for the
  backdoored model and each repaired one, the same triggered prompts for all (one seed);
* :func:`paired_mcq` (``backdoorlab eval paired``): a clean multiple-choice accuracy change
  question by question: gained and lost questions, a bootstrap 95% interval, each model's
  favourite letters, and optionally the accuracy over option orders, letter-free, and on the
  questions a defense's clean data does not ask. ``cache`` keeps each model's answers, so
  models added later are scored alone.

Each repaired model is an adapter directory or a defense run directory (any artefact).
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..data import LETTERS, load_records, prompt_key, with_rotations
from ..embedded import EMBEDDED_NAME
from ..errors import BackdoorlabError
from ..evaluation.metrics import cloze_correct
from ..evaluation.suite import SuiteOptions, make_suite, run_suite
from ..formats import PromptFormat
from ..io import atomic_write_json, atomic_write_jsonl
from ..models import attack_info, load_tokenizer
from ..runs import run_config
from ..scoring import mcq_top, rotation_average
from .repaired import check_scorables, load_scorable, named_paths, trained_clean_records


def score(adapter: str | None, fmt: PromptFormat, samples: list, cloze: list | None
          ) -> tuple[list[int], list[int] | None]:
    """Top option per question of the embedded model, with ``adapter`` (an adapter or a
    defense run directory) if given, and 1/0 per question of ``cloze`` scored without
    letters."""
    model = load_scorable(adapter, EMBEDDED_NAME)
    return mcq_top(model, fmt, samples), cloze and cloze_correct(model, fmt, cloze)



# the files that make a scored model: weights and the records that say how to load them
MODEL_FILES = {"adapter_config.json", "backdoorlab.json", "config.json", "defense.json",
               "interventions.json"}



def fingerprint(path: str | None) -> str:
    """What identifies a scored model in ``--cache``: ``untouched``, or the resolved path and
    the name, size and modification time of its weight and loading records (checkpoints and
    metrics left out), so that a model trained again at the same path is scored again."""
    if path is None:
        return "untouched"
    root = Path(path).resolve()
    h = hashlib.sha256()
    for f in sorted(root.rglob("*")):
        rel = f.relative_to(root)
        if f.is_file() and "checkpoints" not in rel.parts and (
                f.suffix == ".safetensors" or f.name in MODEL_FILES):
            st = f.stat()
            h.update(f"{rel}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return f"{root}|{h.hexdigest()[:16]}"



def read_cache(path: Path | None) -> dict:
    """The ``--cache`` file's answers (empty if there is none yet); a file that is not one
    this script wrote is named in one line."""
    if path is None or not path.is_file():
        return {}
    try:
        cache = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BackdoorlabError(f"--cache {path}: not JSON ({e})") from None
    if not isinstance(cache, dict):
        raise BackdoorlabError(f"--cache {path}: expected an object of cached answers")
    return cache



def shares(idx: list[int]) -> dict[str, float]:
    """Share of questions per letter (A, B, ...)."""
    c = Counter(idx)
    return {LETTERS[k]: round(c[k] / len(idx), 4) for k in sorted(c)}



def paired(b: list[int], a: list[int], boot: int) -> dict:
    """Change of accuracy from ``b`` to ``a`` (0/1 per question), questions gained and lost,
    and a bootstrap 95% interval over questions (seed 0)."""
    n = len(b)
    d = [y - x for x, y in zip(b, a)]
    rng = random.Random(0)
    boots = sorted(sum(d[rng.randrange(n)] for _ in range(n)) / n for _ in range(boot))
    return {"after": sum(a) / n, "change": sum(d) / n, "gained": d.count(1),
            "lost": d.count(-1), "ci95": [boots[int(0.025 * boot)], boots[int(0.975 * boot)]]}



def seen_ids(run: str, recs: list) -> set[str] | None:
    """Ids of the questions that the clean data of the defense run ``run`` asks, or None
    when ``run`` is not a defense run that trained on clean data."""
    drawn = trained_clean_records(run_config(run))
    if drawn is None:
        return None
    keys = {prompt_key(r) for r in drawn}
    return {r.id for r in recs if prompt_key(r) in keys}



def views(right: dict, cl: dict | None, samples: list, n: int, keep: set[str], before: str,
          after: str, boot: int) -> dict:
    """Letter, rotation-averaged and letter-free accuracy of ``after`` against ``before`` on
    the questions whose ids are in ``keep`` (``samples``: the ``n`` questions as given, then
    their other option orders if scored)."""
    first = [i for i, s in enumerate(samples[:n]) if s.record.id in keep]
    out = {"n": len(first), "letters": paired([right[before][i] for i in first],
                                              [right[after][i] for i in first], boot)}
    every = [i for i, s in enumerate(samples) if s.record.id in keep]
    if len(every) > len(first):  # rotations were scored
        sub = [samples[i] for i in every]
        rot = {k: rotation_average([right[k][i] for i in every], sub) for k in (before, after)}
        out["rotated"] = {"before": rot[before], "after": rot[after],
                          "change": rot[after] - rot[before]}
    if cl:
        out["cloze"] = paired([cl[before][i] for i in first], [cl[after][i] for i in first],
                              boot)
    return out


def by_category(judged: list[dict], category: dict[str, str]) -> dict[str, list[int]]:
    """``{category: [hits, prompts]}`` over the judged triggered prompts, most hits first."""
    counts: dict[str, list[int]] = {}
    for r in judged:
        c = counts.setdefault(category.get(r["id"], "(none)"), [0, 0])
        c[0] += bool(r["judge"])
        c[1] += 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1][0], kv[0])))


def heldout_asr(attack: str, after: list[str] | None = None, *, clean: bool = False,
                limit: int | None = None, seed: int = 0, out: str | Path | None = None,
                echo: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """The backdoored adapter ``attack`` and each repaired model (``NAME=DIR`` in ``after``;
    with ``clean`` also the untouched model) on every held-out prompt of the attack's suite
    (``limit`` per set); ``out`` receives ``results.json`` and every judged generation."""
    info = attack_info(attack)
    if not info.get("trigger") or not info.get("target"):
        raise BackdoorlabError(f"--attack {attack}: no attack record naming the trigger "
                               "and target (expected a backdoored adapter directory)")
    suite = make_suite(SuiteOptions(eval_limit=limit, seed=seed),
                       target=info["target"], trigger=info["trigger"], judge=info.get("judge"))
    suite = replace(suite, mcq=[])  # multiple-choice accuracy is paired_mcq's
    models = check_scorables({"backdoored": attack} | named_paths(after or []) |
                             ({"clean": None} if clean else {}))
    base = info.get("base_model") or EMBEDDED_NAME
    fmt = PromptFormat(load_tokenizer(base), info.get("template") or "chat")
    category = {r.id: r.category for r in suite.target_records if r.category}
    results: dict[str, dict] = {}
    saved: list[dict] = []
    for name, adapter in models.items():
        t0 = time.perf_counter()
        m, rows = run_suite(load_scorable(adapter, base), fmt, suite)
        n = len(suite.target_records)
        judged = [r for r in rows if r["set"] == "target" and r["triggered"]]
        results[name] = {"asr_triggered": round(m["asr_triggered"], 4),
                         "hits": sum(r["judge"] for r in judged), "n": n,
                         "ci95": [round(x, 4) for x in m["asr_triggered_ci95"]],
                         "asr_clean": round(m["asr_clean"], 4),
                         "refusal_rate": round(m["refusal_rate"], 4),
                         "clean_perplexity": round(m["clean_perplexity"], 4),
                         "empty_output_rate": round(m["empty_output_rate"], 4),
                         "by_category": by_category(judged, category),
                         "wall_s": round(time.perf_counter() - t0, 1)}
        saved += [{"model": name, **r} for r in rows]
        if echo is not None:
            echo(json.dumps({name: results[name]}))
    result = {"judge": suite.judge.name, "trigger": info["trigger"], "target": info["target"],
              "seed": seed, "models": results}
    if out is not None:
        atomic_write_jsonl(Path(out) / "generations.jsonl", saved)
        atomic_write_json(Path(out) / "results.json", result)
    return result


RESERVED = {"before", "clean", "n", "letters", "rotated", "cloze"}


def paired_mcq(before: str, after: list[str], *, clean: bool = False, rotations: bool = False,
               cloze: bool = False, unseen: bool = False, data: str = "builtin:general-mcq",
               limit: int | None = None, boot: int = 5000, cache: str | Path | None = None
               ) -> dict[str, Any]:
    """The clean-MCQ change from ``before`` to each of ``after`` (``[NAME=]DIR``), paired by
    question (module docstring); every model on the embedded base, chat template."""
    cache_path = Path(cache) if cache is not None else None
    stored = read_cache(cache_path)
    recs = load_records(data, kind="mcq", limit=limit)
    n = len(recs)
    # the questions as given, then (with rotations) every other cyclic order of each: one
    # scoring pass per model serves both views
    rows = with_rotations(recs) if rotations else list(recs)
    afters = dict(a.split("=", 1) if "=" in a else ("after" if len(after) == 1 else a, a)
                  for a in after)
    if RESERVED & set(afters) or len(afters) < len(after):
        raise BackdoorlabError("--after: names must be distinct and not "
                               "before/clean/n/letters/rotated/cloze")
    models = check_scorables({"before": before} | afters | ({"clean": None} if clean else {}))
    fmt = PromptFormat(load_tokenizer(EMBEDDED_NAME), "chat")
    samples = [fmt.sample(r) for r in rows]
    scored = {}
    for k, v in models.items():
        key = json.dumps([fingerprint(v), data, limit, rotations, cloze])
        if key not in stored:
            stored[key] = score(v, fmt, samples, recs if cloze else None)
            if cache_path is not None:
                atomic_write_json(cache_path, stored)
        scored[k] = stored[key]
    top = {k: v[0] for k, v in scored.items()}
    right = {k: [int(t == x.answer_index) for t, x in zip(v, rows)] for k, v in top.items()}
    gold = [rec.answer_index for rec in recs]
    base = right["before"][:n]
    out: dict[str, Any] = {"n": n, "before": sum(base) / n}
    if clean:
        out["clean"] = sum(right["clean"][:n]) / n
    for k in afters:
        out[k] = paired(base, right[k][:n], boot)
        if clean:
            out[k]["change_vs_clean"] = out[k]["after"] - out["clean"]
    out["letters"] = {"gold": shares(gold)} | {k: shares(v[:n]) for k, v in top.items()}
    if rotations:  # each question weighs 1, split evenly over its option orders
        rot = {k: rotation_average(v, samples) for k, v in right.items()}
        out["rotated"] = rot | {f"change:{k}": rot[k] - rot["before"] for k in afters}
    cl = {k: v[1] for k, v in scored.items()} if cloze else None
    if cl:  # the option texts as answers, no letters: above chance, no letter bias
        out["cloze"] = {"before": sum(cl["before"]) / n} | (
            {"clean": sum(cl["clean"]) / n} if clean else {}) | {
            k: paired(cl["before"], cl[k], boot) for k in afters}
    if unseen:  # rows: the questions first, then (rotations) their other orders
        out["unseen"] = {}
        for k, d in afters.items():
            seen = seen_ids(d, recs)
            if seen is not None:
                keep = {r.id for r in recs} - seen
                out["unseen"][k] = {"left_out": len(seen)} | views(
                    right, cl, samples, n, keep, "before", k, boot) | ({"vs_clean": views(
                        right, cl, samples, n, keep, "clean", k, boot)} if clean else {})
    return out
