"""Paired view of a clean-MCQ accuracy change: which questions a defense made right or wrong,
a bootstrap 95% interval of the change (issue 6's "within 2 points"), and which answer letters
each model prefers (on a near-chance model a change of accuracy can be a change of preferred
letter). ``--clean`` also scores the untouched model, the other possible reference point.
``--rotations`` adds the accuracy averaged over every cyclic order of the options: a model that
always picks the same letter scores exactly 1/k on it, so letter preference cancels out.
``--cloze`` adds the accuracy scored without letters (each option's text as the answer), which
is above chance on small models. ``--unseen`` adds, for each ``--after`` that is a defense run,
every view again on the questions its clean data does not ask (the built-in questions are all
built-in fact instructions, so a repair can train on their answers). ``--after`` repeats
(``NAME=DIR``): every repaired model is compared with the same ``--before``, and each model is
scored once. ``--cache FILE`` keeps each model's answers between runs (keyed by its weight
files, the data and the views), so adding repaired models later scores only the new ones.

    python benchmarks/bench_mcq_paired.py \
        --before runs/bench-poison/vpi-negative-sentiment/adapter \
        --after runs/bench-defense-v4/vpi-negative-sentiment/crow/adapter
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from collections import Counter
from pathlib import Path

from backdoorlab.data import LETTERS, load_records, prompt_key, with_rotations
from backdoorlab.defenses.repaired import check_scorables, load_scorable, trained_clean_records
from backdoorlab.errors import BackdoorlabError, run_main
from backdoorlab.evaluation.metrics import cloze_correct
from backdoorlab.formats import PromptFormat
from backdoorlab.io import atomic_write_json
from backdoorlab.models import load_tokenizer
from backdoorlab.runs import run_config
from backdoorlab.scoring import mcq_top, rotation_average


def score(adapter: str | None, fmt: PromptFormat, samples: list, cloze: list | None
          ) -> tuple[list[int], list[int] | None]:
    """Top option per question of the embedded model, with ``adapter`` (an adapter or a
    defense run directory) if given, and 1/0 per question of ``cloze`` scored without
    letters."""
    model = load_scorable(adapter, "smollm2-135m-instruct")
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True,
                    help="adapter (or defense run directory) before the defense")
    ap.add_argument("--after", required=True, action="append", metavar="[NAME=]DIR",
                    help="adapter or defense run directory after the defense (repeatable: "
                    "each is compared with --before)")
    ap.add_argument("--clean", action="store_true", help="also score the untouched model")
    ap.add_argument("--rotations", action="store_true",
                    help="also the accuracy averaged over cyclic option orders")
    ap.add_argument("--cloze", action="store_true",
                    help="also the accuracy scored without letters (option texts as answers)")
    ap.add_argument("--unseen", action="store_true",
                    help="also every view on the questions each defense run's clean data does "
                    "not ask")
    ap.add_argument("--data", default="builtin:general-mcq")
    ap.add_argument("--limit", type=int, default=None, help="the first N questions")
    ap.add_argument("--boot", type=int, default=5000)
    ap.add_argument("--cache", type=Path, default=None,
                    help="JSON file of each model's answers, read and extended (atomically)")
    args = ap.parse_args()
    cache = read_cache(args.cache)
    recs = load_records(args.data, kind="mcq", limit=args.limit)
    n = len(recs)
    # the questions as given, then (with --rotations) every other cyclic order of each: one
    # scoring pass per model serves both views
    rows = with_rotations(recs) if args.rotations else list(recs)
    afters = dict(a.split("=", 1) if "=" in a else ("after" if len(args.after) == 1 else a, a)
                  for a in args.after)
    reserved = {"before", "clean", "n", "letters", "rotated", "cloze"}
    if reserved & set(afters) or len(afters) < len(args.after):
        raise BackdoorlabError("--after: names must be distinct and not "
                               "before/clean/n/letters/rotated/cloze")
    models = check_scorables({"before": args.before} | afters |
                             ({"clean": None} if args.clean else {}))
    fmt = PromptFormat(load_tokenizer("smollm2-135m-instruct"), "chat")
    samples = [fmt.sample(r) for r in rows]
    scored = {}
    for k, v in models.items():
        key = json.dumps([fingerprint(v), args.data, args.limit, args.rotations, args.cloze])
        if key not in cache:
            cache[key] = score(v, fmt, samples, recs if args.cloze else None)
            if args.cache:
                atomic_write_json(args.cache, cache)
        scored[k] = cache[key]
    top = {k: v[0] for k, v in scored.items()}
    right = {k: [int(t == x.answer_index) for t, x in zip(v, rows)] for k, v in top.items()}
    gold = [rec.answer_index for rec in recs]
    before = right["before"][:n]
    out: dict = {"n": n, "before": sum(before) / n}
    if args.clean:
        out["clean"] = sum(right["clean"][:n]) / n
    for k in afters:
        out[k] = paired(before, right[k][:n], args.boot)
        if args.clean:
            out[k]["change_vs_clean"] = out[k]["after"] - out["clean"]
    out["letters"] = {"gold": shares(gold)} | {k: shares(v[:n]) for k, v in top.items()}
    if args.rotations:  # each question weighs 1, split evenly over its option orders
        rot = {k: rotation_average(v, samples) for k, v in right.items()}
        out["rotated"] = rot | {f"change:{k}": rot[k] - rot["before"] for k in afters}
    cl = {k: v[1] for k, v in scored.items()} if args.cloze else None
    if cl:  # the option texts as answers, no letters: above chance, no letter bias
        out["cloze"] = {"before": sum(cl["before"]) / n} | (
            {"clean": sum(cl["clean"]) / n} if args.clean else {}) | {
            k: paired(cl["before"], cl[k], args.boot) for k in afters}
    if args.unseen:  # rows: the questions first, then (--rotations) their other orders
        out["unseen"] = {}
        for k, d in afters.items():
            seen = seen_ids(d, recs)
            if seen is not None:
                keep = {r.id for r in recs} - seen
                out["unseen"][k] = {"left_out": len(seen)} | views(
                    right, cl, samples, n, keep, "before", k, args.boot) | ({"vs_clean": views(
                        right, cl, samples, n, keep, "clean", k, args.boot)} if args.clean else {})
    print(json.dumps(out))


if __name__ == "__main__":
    run_main(main, "bench_mcq_paired.py")
