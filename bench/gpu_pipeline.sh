#!/usr/bin/env bash
# The gpu profile end to end on one GPU machine: every notebook in one runner call, timed; results and logs in $OUT.
#
#   ../shared/tools/device-wheels.sh .whl latex2mathml jupytext==1.19.6 mdit-py-plugins  # here, once: what the GPU image lacks
#   bash bench/gpu_pipeline.sh [DEADLINE_S]     # there, with .whl carried
#
# One call of `python -m lverse_core run --profile gpu --timeout LEFT`: when the deadline (default 540 s) passes, the
# runner kills the running notebook's kernel with its process group and writes its manifest and index (a training
# keeps its checkpoint and resumes on the next call). The gpu profile scores captions without Java (eval.meteor:
# false with the nlg-eval pipeline: the GPU image has no Java), so notebooks 04 and 06 run too.
# Environment:
#   NOTEBOOKS  runner --only selection (default: all notebooks but 07, the claims, which need hours)
#   TRACE=1    a torch.profiler trace of 10 steps of every training loop (LVERSE_TRACE_DIR): $OUT/traces/*.trace.json
#              (chrome://tracing or Perfetto) and *.ops.txt (ops by GPU time)
#   PROFILE    default gpu; PROFILE=ci NO_WHEELS=1 tries the script on the CPU
# $OUT gets: machine.txt, times.txt, run.log (the runner's output), estimate.txt (the gpu profile projected from
# the step times this run measured, lverse_core/pipeline/estimate.py), gpu_mem.csv (nvidia-smi every second),
# logs/ (runs/<profile>/logs: every training log with elapsed_s), results/, tables/, manifest.json, executed/
# (per-cell durations in papermill's metadata) and traces/.
set -uo pipefail
DEADLINE=${1:-540}
NOTEBOOKS=${NOTEBOOKS:-"00,01,02,03,04,05,06"}
PROFILE=${PROFILE:-gpu}
T0=$(date +%s)
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 LVERSE_PROGRESS=0
if [ -z "${NO_WHEELS:-}" ]; then
  SITE=$(mktemp -d)
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .whl/*.whl
  export PYTHONPATH="$PWD:$SITE" PATH="$SITE/bin:$PATH" JUPYTER_PATH="$SITE/share/jupyter"
  python3 -m ipykernel install --user --name python3 >/dev/null
fi
[ -n "${TRACE:-}" ] && export LVERSE_TRACE_DIR="$OUT/traces"
PY=${PY:-python3}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PY -c "import torch, platform; print('torch', torch.__version__, 'python', platform.python_version())"
  nproc; git rev-parse --short HEAD 2>/dev/null; } > "$OUT/machine.txt" 2>&1
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv,noheader,nounits -lms 1000 \
    > "$OUT/gpu_mem.csv" &
  SMI=$!
fi
echo "setup $(( $(date +%s) - T0 )) s" > "$OUT/times.txt"
left=$(( DEADLINE - ($(date +%s) - T0) - 15 ))  # 15 s for copying the results back
# the runner's own deadline ends the kernels; `timeout` is only the backstop (SIGTERM: the runner kills them too)
timeout -k 10 $(( left + 20 )) $PY -m lverse_core run --profile "$PROFILE" --only "$NOTEBOOKS" --timeout "$left" \
  > "$OUT/run.log" 2>&1
echo "runner rc=$? $(( $(date +%s) - T0 )) s" >> "$OUT/times.txt"
[ -n "${SMI:-}" ] && kill "$SMI" 2>/dev/null
[ -s "$OUT/gpu_mem.csv" ] && awk -F', ' '{ if ($2 > m) m = $2 } END { print "peak GPU memory used (MiB, 1 s samples):", m }' \
  "$OUT/gpu_mem.csv" >> "$OUT/machine.txt"
R=$($PY -c "from lverse_core.config import load_profile as l; c = l('$PROFILE'); print(c.runs_root, c.reports_root)")
RUNS=${R% *}; REPORTS=${R#* }
$PY -m lverse_core.pipeline.estimate --profile "$PROFILE" --logs "$RUNS/logs" > "$OUT/estimate.txt" 2>&1
cp -r "$RUNS/logs" "$OUT/logs" 2>/dev/null
for d in results tables executed; do cp -r "$REPORTS/$d" "$OUT/$d" 2>/dev/null; done
cp "$REPORTS/manifest.json" "$OUT/" 2>/dev/null
ls -la "$OUT"
cat "$OUT/times.txt" "$OUT/machine.txt" "$OUT/estimate.txt"
tail -15 "$OUT/run.log"
