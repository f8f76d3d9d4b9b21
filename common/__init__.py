"""Stdlib-only helpers every layer may import (cli, service, training, forgetting); imports nothing
of the project."""
