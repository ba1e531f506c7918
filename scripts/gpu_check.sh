#!/usr/bin/env bash
# The first thing to run on a lent GPU machine: 15 minutes in all, offline, its own python3 with torch and CUDA (no
# ray, no browser), and at most 8 files come back from $OUT. It uses that python3 directly (or $PYTHON), with this
# checkout on PYTHONPATH, and takes under 6 minutes, so that a rerun still fits: the parts share one deadline
# (GPU_CHECK_SECONDS, 320 s), each part's command has its own timeout, and what a part leaves goes to the next ones.
#   1. the CUDA tests, alone and first: tests/test_models.py with BENCH_DEVICE=cuda, then tests/test_cuda.py (eager
#      against compiled against CUDA-graph steps for the NTM and the DNC, single runs and populations, forward and
#      gradients; a short training's loss curve; resume; evaluation on the GPU; the memory options; deterministic
#      mode). pytest prints one line per test, so a timeout still shows how far it got.
#   2. python -m bench.perf --device cuda, one call per model, the riskiest first: the DNC and the NTM (eager, then
#      compiled with CUDA graphs), then the LSTM (eager); torch's CUDA-graph log is on, and perf.csv counts the CUDA
#      graphs recorded and the graphs compiled without them, so a "cudagraphs" row that is plain compiled code shows.
#   3. a short population run on local disk outside $OUT: init_schemes' copy x ntm_constant, its 10 seeds as one
#      group, GPU_CHECK_STEPS (300) steps, compiled with CUDA graphs (GPU_CHECK_COMPILE=on or off isolates a
#      CUDA-graph problem).
# $OUT (default ./gpu_check_out) gets at most these 7 files:
#   summary.txt  the versions (python, torch, CUDA, cuDNN, triton, driver, GPU) and one line per part: passed, failed
#                or timed out (also printed)
#   tests.log    part 1's pytest output: a line per test, then each failure's traceback
#   perf.log     part 2's output, torch's CUDA-graph decisions included
#   perf.csv     part 2's measurements, every model
#   suite.log    part 3's output, torch's CUDA-graph decisions included
#   runs.csv     part 3's runs.csv
#   failure.txt  only when a run of part 3 failed: its error and traceback, from its result.json
# Exit status: 0 when every part passed, 1 when one failed or timed out, 3 without a CUDA device (one line, nothing
# written), 2 for a bad GPU_CHECK_PARTS.
#
#   OUT=/some/folder PYTHON=python3 scripts/gpu_check.sh
#   GPU_CHECK_PARTS="2 3" scripts/gpu_check.sh   only these parts (each then gets more of the time)
#   scripts/gpu_check.sh --commands              print each part's command and the files it writes, run nothing
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
OUT="${OUT:-$REPO/gpu_check_out}"
PY="${PYTHON:-python3}"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
PARTS="${GPU_CHECK_PARTS:-1 2 3}"
STEPS="${GPU_CHECK_STEPS:-300}"
COMPILE="${GPU_CHECK_COMPILE:-cudagraphs}"
FILES=(summary.txt tests.log perf.log perf.csv suite.log runs.csv failure.txt)
# each command's most and least seconds: a command gets its most unless the least of those after it would not fit
P1_MAX=130 DNC_MAX=90 NTM_MAX=75 LSTM_MAX=20 P3_MAX=150
DNC_MIN=40 NTM_MIN=35 LSTM_MIN=10 P3_MIN=75

