"""Hang guards for the tests' subprocesses: far above what any test takes on the slowest CPU measured (a 2-core
AVX2-only AMD EPYC: the longest subprocess there runs a few minutes), so only a hang, never a slow machine, fails."""
HANG_GUARD_S = 3000  # below pytest-timeout's per-test limit (pyproject.toml), so a hang reports the subprocess
