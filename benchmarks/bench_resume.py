"""Kill ``backdoorlab run`` during training (SIGKILL) and start it again: the finished run's
metrics must equal an uninterrupted run's within 0.01.

    python benchmarks/bench_resume.py --out runs/bench-resume
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from backdoorlab.errors import run_main
from backdoorlab.io import atomic_write_json

EXPERIMENT = """\
name: resume-check
attack:
  kind: poison
  trigger: badnets
  target: refusal
  n_train: 48
  eval_limit: 16
  max_new_tokens: 16
  train: {epochs: 2, batch_size: 8, save_steps: 3}
defend:
  crow:
    n_clean: 24
    eval_limit: 16
    max_new_tokens: 16
    train: {epochs: 1, batch_size: 8, save_steps: 3}
report: false
"""
KEYS = ("asr_triggered", "asr_clean", "refusal_rate", "clean_perplexity", "mcq_accuracy")


def run(exp: Path, out: Path, kill_after_checkpoint: str | None = None) -> float:
    cmd = [sys.executable, "-m", "backdoorlab", "run", str(exp), "--out", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env={**os.environ, "BACKDOORLAB_QUIET": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if kill_after_checkpoint:
        ck = out / kill_after_checkpoint
        while proc.poll() is None and not ck.exists():
            time.sleep(0.5)
        time.sleep(1.0)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        print(f"killed after {ck} appeared ({time.perf_counter() - t0:.0f} s)", flush=True)
        proc = subprocess.Popen(cmd, env={**os.environ, "BACKDOORLAB_QUIET": "1"},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if proc.wait() != 0:
        raise SystemExit(f"run failed: {cmd}")
    return time.perf_counter() - t0


def metrics(out: Path) -> dict[str, float]:
    att = json.loads((out / "attack" / "metrics.json").read_text())
    crow = json.loads((out / "defend" / "crow" / "metrics.json").read_text())
    got = {f"attack.{k}": att[k] for k in KEYS}
    got.update({f"crow.{k}_after": crow[f"{k}_after"] for k in KEYS})
    return got


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/bench-resume")
    args = ap.parse_args()
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    exp = root / "experiment.yaml"
    exp.write_text(EXPERIMENT)
    t_plain = run(exp, root / "uninterrupted")
    t_kill = run(exp, root / "killed", kill_after_checkpoint="attack/checkpoints/checkpoint-3")
    a, b = metrics(root / "uninterrupted"), metrics(root / "killed")
    diff = {k: abs(a[k] - b[k]) for k in a}
    res = {"uninterrupted": a, "killed_and_resumed": b, "abs_diff": diff,
           "max_abs_diff": max(diff.values()), "within_0.01": max(diff.values()) <= 0.01,
           "wall_uninterrupted_s": t_plain, "wall_killed_s": t_kill}
    atomic_write_json(root / "results.json", res)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    run_main(main, "bench_resume.py")
