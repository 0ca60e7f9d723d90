"""``python -m lverse_core.config [--profile P] [KEY ...]``: every setting of a profile with its value, type, valid
values and help, read from the declarations in ``schema`` (``KEY`` keeps the keys that start with it, e.g.
``augvae_train`` or ``eval.judge``)."""
from __future__ import annotations

import argparse
import json
import sys
import textwrap
import typing
from typing import Any

from lverse_core.config.errors import ConfigError
from lverse_core.config.folders import available_profiles
from lverse_core.config.profiles import load_profile
from lverse_core.config.schema import Config, Spec, get, leaves


def allowed(spec: Spec) -> str:
    """What a declaration allows, in words: its range, choices and list length."""
    parts = []
    if spec.range is not None:
        parts.append(str(spec.range))
    if spec.choices is not None:
        parts.append(" | ".join(repr(c) if c == "" else c for c in spec.choices))
    if spec.length is not None:
        fewest, most = spec.length
        parts.append(f"{fewest} item(s)" if fewest == most else
                     f"at least {fewest} item(s)" if most is None else f"{fewest} to {most} items")
    return ", ".join(parts)


def describe(cfg: Config, prefixes: typing.Sequence[str] = ()) -> str:
    """One paragraph per setting of ``cfg`` whose key starts with one of ``prefixes`` (all when none)."""
    out = []
    for key, typ, spec in leaves():
        if prefixes and not any(key == p or key.startswith(p.rstrip(".") + ".") for p in prefixes):
            continue
        name = typ.__name__ if isinstance(typ, type) else str(typ).replace("typing.", "")
        rule = allowed(spec)
        out.append(f"{key} = {json.dumps(get(cfg, key))}  ({name}{'; ' + rule if rule else ''})")
        out.append(textwrap.fill(spec.help, width=100, initial_indent="    ", subsequent_indent="    "))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lverse_core.config", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="smoke", help=f"one of {', '.join(available_profiles())}")
    parser.add_argument("keys", nargs="*", help="show only the keys that start with these (e.g. augvae_train)")
    args = parser.parse_args(argv)
    try:
        cfg = load_profile(args.profile)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = describe(cfg, args.keys)
    if not text:
        keys: Any = sorted({k.split(".")[0] for k, _, _ in leaves()})
        print(f"error: no setting starts with {' or '.join(args.keys)}; sections and top-level keys: "
              f"{', '.join(keys)}", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
