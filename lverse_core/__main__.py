"""``python -m lverse_core run --profile P [--only 00,01]`` and ``doctor --profile P``: see lverse_core.pipeline.runner."""
import sys

from lverse_core.pipeline.runner import main

sys.exit(main())
