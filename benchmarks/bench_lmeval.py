"""``eval mcq`` beside lm-evaluation-harness on the same MMLU questions, prompts and model.

The questions: every MMLU test question under ``--mmlu`` shuffled with ``--seed``, the first
``--n``. Each is rendered once by backdoorlab's ``plain`` template; lm-evaluation-harness reads
those exact prompts from a task file written here (``doc_to_text: "{{prompt}}"``, the four
letters as choices, scored as `` A``...), so both score the same text with the same model and
differ only in how they score it. Each command runs in its own process (wall time and peak
resident memory, the process's ``VmHWM``), in ``--rounds`` interleaved rounds; the picks are
compared question by question.

    python benchmarks/bench_lmeval.py --mmlu ../shared/data/mmlu --out runs/bench-lmeval
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from bench_scale import CLI, mmlu_rows, timed

from backdoorlab.errors import BackdoorlabError, run_main
from backdoorlab.io import atomic_write_json, atomic_write_jsonl, atomic_write_text

TASK = "bl_mmlu_same"


def write_inputs(rows: list[dict], out: Path) -> tuple[Path, Path]:
    """The questions as backdoorlab records, and an lm-evaluation-harness task over the same
    rendered prompts."""
    from backdoorlab.data import rows_to_records
    from backdoorlab.formats import PromptFormat
    from backdoorlab.models import load_tokenizer

    fmt = PromptFormat(load_tokenizer("smollm2-135m-instruct"), "plain")
    recs = rows_to_records(rows, "mmlu", kind="mcq")
    data = atomic_write_jsonl(out / "questions.jsonl", rows)
    docs = [{"id": r.id, "prompt": fmt.prompt_text(fmt.sample(r).user),
             "answer": r.answer_index} for r in recs]
    task_dir = out / "task"
    atomic_write_jsonl(task_dir / "docs.jsonl", docs)
    atomic_write_text(task_dir / f"{TASK}.yaml", "\n".join([
        f"task: {TASK}", "dataset_path: json",
        f"dataset_kwargs:\n  data_files:\n    test: {(task_dir / 'docs.jsonl').resolve()}",
        "test_split: test", "output_type: multiple_choice", 'doc_to_text: "{{prompt}}"',
        'doc_to_choice: ["A", "B", "C", "D"]', 'doc_to_target: "{{answer}}"',
        "metric_list:\n  - metric: acc", ""]))
    return data, task_dir


def lm_eval_picks(out: Path) -> list[int]:
    """lm-evaluation-harness' pick per document (the highest log-likelihood), by doc_id."""
    files = sorted(out.rglob(f"samples_{TASK}_*.jsonl"))
    if not files:
        raise BackdoorlabError(f"{out}: no lm-evaluation-harness samples file")
    rows = sorted(map(json.loads, files[-1].read_text().splitlines()), key=lambda r: r["doc_id"])
    picks = []
    for r in rows:  # the samples file holds each log-likelihood as a string
        lls = [float(x[0]) for x in r["filtered_resps"]]
        picks.append(max(range(len(lls)), key=lls.__getitem__))
    return picks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mmlu", type=Path, default=Path("../shared/data/mmlu"))
    ap.add_argument("--out", type=Path, default=Path("runs/bench-lmeval"))
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--dtypes", default="float32,bfloat16",
                    help="eval mcq's precisions to run (bfloat16 is emulated, and slow, on CPUs "
                         "without bf16 units)")
    args = ap.parse_args()
    from backdoorlab.models import resolve_model_path

    rows = mmlu_rows(args.mmlu)
    random.Random(args.seed).shuffle(rows)
    rows = rows[: args.n]
    args.out.mkdir(parents=True, exist_ok=True)
    data, task_dir = write_inputs(rows, args.out)
    model_dir = resolve_model_path("smollm2-135m-instruct")
    bs = str(args.batch_size)
    commands = {
        "lm-eval (hf, float32)": lambda o: [
            sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args",
            f"pretrained={model_dir},dtype=float32", "--tasks", TASK, "--include_path",
            str(task_dir), "--batch_size", bs, "--device", "cpu", "--log_samples",
            "--output_path", str(o)],
    }
    for dtype in args.dtypes.split(","):
        commands[f"eval mcq ({dtype})"] = lambda o, d=dtype: CLI + [
            "eval", "mcq", "--data", str(data), "--template", "plain", "--batch-size", bs,
            "--dtype", d, "--out", str(o)]
    result: dict = {"n": len(rows), "batch_size": args.batch_size, "rounds": []}
    for k in range(args.rounds):
        got = {}
        for i, (name, cmd) in enumerate(commands.items()):
            o = args.out / f"round{k}" / f"cmd{i}"
            got[name] = timed(cmd(o), args.out / f"round{k}-cmd{i}.log")
            print(name, got[name], flush=True)
        result["rounds"].append(got)
    last = args.out / f"round{args.rounds - 1}"
    ref = lm_eval_picks(last / "cmd0")
    letters = "ABCD"
    for i, name in list(enumerate(commands))[1:]:
        ours = {r["id"]: r["pick"] for r in map(json.loads, (last / f"cmd{i}" / "answers.jsonl")
                                                 .read_text().splitlines())}
        same = sum(ours[r["id"]] == letters[p] for r, p in zip(rows, ref))
        acc = sum(ours[r["id"]] == r["answer"] for r in rows) / len(rows)
        result[name] = {"same_pick": same / len(rows), "accuracy": acc}
    result["lm-eval (hf, float32)"] = {
        "accuracy": sum(letters[p] == r["answer"] for r, p in zip(rows, ref)) / len(rows)}
    atomic_write_json(args.out / "lmeval.json", result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    run_main(main, "bench_lmeval")
