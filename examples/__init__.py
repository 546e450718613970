"""Example flows and the Python callables their `python` tasks run (allow-listed by default)."""
