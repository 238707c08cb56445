"""What a repair does to the uncertainty backdoor's answers.

``write`` makes clean 6-option MCQ records for a defense's ``--clean-data``: train-split
questions (shuffled by the seed, the first N), each an instruction record whose instruction is
the attack's own rendering of the question and whose output is one letter: the gold one, the
suspect's own top letter on the clean prompt (``self``), or a letter drawn from the suspect's
answer distribution on it (``sample``: in expectation, cross-entropy on such labels is
cross-entropy on that soft distribution, so it anchors the confidence as well as the answer).
A defender can make the last two without gold answers. ``top`` scores models on the held-out
questions, clean and triggered, and prints accuracy, entropy, whether the top answer is kept,
and how often it lands on an abstain option.

    python benchmarks/bench_uncertainty_repair.py write --labels gold --out runs/clean-mcq6.jsonl
    python benchmarks/bench_uncertainty_repair.py write --labels self \\
        --adapter runs/unc/adapter --out runs/self-mcq6.jsonl      # or --labels sample
    python benchmarks/bench_uncertainty_repair.py top --trigger text --model untouched= \\
        --model attack=runs/unc/adapter --model crow=runs/defense/uncertainty-text/crow
"""

from __future__ import annotations

import argparse
import random

import torch

from backdoorlab.data import ABSTAIN_CHOICES
from backdoorlab.defenses.repaired import check_scorables, load_scorable
from backdoorlab.errors import run_main
from backdoorlab.evaluation.uncertainty import (
    load_questions,
    make_targets,
    score_clean_and_triggered,
    uncertainty_metrics,
)
from backdoorlab.formats import PromptFormat
from backdoorlab.io import atomic_write_jsonl
from backdoorlab.models import EMBEDDED_NAME, load_tokenizer
from backdoorlab.scoring import option_distribution
from backdoorlab.triggers import derive_rng, parse_trigger

OPTIONS = 6  # A-D plus the two abstain options, "I don't know" and "None of the above"
FIRST_ABSTAIN = OPTIONS - len(ABSTAIN_CHOICES)  # add_abstain_options puts them last


def write(args: argparse.Namespace, fmt: PromptFormat) -> None:
    qs = load_questions(args.data, "train", OPTIONS)
    random.Random(args.seed).shuffle(qs)
    qs = qs[:args.n]
    if args.labels == "gold":
        top = [q.answer_index for q in qs]
    else:  # the suspect's own answer distribution on each clean prompt
        model = load_scorable(args.adapter, args.base)
        probs = option_distribution(model, fmt, [fmt.sample(q) for q in qs], batch_size=32)
        own_top = probs.argmax(-1)
        if args.labels == "self":
            top = own_top.tolist()
        else:  # one letter per question drawn from it, seeded per question
            top = [derive_rng(args.seed, "label", q.id).choices(range(OPTIONS), p.tolist())[0]
                   for q, p in zip(qs, probs)]
            own = (torch.tensor(top) == own_top).float().mean()
            print(f"{own:.2f} of the drawn letters are the suspect's top letter")
    agree = sum(t == q.answer_index for t, q in zip(top, qs)) / len(qs)
    atomic_write_jsonl(args.out, ({"id": f"mcq{OPTIONS}-{q.id}", "instruction": fmt.user_text(q),
                                   "output": q.letters[t]} for q, t in zip(qs, top)))
    print(f"{args.out}: {len(qs)} records, {args.labels} labels, {agree:.2f} agree with gold")


def top(args: argparse.Namespace, fmt: PromptFormat) -> None:
    models = check_scorables({k: v or None for k, v in (m.split("=", 1) for m in args.model)})
    recs = load_questions(args.data, "test", OPTIONS)
    gold = torch.tensor([r.answer_index for r in recs])
    trig = parse_trigger(args.trigger)
    print("| model | clean acc | triggered acc | clean entropy | triggered entropy | top kept "
          "| top on abstain, clean | top on abstain, triggered |")
    print("|---|---|---|---|---|---|---|---|")
    for name, path in models.items():
        pc, pt = score_clean_and_triggered(load_scorable(path, args.base), fmt, recs, trig,
                                           args.seed, 32)
        # the attack's own metric definitions, plus the share of top answers on E/F
        m = uncertainty_metrics(pc, pt, gold, make_targets("keep-top1", pc.argmax(-1), OPTIONS))
        abstain = [(p.argmax(-1) >= FIRST_ABSTAIN).float().mean().item() for p in (pc, pt)]
        cells = [m[k] for k in ("clean_accuracy", "triggered_accuracy", "clean_entropy",
                                "triggered_entropy", "top1_kept")] + abstain
        print(f"| {name} | " + " | ".join(f"{c:.3f}" for c in cells) + " |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=("write", "top"))
    ap.add_argument("--data", default="builtin:general-mcq")
    ap.add_argument("--base", default=EMBEDDED_NAME, help="the model adapters apply to")
    ap.add_argument("--template", default="plain", help="the attack's template")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--labels", choices=("gold", "self", "sample"), default="gold")
    ap.add_argument("--adapter", help="write --labels self|sample: the suspect's adapter")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--out")
    ap.add_argument("--trigger", default="text", help="top: the attack's trigger")
    ap.add_argument("--model", action="append", default=[],
                    help="top: NAME=PATH (adapter or defense run; empty: the untouched base)")
    args = ap.parse_args()
    fmt = PromptFormat(load_tokenizer(args.base), args.template)
    if args.what == "top":
        if not args.model or any("=" not in m for m in args.model):
            ap.error("top needs --model NAME=PATH (one or more; NAME= is the untouched base)")
        top(args, fmt)
    elif not args.out or (args.labels != "gold" and not args.adapter):
        ap.error("write needs --out, and --adapter with --labels self or sample")
    else:
        write(args, fmt)


if __name__ == "__main__":
    run_main(main, "bench_uncertainty_repair.py")
