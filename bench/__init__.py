"""Benchmarks that print measured figures (not tests): `python -m bench.<name> --json`."""
