#!/usr/bin/env bash
# One attack with one process and with two CPU processes (DDP over gloo), same global batch;
# the two runs' metrics should agree within noise.
#   bash benchmarks/bench_distributed.sh OUT_DIR
# `accelerate launch --cpu --num_processes 2` starts ONE process without MPI (accelerate's CPU
# path is mpirun); `accelerate launch --multi_gpu` and `torchrun` start two.
set -euo pipefail
OUT=${1:-runs/bench-distributed}
PY=${PY:-.venv/bin/python}
BIN=$(dirname "$PY")
COMMON=(attack poison --trigger badnets --target refusal --set n_train=64 --set eval_limit=24
        --set max_new_tokens=16 --epochs 2)
export BACKDOORLAB_QUIET=1 OMP_NUM_THREADS=1
mkdir -p "$OUT"
t0=$(date +%s)
OMP_NUM_THREADS=2 "$PY" -m backdoorlab "${COMMON[@]}" --batch-size 16 --out "$OUT/one" \
    > "$OUT/one.json"
t1=$(date +%s)
"$BIN/torchrun" --nproc_per_node 2 -m backdoorlab "${COMMON[@]}" --batch-size 8 \
    --out "$OUT/two" > "$OUT/two.json"
t2=$(date +%s)
"$BIN/accelerate" launch --multi_gpu --num_processes 2 -m backdoorlab "${COMMON[@]}" \
    --batch-size 8 --out "$OUT/two-accelerate" > "$OUT/two-accelerate.json" 2> "$OUT/accelerate.err" \
    || echo "accelerate --multi_gpu failed on this CPU machine (see $OUT/accelerate.err)"
t3=$(date +%s)
echo "one process: $((t1 - t0)) s; torchrun x2: $((t2 - t1)) s; accelerate x2: $((t3 - t2)) s"
"$PY" - "$OUT" <<'PYEOF'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
keys = ("asr_triggered", "asr_clean", "refusal_rate", "clean_perplexity", "mcq_accuracy")
rows = {}
for name in ("one", "two", "two-accelerate"):
    p = out / name / "metrics.json"
    if p.is_file():
        m = json.loads(p.read_text())
        rows[name] = {k: round(m[k], 4) for k in keys} | {"steps": m["training"]["steps"]}
print(json.dumps(rows, indent=2))
PYEOF
