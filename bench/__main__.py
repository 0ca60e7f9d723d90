"""``python -m bench [NAME ...]``: run the CPU benchmarks (bench/bench_*.py) one after another.

Each benchmark measures the kit's code side by side with a peer in the same process and prints its own table;
the numbers and the machine are recorded in bench/README.md. GPU-only scripts (``*_gpu.py``) are skipped here.
"""
import subprocess
import sys
from pathlib import Path

here = Path(__file__).resolve().parent
wanted = sys.argv[1:]
scripts = [p for p in sorted(here.glob("bench_*.py")) if not p.stem.endswith("_gpu")]
if wanted:
    scripts = [p for p in scripts if any(w in p.stem for w in wanted)]
    if not scripts:
        sys.exit(f"no benchmark matches {wanted}; available: {[p.stem for p in here.glob('bench_*.py')]}")
failed = []
for script in scripts:
    print(f"== {script.name}", flush=True)
    if subprocess.run([sys.executable, str(script)], cwd=here.parent).returncode:
        failed.append(script.name)
sys.exit(f"failed: {', '.join(failed)}" if failed else 0)
