#!/usr/bin/env bash
# A profile end to end on one GPU machine, notebook by notebook, timed; results copied to $OUT.
#
#   ../shared/tools/device-wheels.sh .whl latex2mathml jupytext==1.19.6 mdit-py-plugins  # here, once: what the GPU image lacks
#   bash bench/gpu_pipeline.sh [DEADLINE_S] [NOTEBOOKS]     # there, with .whl carried
#
# Notebook 04 needs Java (METEOR and the PTB tokenizer of pycocoevalcap) and 06 reads 04's captions; the GPU image
# has no Java, so the default list leaves both out; notebook 02 still scores every test caption for naming every
# object right. Each notebook gets what is left of DEADLINE_S (default 540 s), so the files come back even when the
# run is cut short. GPU memory in use is sampled every second (peak in machine.txt). If time is left, the paper-size
# BiART benchmark (bench/bench_biart_gpu.py) runs in what remains.
# PROFILE (default gpu) and NO_WHEELS=1 let the script be tried on the CPU with the ci profile.
set -uo pipefail
DEADLINE=${1:-540}
NOTEBOOKS=${2:-"00 01 02 05 03"}
PROFILE=${PROFILE:-gpu}
T0=$(date +%s)
OUT=${OUT:-/tmp/gpu_out}
LOGS=$(mktemp -d)
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 LVERSE_PROGRESS=0
if [ -z "${NO_WHEELS:-}" ]; then
  SITE=$(mktemp -d)
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .whl/*.whl
  export PYTHONPATH="$PWD:$SITE" PATH="$SITE/bin:$PATH" JUPYTER_PATH="$SITE/share/jupyter"
  python3 -m ipykernel install --user --name python3 >/dev/null
fi
PY=${PY:-python3}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PY -c "import torch, platform; print('torch', torch.__version__, 'python', platform.python_version())"
  nproc; git rev-parse --short HEAD 2>/dev/null; } > "$OUT/machine.txt" 2>&1
MEMLOG=$LOGS/gpu_mem.csv
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv,noheader,nounits -lms 1000 > "$MEMLOG" &
  SMI=$!
fi
echo "setup $(( $(date +%s) - T0 )) s" > "$OUT/times.txt"
for nb in $NOTEBOOKS; do
  left=$(( DEADLINE - ($(date +%s) - T0) ))
  if [ "$left" -le 10 ]; then echo "$nb not started: deadline" >> "$OUT/times.txt"; break; fi
  s=$(date +%s.%N)
  timeout "$left" $PY -m lverse_core run --profile "$PROFILE" --only "$nb" > "$LOGS/run_$nb.log" 2>&1
  rc=$?
  echo "$nb rc=$rc $($PY -c "import time; print(round(time.time() - $s, 1))") s" >> "$OUT/times.txt"
  [ "$rc" -ne 0 ] && { tail -40 "$LOGS/run_$nb.log"; break; }
done
echo "pipeline $(( $(date +%s) - T0 )) s" >> "$OUT/times.txt"
left=$(( DEADLINE - ($(date +%s) - T0) ))
if [ "$left" -gt 60 ] && [ "$PROFILE" = gpu ]; then
  OUT=$LOGS timeout "$left" $PY bench/bench_biart_gpu.py > "$LOGS/bench_biart_gpu.log" 2>&1
  echo "bench_biart_gpu rc=$? $(( $(date +%s) - T0 )) s" >> "$OUT/times.txt"
fi
[ -n "${SMI:-}" ] && kill "$SMI" 2>/dev/null
[ -s "$MEMLOG" ] && awk -F', ' '{ if ($2 > m) m = $2 } END { print "peak GPU memory used (MiB, 1 s samples):", m }' \
  "$MEMLOG" >> "$OUT/machine.txt"
cp -r "$LOGS" logs_gpu 2>/dev/null
tar czf "$OUT/gpu_reports.tgz" --exclude='*.html' --exclude='*.png' "reports/$PROFILE/results" \
  "reports/$PROFILE/tables" "reports/$PROFILE/manifest.json" "runs/$PROFILE/logs" logs_gpu 2>/dev/null
tar czf "$OUT/gpu_figures.tgz" "reports/$PROFILE/figures" 2>/dev/null
tar czf "$OUT/gpu_executed.tgz" "reports/$PROFILE/executed" 2>/dev/null  # per-cell durations (papermill metadata)
ls -la "$OUT"
cat "$OUT/times.txt" "$OUT/machine.txt"
