"""The ``leakprobe`` command: the Typer app built from the command-group modules, and ``main``.

Each group lives in its own module (:mod:`.train`, :mod:`.audit`, :mod:`.serve`,
:mod:`.steal`, :mod:`.defend`; the top-level commands in :mod:`.misc`), with the option types
they share in :mod:`.options`. Errors caused by the user's input are printed as one line
(``error: ...``) with exit status 2; ``--debug`` shows the full traceback instead.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from leakprobe.cli import audit, defend, misc, serve, steal, train
from leakprobe.cli.options import restore_threads
from leakprobe.cli.output import print_summary as _print_summary  # noqa: F401  (tests)
from leakprobe.errors import LeakprobeError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Audit vision models for training-data leakage and theft.")
app.add_typer(train.app, name="train")
app.add_typer(audit.app, name="audit")
app.add_typer(serve.app, name="serve")
app.add_typer(steal.app, name="steal")
app.add_typer(defend.app, name="defend")
app.command("report")(misc.report_cmd)
app.command("models")(misc.models_cmd)
app.command("attacks")(misc.attacks_cmd)
app.command("study")(misc.study_cmd)
app.command("demo")(misc.demo_cmd)


def _hide_flag_types() -> None:
    """Show flags in ``--help`` without a value type.

    typer 0.29 prints ``<bool>`` after every flag (``--dp <bool>``, ``--help <bool>``), as if
    it took a value; a flag takes none, so its type column is left empty. This covers every
    flag, typer's own ``--help`` too, which no option declaration can reach.
    """
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich
    if getattr(shown, "_leakprobe_flags", False):
        return

    def display_type_rich(self, ctx):
        if self.is_flag and self.metavar is None:
            return None
        return shown(self, ctx)

    display_type_rich._leakprobe_flags = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


def _help_joins_the_last_panel() -> None:
    """File ``--help`` under a command's last panel when each of its options has a panel.

    typer prints its default "Options" panel before the named ones; a command whose options
    all sit in named panels (its "Inputs" first, see :mod:`.options`) would otherwise open
    with a panel holding only ``--help``.
    """
    from typer.core import TyperCommand, TyperOption

    given = TyperCommand.get_help_option
    if getattr(given, "_leakprobe_panel", False):
        return

    def get_help_option(self, ctx):
        option = given(self, ctx)
        panels = [getattr(p, "rich_help_panel", None) for p in self.params
                  if isinstance(p, TyperOption) and not p.hidden]
        if option is not None and panels and all(panels):
            option.rich_help_panel = list(dict.fromkeys(panels))[-1]  # the one shown last
        return option

    get_help_option._leakprobe_panel = True  # type: ignore[attr-defined]
    TyperCommand.get_help_option = get_help_option  # type: ignore[method-assign]


_hide_flag_types()
_help_joins_the_last_panel()

_state = {"debug": False}


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    memory_cap: Annotated[str | None, typer.Option(
        "--memory-cap", metavar="SIZE",
        help="Most image memory one step may hold whole, e.g. 2GB (default: "
             "$LEAKPROBE_MEMORY_CAP, else half the RAM); image folders, IDX and CIFAR "
             "sets stream in batches and never need it.")] = None,
    data_workers: Annotated[int | None, typer.Option(
        "--data-workers", min=0,
        help="Processes decoding image files (0: none; default: $LEAKPROBE_DATA_WORKERS, "
             "else min(4, CPUs)).")] = None,
) -> None:
    from leakprobe.data.limits import set_data_workers, set_memory_cap

    _state["debug"] = debug
    set_memory_cap(memory_cap)  # None: back to the default (in-process callers run many)
    set_data_workers(data_workers)


def main() -> None:
    """Entry point: one-line errors with exit status 2 unless ``--debug``."""
    _state["debug"] = "--debug" in sys.argv[1:]
    try:
        app(standalone_mode=True)
    except LeakprobeError as e:
        if _state["debug"]:
            raise
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    finally:  # an in-process caller (tests, notebooks) gets its thread setting back
        restore_threads()
