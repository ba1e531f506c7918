#!/usr/bin/env bash
# The prepared check for a lent GPU machine (python3 with torch+CUDA, pandas, scipy, seaborn, pyyaml, tqdm, jinja2;
# no internet, no ray, no chromium, no playwright). Uses that python3 directly, not the Makefile's venv.
# About 5 minutes, 6 at most (each part has a timeout); everything it measures goes under $OUT (default:
# ./gpu_check_out), and bench.perf writes its CSV after every model, so a timeout keeps what was measured.
#   1. the tests on CUDA (BENCH_DEVICE=cuda), without the slow, ray and browser ones (80 s at most);
#   2. python3 -m bench.perf --device cuda: eager and CUDA-graph steps, single runs and 10-seed populations (140 s);
#   3. one real paper-config init_schemes run of one task (copy, ntm_constant) with all 10 seeds in parallel, for a
#      fixed number of steps, its step compiled and captured as CUDA graphs (120 s).
# Each part has its own timeout and the script goes on after a failure, so one rerun shows everything.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python3}"
STEPS="${GPU_CHECK_STEPS:-400}"
COMPILE="${GPU_CHECK_COMPILE:-cudagraphs}"  # the suite run; off/on to isolate a CUDA-graph problem
{
  echo "== $(date -u +%FT%TZ) gpu_check on $(hostname)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
  "$PY" -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
} | tee "$OUT/env.txt"

echo "== 1. tests on CUDA" | tee "$OUT/tests.log"
BENCH_DEVICE=cuda timeout 80 "$PY" -m pytest -q -x -p no:cacheprovider -m "not slow and not ray and not browser" \
  tests 2>&1 | tail -n 40 | tee -a "$OUT/tests.log"

# eager, and the step compiled with CUDA graphs (mode reduce-overhead), alone and as a 10-seed population
echo "== 2. bench.perf --device cuda" | tee "$OUT/perf.log"
timeout 140 "$PY" -m bench.perf --device cuda --modes eager cudagraphs --populations 1 10 --out "$OUT" 2>&1 \
  | grep -v "check(\|FutureWarning" | tee -a "$OUT/perf.log"

echo "== 3. init_schemes: copy x ntm_constant, 10 seeds in parallel, compile=$COMPILE, $STEPS steps" \
  | tee "$OUT/suite.log"
timeout 120 "$PY" -m bench run --suite init_schemes --out "$OUT/init_schemes" --no-estimate --fresh \
  --set "tasks={copy: {}}" --set "models={ntm_constant: {model: ntm, memory_init: constant}}" \
  --set train.steps="$STEPS" --set train.eval_every=100 --set train.parallel_seeds=10 \
  --set train.compile="$COMPILE" --no-report 2>&1 | tail -n 20 | tee -a "$OUT/suite.log"
"$PY" - "$OUT/init_schemes" <<'PYEOF' 2>&1 | tee -a "$OUT/suite.log"
import sys, pandas as pd
runs = pd.read_csv(f"{sys.argv[1]}/runs.csv")
print(runs[["seed", "status", "final_wrong_bits_per_seq", "nonfinite_steps", "steps", "wall_s", "seq_per_s"]])
print("aggregate seq/s (10 seeds together):", round(runs["seq_per_s"].sum(), 1))
PYEOF
echo "== done $(date -u +%FT%TZ)"
