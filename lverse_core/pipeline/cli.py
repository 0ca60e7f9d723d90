"""Run the kit's notebooks in order with papermill and assemble ``reports/<profile>/``.

    python -m lverse_core run --profile smoke [--only 00,01] [-p NAME VALUE ...]   (lverse_core.pipeline.execute)
    python -m lverse_core results --profile smoke [--readme] [--claims-doc [PATH]]
                                 (reports/<profile>/RESULTS.md from the run: lverse_core.pipeline.results_page;
                                  the claims scorecard's block in docs/claims.md: lverse_core.pipeline.claims_page)
    python -m lverse_core doctor --profile smoke      (is this machine ready? see lverse_core.pipeline.doctor)
    python -m lverse_core convert-official CKPT --variant ml|sl --profile paper [--out PATH]
                                                      (official AugVAE weights: lverse_core.training.official_augvae)
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from lverse_core.config import REPO_ROOT, ConfigError, available_profiles, load_profile
from lverse_core.pipeline import notebook_sources
from lverse_core.pipeline.execute import RunError, list_notebooks, run
from lverse_core.pipeline.processes import kill_descendants
from lverse_core.pipeline.results_page import README, ResultsError, write_results_page


def coerce(value: str, name: str = "VALUE") -> Any:
    """A -p value from the command line: JSON literal if it parses (3, 0.5, true, "x"), else the string."""
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value
    except RecursionError:
        raise RunError(f"-p {name}: the value is nested too deeply to read; a parameter is a number, a string or a "
                       f"flat JSON object such as '{{\"augvae_train.sl_steps\": 2600}}'") from None
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        raise RunError(f"-p {name}: the value cannot be read ({e})") from None


def _end_kernels_on_sigterm() -> None:
    """On SIGTERM (``timeout``, a job scheduler), kill the notebook kernels' process groups before exiting, so
    no kernel outlives the runner."""
    import signal

    def handler(signum, frame):
        kill_descendants()
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lverse_core", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="execute the notebooks in order into reports/<profile>/")
    r.add_argument("--profile", default="smoke", help=f"one of {', '.join(available_profiles())} (default smoke)")
    r.add_argument("--only", help="comma-separated notebook numbers, e.g. 00,01")
    r.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"), default=[],
                   help="extra notebook parameter (validated against each notebook's parameters cell)")
    r.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="stop the run after SECONDS of wall time, killing the running notebook's kernel (a training "
                        "keeps its checkpoint and resumes on the next run)")
    res = sub.add_parser("results", help="write reports/<profile>/RESULTS.md from the latest run's results, tables "
                                         "and manifest")
    res.add_argument("--profile", default="smoke", help=f"one of {', '.join(available_profiles())} (default smoke)")
    res.add_argument("--readme", action="store_true", help="also refresh README.md's block between "
                     "<!-- results:PROFILE begin --> and <!-- results:PROFILE end -->")
    res.add_argument("--claims-doc", nargs="?", const=str(REPO_ROOT / "docs" / "claims.md"), default=None,
                     metavar="PATH", help="also refresh the claims scorecard's block of PATH (default "
                     "docs/claims.md) between <!-- claims:PROFILE begin --> and <!-- claims:PROFILE end --> from the "
                     "latest claims run")
    sub.add_parser("list", help="list the notebooks and their parameters")
    n = sub.add_parser("notebooks", help="rewrite notebooks/*.ipynb from their sources notebooks/*.py")
    n.add_argument("--check", action="store_true", help="only say which .ipynb differ from their .py (exit 1 if any)")
    d = sub.add_parser("doctor", help="check this machine for a profile (Java, assets, stale artefacts, disk)")
    d.add_argument("--profile", default="smoke", help=f"one of {', '.join(available_profiles())} (default smoke)")
    c = sub.add_parser("convert-official", help="convert an official AugVAE .ckpt into this profile's checkpoint "
                                                "(docs/official-weights.md)")
    c.add_argument("ckpt", help="the official PyTorch Lightning checkpoint (AugVAE-ML or AugVAE-SL)")
    c.add_argument("--variant", required=True, choices=["ml", "sl"])
    c.add_argument("--profile", default="paper", help="a profile with the official architecture (default paper)")
    c.add_argument("--out", help="where to write (default runs/<profile>/augvae_<variant>.pt, where the notebooks "
                                 "look)")
    args = ap.parse_args(argv)
    try:
        if args.command == "convert-official":
            from lverse_core.training.loop import CheckpointError
            from lverse_core.training.official_augvae import convert_official

            try:
                print(convert_official(load_profile(args.profile), args.ckpt, args.variant, args.out))
            except CheckpointError as e:  # every refusal of the converter; nothing was written
                print(f"error: {e}", file=sys.stderr)
                return 1
            return 0
        if args.command == "results":
            from pathlib import Path

            from lverse_core.pipeline.claims_page import claims_doc_text, write_claims_doc
            doc = None if args.claims_doc is None else Path(args.claims_doc)
            try:
                cfg = load_profile(args.profile)
                # a bad block or no claims run is refused before anything is written
                doc_text = None if doc is None else claims_doc_text(cfg, doc)
                print(write_results_page(cfg, README if args.readme else None))
                if doc is not None:
                    print(write_claims_doc(doc, doc_text))
            except ResultsError as e:
                print(f"error: {e}", file=sys.stderr)
                return 1
            if args.readme:
                print(README)
            return 0
        if args.command == "doctor":
            from lverse_core.pipeline.doctor import doctor

            return doctor(load_profile(args.profile))
        if args.command == "notebooks":
            if args.check:
                notebook_sources.check()
                print("every notebook matches its source")
                return 0
            for path in notebook_sources.write_all():
                print(f"wrote {path.relative_to(REPO_ROOT)}")
            return 0
        if args.command == "list":
            import papermill

            for nb in list_notebooks():
                print(nb.name, ", ".join(papermill.inspect_notebook(str(nb))))
            return 0
        _end_kernels_on_sigterm()
        run(args.profile, args.only, {k: coerce(v, k) for k, v in args.param}, timeout_s=args.timeout)
    except (RunError, ConfigError, notebook_sources.NotebookDriftError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
