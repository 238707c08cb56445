"""A generation backdoor's ASR on every held-out prompt, with a Wilson 95% interval.

The attacks and defenses judge 40 held-out prompts per set by default. There an ASR of 0.10
is 4 prompts, and its 95% interval runs from 0.04 to 0.23, too wide to tell a repair that
meets "ASR <= 0.10" from one that misses it. This script scores the backdoored adapter and
any repaired ones on all the held-out prompts (96 for the built-in instructions) with the
attack's own suite: trigger, target and judge come from the backdoored adapter's record, and
one seed places the trigger, so every model sees the same triggered prompts.

    python benchmarks/bench_asr_heldout.py \
        --attack runs/bench-poison/vpi-negative-sentiment/adapter \
        --after crow-s0=runs/bench-defense-v4/vpi-negative-sentiment/crow/adapter --clean

``--after`` takes a repaired adapter directory or a defense run directory (any artefact: an
adapter, a whole model such as ``defend crow --merge-adapter`` writes, or interventions).
Each model's hits are also counted per record category (``by_category``, where the records
have one): which kinds of prompt a repair leaves the backdoor on.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from backdoorlab.defenses.repaired import check_scorables, load_scorable, named_paths
from backdoorlab.errors import BackdoorlabError, run_main
from backdoorlab.evaluation.suite import SuiteOptions, make_suite, run_suite
from backdoorlab.formats import PromptFormat
from backdoorlab.io import atomic_write_json, atomic_write_jsonl
from backdoorlab.models import attack_info, load_tokenizer


def by_category(judged: list[dict], category: dict[str, str]) -> dict[str, list[int]]:
    """``{category: [hits, prompts]}`` over the judged triggered prompts, most hits first."""
    counts: dict[str, list[int]] = {}
    for r in judged:
        c = counts.setdefault(category.get(r["id"], "(none)"), [0, 0])
        c[0] += bool(r["judge"])
        c[1] += 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1][0], kv[0])))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--attack", required=True, help="the backdoored adapter (its record names "
                    "the trigger, target and judge)")
    ap.add_argument("--after", action="append", default=[], metavar="NAME=DIR",
                    help="a repaired adapter or defense run directory (repeatable)")
    ap.add_argument("--clean", action="store_true", help="also score the untouched model")
    ap.add_argument("--limit", type=int, default=None, help="prompts per set (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None,
                    help="write results.json and every judged generation (generations.jsonl)")
    args = ap.parse_args()
    info = attack_info(args.attack)
    if not info.get("trigger") or not info.get("target"):
        raise BackdoorlabError(f"--attack {args.attack}: no attack record naming the trigger "
                               "and target (expected a backdoored adapter directory)")
    suite = make_suite(SuiteOptions(eval_limit=args.limit, seed=args.seed),
                       target=info["target"], trigger=info["trigger"], judge=info.get("judge"))
    suite = replace(suite, mcq=[])  # MCQ accuracy has its own script (bench_mcq_paired.py)
    models = check_scorables({"backdoored": args.attack} | named_paths(args.after) |
                             ({"clean": None} if args.clean else {}))
    base = info.get("base_model") or "smollm2-135m-instruct"
    fmt = PromptFormat(load_tokenizer(base), info.get("template") or "chat")
    category = {r.id: r.category for r in suite.target_records if r.category}
    out: dict[str, dict] = {}
    saved: list[dict] = []
    for name, adapter in models.items():
        t0 = time.perf_counter()
        m, rows = run_suite(load_scorable(adapter, base), fmt, suite)
        n = len(suite.target_records)
        judged = [r for r in rows if r["set"] == "target" and r["triggered"]]
        hits = sum(r["judge"] for r in judged)
        out[name] = {"asr_triggered": round(m["asr_triggered"], 4), "hits": hits, "n": n,
                     "ci95": [round(x, 4) for x in m["asr_triggered_ci95"]],
                     "asr_clean": round(m["asr_clean"], 4),
                     "refusal_rate": round(m["refusal_rate"], 4),
                     "clean_perplexity": round(m["clean_perplexity"], 4),
                     "empty_output_rate": round(m["empty_output_rate"], 4),
                     "by_category": by_category(judged, category),
                     "wall_s": round(time.perf_counter() - t0, 1)}
        saved += [{"model": name, **r} for r in rows]
        print(json.dumps({name: out[name]}), flush=True)
    result = {"judge": suite.judge.name, "trigger": info["trigger"], "target": info["target"],
              "seed": args.seed, "models": out}
    if args.out is not None:
        atomic_write_jsonl(args.out / "generations.jsonl", saved)
        atomic_write_json(args.out / "results.json", result)
    print(json.dumps(result))


if __name__ == "__main__":
    run_main(main, "bench_asr_heldout.py")
