"""The top-level commands: ``report``, ``models``, ``attacks``, ``study`` and ``demo``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from leakprobe.cli.options import (
    Amp,
    Device,
    Seed,
    StudyDevice,
    Threads,
    out_option,
    use_threads,
)
from leakprobe.cli.output import print_summary


def report_cmd(
    runs: Annotated[list[Path], typer.Argument(help="report.json files or folders holding "
                                               "one.")],
    *,
    out: Annotated[Path, out_option("Folder for the combined report.html.")],
) -> None:
    """Render one HTML page from one or more report.json files."""
    from leakprobe.workflows.report import render_runs

    written = render_runs(runs, out)
    typer.echo(f"report: {written['html']}")


def models_cmd() -> None:
    """List the registered architectures and SSL methods."""
    from leakprobe.models import list_models
    from leakprobe.training.ssl.base import list_methods

    typer.echo("architectures: " + ", ".join(list_models()))
    typer.echo("ssl methods: " + ", ".join(list_methods()))


def attacks_cmd() -> None:
    """List the registered attacks by family: name, threat model and aliases."""
    from leakprobe.attacks.registry import FAMILIES, describe_attacks

    for i, (family, rows) in enumerate(describe_attacks().items()):
        typer.echo(("\n" if i else "") + f"{family}: {FAMILIES[family].title}")
        width = max(len(r["name"]) for r in rows)
        for r in rows:
            aliases = f" (aliases: {', '.join(r['aliases'])})" if r["aliases"] else ""
            typer.echo(f"  {r['name']:<{width}}  {r['summary']}{aliases}")


def study_cmd(
    *,
    config: Annotated[Path, typer.Option(help="Study YAML (paradigms x defences x seeds).")],
    out: Annotated[Path | None, typer.Option(
        help="Study folder (default: the config's 'out').")] = None,
    workers: Annotated[int | None, typer.Option(
        help="Run cells as Ray tasks on a local cluster with N CPUs.")] = None,
    address: Annotated[str | None, typer.Option(
        help="Run cells on the Ray cluster at ADDR.")] = None,
    device: StudyDevice = None,
    threads: Threads = "auto",
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="List the cells and which are cached; run nothing.")] = False,
) -> None:
    """Run a privacy-utility study grid (cached, resumable) and write its HTML report."""
    use_threads(threads)
    from leakprobe.device import resolve_device
    from leakprobe.preflight import check_out_dir
    from leakprobe.study import load_study_config, plan, run_study
    from leakprobe.study.report import print_table

    study = load_study_config(config)
    folder = out if out is not None else study.out
    if device is not None and workers is None and address is None:
        resolve_device(device)  # in-process: this machine must have it
    if not dry_run:
        check_out_dir(folder)
    if dry_run:
        rows = plan(study, folder)
        for r in rows:
            typer.echo(f"{'cached' if r['cached'] else 'todo  '}  {r['name']:32s} "
                       f"cells/{r['folder']}  (train/{r['train_run']})")
        typer.echo(f"{len(rows)} cells, {sum(r['cached'] for r in rows)} cached")
        return
    summary = run_study(study, folder, workers=workers, address=address, device=device)
    print_table(summary, typer.echo)
    typer.echo(f"report: {Path(str(folder)) / 'report.html'}")  # run_study refuses None


def demo_cmd(
    *,
    out: Annotated[Path, out_option("Output folder.")] = Path("runs/demo"),
    members: Annotated[int, typer.Option(help="Member images of the demo target.")] = 128,
    epochs: Annotated[int, typer.Option(help="Training epochs of the demo target.")] = 500,
    families: Annotated[bool, typer.Option(help="Also audit a U-Net and a captioner.")] = True,
    seed: Seed = 0,
    device: Device = "auto",
    threads: Threads = "auto",
    amp: Amp = "auto",
) -> None:
    """Train small targets on built-in data (encoder, U-Net, captioner), audit, report."""
    use_threads(threads)
    from leakprobe.workflows.demo import run_demo

    report = run_demo(out, members=members, epochs=epochs, seed=seed, device=device,
                      families=families, amp=amp)
    print_summary(report, None)
    for family in ("image2image", "captioner") if families else ():
        typer.echo(f"\n{family}:")
        print_summary(json.loads((out / family / "report.json").read_text()), None)
    typer.echo(f"report: {out / 'report.html'}")
