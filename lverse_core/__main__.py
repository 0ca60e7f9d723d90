"""``python -m lverse_core run --profile P [--only 00,01]``: see lverse_core.runner."""
import sys

from .runner import main

sys.exit(main())
