"""The ``nclsm-scale`` command: a typer app whose commands live one per module.

Every module in :mod:`nclsm_scale.cli` whose name does not start with ``_`` and
which defines ``main`` is registered as the command of the same name; heavy
imports stay inside the commands so ``--help`` is fast.

Errors reach the console as one line: the tool's own errors by their message, a
write that cannot succeed (read-only, no permission, disk full) by its path, and
log records without their tracebacks (``run`` keeps those in ``RUN/logs/run.log``;
``-vv`` shows them). SIGTERM stops a command like Ctrl-C, with exit status 143.
"""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
import signal
import sys
from typing import Annotated, Any

import typer
from typer.core import TyperArgument, TyperCommand

import nclsm_scale
from nclsm_scale.errors import WRITE_ERRNOS, NclsmError, write_error

app = typer.Typer(
    name="nclsm-scale",
    help=(
        "Seam-free myofibre segmentation, measurement and curation for whole archives "
        "of muscle biopsy sections, on a laptop or a Dask cluster."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"nclsm-scale {nclsm_scale.__version__}")
        raise typer.Exit()


class _ConsoleFormatter(logging.Formatter):
    """One line per record on the console: the message without its traceback (run.log keeps that)."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None,
                                                     "stack_info": None}))


@app.callback()
def _root(
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More log output.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    from nclsm_scale.progress import set_quiet

    set_quiet(quiet)  # no progress bar anywhere
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if verbose < 2:
        for handler in logging.getLogger().handlers:
            handler.setFormatter(_ConsoleFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if verbose < 2:
        # distributed configures its own child loggers from dask config when it is
        # imported (here and in every worker process); the environment reaches both.
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
        for noisy in ("distributed", "bokeh", "tornado", "asyncio"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


class _Command(TyperCommand):
    """A command whose arguments read the click way: ``Usage: nclsm-scale run [OPTIONS] ARCHIVE``.

    Typer writes a required argument as ``{ARCHIVE}`` in the usage line, and one
    without a metavar by its Python name (``{slide}``); here every argument is
    named in capitals (``SLIDE``), optional ones in brackets, repeatable ones with ``...``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if isinstance(param, TyperArgument) and param.metavar is None and param.name:
                param.metavar = param.name.upper()

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        """``[OPTIONS]`` and the arguments, in order."""
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = str(param.metavar) + ("..." if param.nargs != 1 else "")
                pieces.append(name if param.required else f"[{name}]")
        return pieces


def _register_commands() -> None:
    package = importlib.import_module("nclsm_scale.cli")
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name.startswith("_") or info.name == "app":
            continue
        module = importlib.import_module(f"nclsm_scale.cli.{info.name}")
        command = getattr(module, "main", None)
        if command is not None:
            app.command(name=info.name.replace("_", "-"), cls=_Command)(command)


_register_commands()


#: Signals received (the handler's record): the exit status of an interrupt is 128 + the signal's number.
_received: list[int] = []


def _interrupted() -> int:
    """Say so on stderr; the exit status: 128 + the signal (143 for SIGTERM), 130 for Ctrl-C."""
    signum = _received[-1] if _received else signal.SIGINT
    typer.echo(f"interrupted ({signal.Signals(signum).name})", err=True)
    return 128 + signum


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (2 for usage and config errors, 128 + signal if interrupted)."""
    try:
        result = app(args=argv, prog_name="nclsm-scale", standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        return _interrupted()
    except NclsmError as exc:
        typer.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS:
            raise
        typer.echo(f"error: {write_error(exc, 'an output file')}", err=True)
        return 1
    except typer.TyperException as exc:  # usage errors: bad option or value (typer's vendored click exceptions)
        exc.show()  # type: ignore[attr-defined]  # ClickException's, not in TyperException's stubs
        return int(getattr(exc, "exit_code", 2))
    if result == 130:  # typer turns KeyboardInterrupt (Ctrl-C, SIGTERM) into exit status 130
        return _interrupted()
    return result if isinstance(result, int) else 0


def _interrupt(signum: int, frame: object) -> None:
    _received.append(signum)
    raise KeyboardInterrupt(f"signal {signum}")


def entry() -> None:
    """Console-script entry point; SIGTERM (``kubectl delete pod``, ``scancel``) stops it like Ctrl-C, exit 143.

    The interrupt unwinds the main thread, so the run lock is released and the cluster
    closed. A slide thread still busy in client-side work (numpy on a whole level)
    cannot be interrupted; the process then leaves it behind as SIGKILL would (its
    stage stays unfinished for the rerun) instead of waiting for it.
    """
    signal.signal(signal.SIGTERM, _interrupt)
    code = main()
    if code > 128:
        logging.shutdown()  # flush the log files
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