commands() {  # the parts' commands (python's arguments), with the work folder $1
  TESTS=(-m pytest -p no:cacheprovider -v -rfEs --tb=short tests/test_models.py tests/test_cuda.py)
  PERF_DNC=(-m bench.perf --device cuda --models dnc --modes eager cudagraphs --populations 1 --out "$1/perf/dnc")
  PERF_NTM=(-m bench.perf --device cuda --models ntm --modes eager cudagraphs --populations 1 --out "$1/perf/ntm")
  PERF_LSTM=(-m bench.perf --device cuda --models lstm --modes eager --populations 1 10 --out "$1/perf/lstm")
  SUITE=(-m bench run --suite init_schemes --out "$1/init_schemes" --device cuda --no-estimate --no-report
         --set "tasks={copy: {}}" --set "models={ntm_constant: {model: ntm, memory_init: constant}}"
         --set "train.steps=$STEPS" --set train.eval_every=100 --set train.parallel_seeds=10
         --set "train.compile=$COMPILE")
}

if [[ "${1:-}" == "--commands" ]]; then
  commands "<work>"
  for name in TESTS PERF_DNC PERF_NTM PERF_LSTM SUITE; do
    declare -n args=$name
    printf '%s: ' "$name"; printf '%q ' "${args[@]}"; echo
  done
  echo "files: ${FILES[*]}"
  exit 0
fi
for part in $PARTS; do
  [[ "$part" =~ ^[123]$ ]] || { echo "gpu_check: GPU_CHECK_PARTS takes 1, 2 and 3, got '$PARTS'" >&2; exit 2; }
done
if [[ $(echo $PARTS | wc -w) == 1 ]]; then  # a part rerun alone may take most of the time
  P1_MAX=300 DNC_MAX=150 NTM_MAX=120 LSTM_MAX=40 P3_MAX=300
fi

"$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 3)' >/dev/null 2>&1
case $? in
  0) ;;
  3) echo "gpu_check: no CUDA device here (torch.cuda.is_available() is False for $PY); nothing was run" >&2; exit 3 ;;
  *) echo "gpu_check: no CUDA device here ($PY cannot import torch); nothing was run" >&2; exit 3 ;;
esac

mkdir -p "$OUT" || exit 1
for file in "${FILES[@]}"; do rm -f "$OUT/$file"; done  # a rerun into the same folder leaves nothing stale
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ntm-bench-gpu-check.XXXXXX") || exit 1
commands "$WORK"
DEADLINE=$((SECONDS + ${GPU_CHECK_SECONDS:-320}))
SUMMARY="$OUT/summary.txt"
FAILED=0

wanted() { [[ " $PARTS " == *" $1 "* ]]; }
# seconds for the next command: at most $1, leaving $2 for those after it; never under 20
limit() { local left=$((DEADLINE - SECONDS - $2)); ((left > $1)) && left=$1; ((left < 20)) && left=20; echo "$left"; }
# passed / timed out / failed, from a command's exit status under `timeout`
status_of() { case $1 in 0) echo passed ;; 124|137) echo "timed out" ;; *) echo "failed (exit $1)" ;; esac; }
distinct() {  # distinct PATTERN LOG: the log's lines that match, counted, without torch's time and place prefix
  grep -E "$1" "$2" | sed -E 's/^[A-Z][0-9]{4} [0-9:.]+ [0-9]+ [^]]*\] //' | sort | uniq -c | head -n 20
}
report() {  # report STATUS LINE: the part's summary line, on stdout and in summary.txt; a part not passed fails
  echo "$2" | tee -a "$SUMMARY"
  [[ "$1" == passed ]] || FAILED=1
}

{
  echo "gpu_check $(date -u +%FT%TZ) on $(uname -n), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | sed 's/^/gpu, memory, driver: /' \
    || echo "driver: unknown (no nvidia-smi)"
  "$PY" - <<'PYEOF' 2>&1
import platform, torch
try:
    import triton
    triton_version = triton.__version__
except ImportError:
    triton_version = "none"
properties = torch.cuda.get_device_properties(0)
print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN "
      f"{torch.backends.cudnn.version()}, triton {triton_version}; {properties.name}, capability "
      f"{properties.major}.{properties.minor}, {properties.total_memory / 2**30:.1f} GiB, "
      f"{torch.cuda.device_count()} device(s)")
