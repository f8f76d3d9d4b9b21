"""How ftctl talks: human output (rich) on stderr, exactly one JSON document on stdout with
--json, errors as one sentence with the fix and exit code 1 (2 = usage, from click).
"""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import click
import typer

F = TypeVar("F", bound=Callable[..., Any])

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show the full traceback on errors.")]


def console() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


# "<label>: step 30/300, loss 1.234" — what the pipeline reports for training and measurement.
STEP = re.compile(r"^(?P<label>.+?): step (?P<step>\d+)/(?P<total>\d+)(?P<rest>.*)$")


class _Reporter:
    """Progress for humans on stderr: a live bar per training / measurement / pre-training on a
    terminal; elsewhere (CI logs, pipes) a line at every tenth of the way. Other messages are
    printed as lines (above the bars)."""

    def __init__(self) -> None:
        self.progress: Any = None
        self.bars: dict[str, Any] = {}
        self.tenths: dict[str, int] = {}

    def __call__(self, message: str) -> None:
        c = console()
        m = STEP.match(message)
        if m is None:
            (self.progress.console if self.progress else c).print(message, markup=False)
            return
        label, step, total = m["label"], int(m["step"]), max(1, int(m["total"]))
        if not c.is_terminal:
            tenth = 10 * step // total
            if tenth != self.tenths.get(label):
                self.tenths[label] = tenth
                c.print(message, markup=False)
            return
        if self.progress is None:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[rest]}"), TimeRemainingColumn(),
                                     console=c, transient=False)
            self.progress.start()
        if label not in self.bars:
            self.bars[label] = self.progress.add_task(label, total=total, rest="")
        self.progress.update(self.bars[label], completed=step, total=total, rest=m["rest"].lstrip(", "))
        if step >= total and all(t.finished for t in self.progress.tasks):
            self.progress.stop()
            self.progress, self.bars = None, {}


_REPORTER = _Reporter()


def say(message: str) -> None:
    """Progress for humans (stderr, so --json stdout stays parseable): see _Reporter."""
    _REPORTER(message)


def emit(data: Any, as_json: bool, human: Callable[[Any], None] | None = None) -> None:
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, default=_default) + "\n")
        sys.stdout.flush()
    elif human is not None:
        human(data)
    else:
        console().print_json(json.dumps(data, default=_default))


def _default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


def _user_errors() -> tuple[type[BaseException], ...]:
    from forgetting.errors import ForgettingError
    from service.errors import ServiceError
    from training.errors import TrainingError

    return (ServiceError, TrainingError, ForgettingError, FileNotFoundError)


def handle_errors(fn: F) -> F:
    """Turn the packages' user-facing errors into one line + exit 1 (traceback with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, click.ClickException):
            raise  # click's own usage errors keep exit code 2
        except Exception as e:
            if kwargs.get("debug"):
                raise
            known = isinstance(e, _user_errors())
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if not known:
                msg = f"{type(e).__name__}: {msg} (rerun with --debug for the traceback)"
            if _REPORTER.progress is not None:
                _REPORTER.progress.stop()
            console().print(f"[bold red]error:[/] {msg}", soft_wrap=True)
            if kwargs.get("as_json"):  # --json promises one document on stdout, errors included
                sys.stdout.write(json.dumps({"error": msg}) + "\n")
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c, justify="right" if c not in (columns[0],) else "left")
    for r in rows:
        t.add_row(*[_fmt(x) for x in r])
    console().print(t)


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.4f}"
    return "" if x is None else str(x)
