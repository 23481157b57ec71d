"""Write the CLI reference page (``reference/cli.md``) from the Typer app at build time.

Run by mkdocs-gen-files during ``make docs``: every command and option the ``leakprobe``
command has is listed from the app itself (the click tree Typer builds), so the reference
cannot drift from the code. The text is each command's own help and each option's own help,
as ``--help`` shows them.
"""

from __future__ import annotations

import mkdocs_gen_files
import typer
from typer._click import core as click  # typer 0.29 builds its commands on its own click copy

from leakprobe.cli.app import app


def _cell(text: str, *, code: bool = False) -> str:
    """One Markdown table cell on one line; pipes escaped, and outside a code span brackets
    too (``[default: x]`` is no link)."""
    text = text.replace("|", "\\|")
    if not code:
        text = text.replace("[", "\\[").replace("]", "\\]")
    return " ".join(text.split())


def _option_row(param: click.Parameter, ctx: click.Context) -> str:
    """``| --name | what it does |`` from the same record ``--help`` prints."""
    record = param.get_help_record(ctx)
    if record is None:  # an argument: typer shows it in the usage line
        return f"| `{param.human_readable_name}` | |"
    names, help_text = record
    return f"| `{_cell(names, code=True)}` | {_cell(help_text)} |"


def _command_md(cmd: click.Command, path: list[str], parent: click.Context | None) -> list[str]:
    ctx = click.Context(cmd, info_name=path[-1], parent=parent)
    name = " ".join(path)
    depth = min(len(path), 4)
    lines = [f"{'#' * (depth + 1)} `{name}`", ""]
    help_text = (cmd.help or "").strip()
    if help_text:
        lines += [help_text.split("\f")[0].strip(), ""]
    lines += ["```text", f"{name} {' '.join(cmd.collect_usage_pieces(ctx))}", "```", ""]
    params = [p for p in cmd.get_params(ctx) if not getattr(p, "hidden", False)]
    if params:
        lines += ["| option | what it does |", "|---|---|"]
        lines += [_option_row(p, ctx) for p in params]
        lines.append("")
    if hasattr(cmd, "list_commands"):  # a command group (typer.core.TyperGroup)
        for sub_name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, sub_name)
            if sub is not None and not sub.hidden:
                lines += _command_md(sub, [*path, sub_name], ctx)
    return lines


def cli_reference() -> str:
    """The whole reference page as Markdown."""
    root = typer.main.get_command(app)
    head = [
        "# CLI reference",
        "",
        "Generated from the `leakprobe` command itself when the site is built "
        "(`docs/gen_cli_reference.py`): every command, its usage and every option with its "
        "help, as `leakprobe COMMAND --help` prints them.",
        "",
    ]
    return "\n".join(head + _command_md(root, ["leakprobe"], None)) + "\n"


with mkdocs_gen_files.open("reference/cli.md", "w") as page:
    page.write(cli_reference())