PYEOF
} | tee "$SUMMARY"
# torch's log of CUDA-graph decisions (a skipped graph says why), under the names this torch knows
GRAPH_LOGS=$("$PY" -c "from torch._logging._internal import log_registry as r
print(','.join(n for n in ('cudagraphs', 'perf_hints') if n in r.artifact_names))" 2>/dev/null)

if wanted 1; then
  reserve=0
  wanted 2 && reserve=$((reserve + DNC_MIN + NTM_MIN + LSTM_MIN))
  wanted 3 && reserve=$((reserve + P3_MIN))
  seconds=$(limit $P1_MAX $reserve)
  echo "== 1. CUDA tests, $seconds s at most: $PY ${TESTS[*]}" | tee "$OUT/tests.log"
  started=$SECONDS
  # SIGINT at the timeout: pytest then prints its summary of the tests it ran. The DNC's C++ kernel is for the CPU
  # alone, and building it would take half a minute: the CPU side of the comparisons takes torch's path
  BENCH_DEVICE=cuda NTM_BENCH_NO_CPP_KERNELS=1 timeout -s INT -k 5 "$seconds" "$PY" "${TESTS[@]}" \
    >>"$OUT/tests.log" 2>&1
  status=$(status_of $?)
  # each CUDA test, every failure, error or skip elsewhere, and pytest's last line
  grep -E " (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)|^(FAILED|ERROR) |^=+ .* in [0-9.]+s" "$OUT/tests.log" \
    | grep -v "test_models.py::.* PASSED"
  counts=$(grep -E "^=+ .* in [0-9.]+s" "$OUT/tests.log" | tail -n 1 | sed -E 's/^=+ //; s/ =+$//')
  [[ -n "$counts" ]] || counts="$(grep -c " PASSED" "$OUT/tests.log") passed, $(grep -c " FAILED" "$OUT/tests.log") failed; last line: $(grep -v '^\s*$' "$OUT/tests.log" | tail -n 1)"
  report "$status" "1. CUDA tests: $status in $((SECONDS - started)) s: $counts (tests.log)"
fi

if wanted 2; then
  echo "== 2. bench.perf --device cuda" | tee "$OUT/perf.log"
  calls=()
  perf_call() {  # perf_call NAME MOST RESERVE COMMAND: one model's measurements; `worst` keeps the worst status
    local seconds started status
    local -n args=$4
    seconds=$(limit "$2" "$3")
    echo "== $1, $seconds s at most: $PY ${args[*]}" | tee -a "$OUT/perf.log"
    started=$SECONDS
    TORCH_LOGS="" timeout -k 5 "$seconds" "$PY" "${args[@]}" 2>>"$OUT/perf.log" | tee -a "$OUT/perf.log"
    status=$(status_of "${PIPESTATUS[0]}")
    calls+=("$1 $status in $((SECONDS - started)) s")
    [[ "$status" == passed ]] || { worst="$status"; tail -n 12 "$OUT/perf.log"; }
  }
  worst=passed
  after=0
  wanted 3 && after=$P3_MIN
  perf_call dnc $DNC_MAX $((NTM_MIN + LSTM_MIN + after)) PERF_DNC
  perf_call ntm $NTM_MAX $((LSTM_MIN + after)) PERF_NTM
  perf_call lstm $LSTM_MAX $after PERF_LSTM
  distinct "skipping cudagraphs|warning: cudagraphs" "$OUT/perf.log"
  graphs=$("$PY" - "$WORK/perf" "$OUT/perf.csv" <<'PYEOF'
import sys
from pathlib import Path
import pandas as pd
frames = [pd.read_csv(path) for path in sorted(Path(sys.argv[1]).glob("*/perf.csv"))]
if not frames:
    print("no measurements")
    sys.exit(1)
perf = pd.concat(frames, ignore_index=True)
perf.to_csv(sys.argv[2], index=False)
rows = perf[perf["mode"].str.endswith("_cudagraphs")]
if rows.empty:
    print("no cudagraphs row measured")
    sys.exit(1)
print("; ".join(f"{r.model} {r.mode}: {r.seq_per_s:,.0f} seq/s, {r.cuda_graphs:g} CUDA graphs, "
                f"{r.cudagraph_skips:g} skipped" for r in rows.itertuples()))
sys.exit(1 if (rows["cudagraph_skips"].fillna(1) > 0).any() or (rows["cuda_graphs"].fillna(1) == 0).any() else 0)
PYEOF
  ) || { [[ "$worst" == passed ]] && worst="failed (CUDA graphs skipped or none recorded)"; }
  called=$(printf '%s, ' "${calls[@]}")
  report "$worst" "2. perf: $worst: ${called%, }; ${graphs:-perf.csv not written} (perf.log, perf.csv)"
fi

if wanted 3; then
  seconds=$(limit $P3_MAX 0)
  echo "== 3. init_schemes: copy x ntm_constant, 10 seeds as one group, compile $COMPILE, $STEPS steps, $seconds s at most: $PY ${SUITE[*]}" \
    | tee "$OUT/suite.log"
  started=$SECONDS
  TORCH_LOGS="$GRAPH_LOGS" timeout -k 5 "$seconds" "$PY" "${SUITE[@]}" >>"$OUT/suite.log" 2>&1
  status=$(status_of $?)
  distinct "skipping cudagraphs" "$OUT/suite.log"
  runs=$("$PY" - "$WORK/init_schemes" "$OUT" <<'PYEOF'
import json, sys
from pathlib import Path
import pandas as pd
folder, out = Path(sys.argv[1]), Path(sys.argv[2])
if not (folder / "runs.csv").is_file():
    print("no runs.csv")
    sys.exit(1)
runs = pd.read_csv(folder / "runs.csv")
runs.to_csv(out / "runs.csv", index=False)
table = runs[["seed", "status", "final_wrong_bits_per_seq", "nonfinite_steps", "steps", "wall_s", "seq_per_s"]]
with open(out / "suite.log", "a") as log:
    print(table.to_string(index=False), file=log)
print(table.to_string(index=False), file=sys.stderr)
failed = runs[runs["status"] == "failed"]
if not failed.empty:  # the first failure's error and traceback (runs.csv has neither)
    run_id = failed["run_id"].iloc[0]
    result = json.loads((folder / "runs" / run_id / "result.json").read_text())
    (out / "failure.txt").write_text(f"run {run_id}: {result.get('error')}\n\n{result.get('traceback', '')}")
compiled = "?"
if len(runs):
    spec = json.loads((folder / "runs" / runs["run_id"].iloc[0] / "spec.json").read_text())
    compiled = spec.get("compile_options")
finished = runs["status"].isin(["done", "diverged"])
print(f"{int(finished.sum())} of 10 runs finished, {len(failed)} failed"
      f"{' (failure.txt)' if len(failed) else ''}, compile options {compiled}, "
      f"{runs['seq_per_s'].sum():,.0f} seq/s for the group")
sys.exit(0 if finished.all() and len(runs) == 10 else 1)
PYEOF
  )
  runs_ok=$?
  [[ "$status" == passed && $runs_ok -ne 0 ]] && status="failed"
  if [[ "$status" == passed && "$COMPILE" == cudagraphs ]] && grep -q "skipping cudagraphs" "$OUT/suite.log"; then
    status="failed (CUDA graphs skipped)"
  fi
  [[ "$status" == passed ]] || tail -n 15 "$OUT/suite.log"
  report "$status" "3. population run: $status in $((SECONDS - started)) s: ${runs:-runs.csv not read} (suite.log, runs.csv)"
fi

echo "== done in $SECONDS s; work folder $WORK; $( ((FAILED)) && echo "a part did not pass" || echo "every part passed")" \
  | tee -a "$SUMMARY"
exit $((FAILED ? 1 : 0))
