"""The `ftctl` command.

Usage::

    ftctl --help
    ftctl --version

Heavy libraries (torch, lightning, mlflow, transformers) are imported inside the commands that need
them, never at module import: `ftctl --help` must answer in well under a second.
"""

from __future__ import annotations

import os

import typer

# No hub downloads at run time unless the user opts in: a hub name otherwise retries DNS for ~45 s.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

app = typer.Typer(
    name="ftctl",
    help="Continual fine-tuning without silent forgetting: predict what a new task will make "
    "the model forget, replay exactly that, and release only what passes the forgetting gate.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


def _version_callback(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"ftctl {version('ftctl')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """ftctl: continual fine-tuning of language models without silent forgetting."""


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
