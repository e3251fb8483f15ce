"""The ``nclsm-scale`` command: a typer app whose commands live one per module.

Every module in :mod:`nclsm_scale.cli` whose name does not start with ``_`` and
which defines ``main`` is registered as the command of the same name; heavy
imports stay inside the commands so ``--help`` is fast.
"""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
import sys
from typing import Annotated

import typer

import nclsm_scale
from nclsm_scale.errors import NclsmError

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


@app.callback()
def _root(
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More log output.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if verbose < 2:
        # distributed configures its own child loggers from dask config when it is
        # imported (here and in every worker process); the environment reaches both.
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
        for noisy in ("distributed", "bokeh", "tornado", "asyncio"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def _register_commands() -> None:
    package = importlib.import_module("nclsm_scale.cli")
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name.startswith("_") or info.name == "app":
            continue
        module = importlib.import_module(f"nclsm_scale.cli.{info.name}")
        command = getattr(module, "main", None)
        if command is not None:
            app.command(name=info.name.replace("_", "-"))(command)


_register_commands()


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (2 for usage and config errors)."""
    try:
        result = app(args=argv, prog_name="nclsm-scale", standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("interrupted", err=True)
        return 130
    except NclsmError as exc:
        typer.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except typer.TyperException as exc:  # usage errors: bad option or value (typer's vendored click exceptions)
        exc.show()  # type: ignore[attr-defined]  # ClickException's, not in TyperException's stubs
        return int(getattr(exc, "exit_code", 2))
    if result == 130:  # typer turns KeyboardInterrupt (Ctrl-C, SIGTERM) into exit status 130
        typer.echo("interrupted", err=True)
    return result if isinstance(result, int) else 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def entry() -> None:
    """Console-script entry point; SIGTERM (``kubectl delete pod``, ``scancel``) stops it like Ctrl-C.

    The interrupt unwinds normally, so the run lock is released and the cluster closed.
    """
    import signal

    signal.signal(signal.SIGTERM, _interrupt)
    sys.exit(main())
