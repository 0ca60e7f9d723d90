"""``python -m lverse_core run --profile P [--only 00,01]``, ``results --profile P [--readme]``, ``doctor
--profile P`` and ``convert-official CKPT --variant ml|sl``: see lverse_core.pipeline.cli."""
import sys

from lverse_core.pipeline.cli import main

sys.exit(main())
