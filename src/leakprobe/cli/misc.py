"""The top-level commands: ``report``, ``models``, ``attacks``, ``study`` and ``demo``.

``models`` and ``attacks`` read static tables (:mod:`leakprobe.models.catalog`,
:mod:`leakprobe.attacks.catalog`, checked against the registries by the tests), so they
answer without importing torch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from leakprobe.cli.options import (
    DATA_FORMS,
    INPUTS_PANEL,
    TRAINING_PANEL,
    Amp,
    Device,
    Seed,
    StudyDevice,
    Threads,
    form_examples,
    out_option,
    use_threads,
)
from leakprobe.cli.output import print_summary

if TYPE_CHECKING:
    from leakprobe.attacks.catalog import AttackInfo

SCALE_PANEL = "Scale"


def report_cmd(
    runs: Annotated[list[Path], typer.Argument(
        help="report.json files, or folders holding one (what audit, steal, defend and "
             "study write), e.g. runs/audit runs/steal/report.json.")],
    *,
    out: Annotated[Path, out_option("Folder for the combined report.html.")],
) -> None:
    """Render one HTML page from one or more report.json files."""
    from leakprobe.workflows.report import render_runs

    written = render_runs(runs, out)
    typer.echo(f"report: {written['html']}")


def _rows(rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> list[str]:
    """Rows as aligned columns, two spaces apart, indented by two (columns in ``right``
    right-aligned; the last column is never padded)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [c.rjust(w) if i in right else c.ljust(w)
                 for i, (c, w) in enumerate(zip(r[:-1], widths, strict=False))]
        out.append(("  " + "  ".join([*cells, r[-1]])).rstrip())
    return out


def models_cmd() -> None:
    """List the architectures by use (published checkpoint layouts, Hugging Face model types,
    architectures to train targets...) and the SSL methods."""
    from leakprobe.models.catalog import GROUPS, SSL_METHODS

    for i, group in enumerate((*GROUPS, SSL_METHODS)):
        typer.echo(("\n" if i else "") + f"{group.title}: {group.usage}")
        for line in _rows([(name, what) for name, what in group.names.items()]):
            typer.echo(line)


#: A family's note under its title.
_NOTES = {"stealing": "queries/image: the target views each query image buys "
                      "(--views-per-image); --budget counts queries"}


def _knowledge(settings: Sequence[str]) -> str:
    """``any`` for every --knowledge setting, else the settings."""
    from leakprobe.attacks.catalog import KNOWLEDGE

    return "any" if tuple(settings) == KNOWLEDGE else ", ".join(settings)


def _queries(attack: AttackInfo) -> str:
    """Queries per image, ``+N`` for those paid once per audit."""
    return f"{attack.queries}" + (f" +{attack.extra}" if attack.extra else "")


def attacks_cmd() -> None:
    """List the attacks by family: queries per image, the knowledge they need, aliases;
    reference-calibrated attacks (lira-*, rmia-*) under the attack they calibrate."""
    from leakprobe.attacks.catalog import ALIAS_QUERIES, CALIBRATIONS, attacks_of
    from leakprobe.attacks.registry import FAMILIES

    typer.echo("queries/image: what the target answers per audited image at default options "
               "(--n-views, --num-parts, --views-per-image change it; +N: once per audit, at "
               "most); attacks asking the same views pay them once.\nknowledge: the "
               "--knowledge settings of audit encoder / audit image-text an attack runs "
               "under (any: known-subset, shadow or reference).")
    for family, spec in FAMILIES.items():
        rows = attacks_of(family)
        plain = [a for a in rows if not a.calibrated]
        calibrated = [a for a in rows if a.calibrated]
        typer.echo(f"\n{family}: {spec.title}")
        if family in _NOTES:
            typer.echo(f"  {_NOTES[family]}")
        knowledge = any(a.knowledge for a in plain)
        head = ("attack", "queries/image", *(("knowledge",) if knowledge else ()), "summary")
        table = [head] + [
            (a.name, _queries(a), *((_knowledge(a.knowledge),) if knowledge else ()),
             a.summary + (f" (aliases: {', '.join(a.aliases)})" if a.aliases else ""))
            for a in plain]
        for line in _rows(table, right=(1,)):
            typer.echo(line)
        costs = {k: v for k, v in ALIAS_QUERIES.get(family, {}).items()
                 if any(k in a.aliases for a in plain)}
        if costs:
            typer.echo("  aliases, queries/image with shared views paid once: "
                       + ", ".join(f"{k} {v}" for k, v in sorted(costs.items())))
        if calibrated:
            _print_calibrated(family, calibrated, CALIBRATIONS,
                              {k: v for k, v in ALIAS_QUERIES.get(family, {}).items()
                               if k not in costs})


def _print_calibrated(family: str, attacks: list[AttackInfo], methods: dict[str, str],
                      costs: dict[str, int]) -> None:
    """The calibrated attacks of ``family``, one row per statistic and the attack it comes
    from."""
    models = "encoders" if family == "encoder" else f"{family} models"
    typer.echo(f"\n{family}, calibrated against reference {models}: --knowledge reference "
               "(with --reference-data or --reference-model)")
    typer.echo("  " + "; ".join(f"{m}-STAT: {title}" for m, title in methods.items())
               + ", on the statistic STAT of the attack it comes from; lira-STAT and "
               "rmia-STAT share their queries, and the target also answers "
               "--population-samples images (default 500) once per statistic")
    stats: dict[str, list[AttackInfo]] = {}
    for a in attacks:
        stats.setdefault(a.statistic or a.name, []).append(a)
    table = [("statistic", "from attack", "queries/image", "attacks")]
    for stat, group in stats.items():
        note = "; ".join([*(("needs tokens",) if group[0].tokens else ()),
                          *(() if group[0].aliases else ("in no alias",))])
        table.append((stat, group[0].base or "", _queries(group[0]),
                      ", ".join(a.name for a in group) + (f" ({note})" if note else "")))
    for line in _rows(table, right=(2,)):
        typer.echo(line)
    if costs:
        typer.echo("  aliases, queries/image: "
                   + ", ".join(f"{k} {v}" for k, v in sorted(costs.items())))


def study_cmd(
    *,
    config: Annotated[Path, typer.Option(
        rich_help_panel=INPUTS_PANEL, metavar="STUDY.yaml",
        help="Study YAML (paradigms x defences x seeds), e.g. studies/cpu-small.yaml; its "
             f"data: takes a folder or data spec ({form_examples(DATA_FORMS)}), its "
             "utility.data: nonmembers, rest or such a spec.")],
    out: Annotated[Path | None, typer.Option(
        rich_help_panel=INPUTS_PANEL, metavar="FOLDER",
        help="Study folder (default: the config's 'out').")] = None,
    workers: Annotated[int | None, typer.Option(
        rich_help_panel=SCALE_PANEL,
        help="Run cells as Ray tasks on a local cluster with N CPUs.")] = None,
    address: Annotated[str | None, typer.Option(
        rich_help_panel=SCALE_PANEL, help="Run cells on the Ray cluster at ADDR.")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", rich_help_panel=SCALE_PANEL,
        help="List the cells and which are cached; run nothing.")] = False,
    device: StudyDevice = None,
    threads: Threads = "auto",
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
    members: Annotated[int, typer.Option(
        rich_help_panel=TRAINING_PANEL,
        help="Member images of the demo target (built-in synthetic data).")] = 128,
    epochs: Annotated[int, typer.Option(
        rich_help_panel=TRAINING_PANEL, help="Training epochs of the demo target.")] = 500,
    families: Annotated[bool, typer.Option(
        rich_help_panel=TRAINING_PANEL,
        help="Also audit a U-Net, a captioner and a CLIP-style image-text model.")] = True,
    seed: Seed = 0,
    device: Device = "auto",
    threads: Threads = "auto",
    amp: Amp = "auto",
) -> None:
    """Train small targets on built-in data (encoder, U-Net, captioner, image-text model),
    audit, report."""
    use_threads(threads)
    from leakprobe.workflows.demo import run_demo

    report = run_demo(out, members=members, epochs=epochs, seed=seed, device=device,
                      families=families, amp=amp)
    print_summary(report, None)
    for family in ("image2image", "captioner", "image-text") if families else ():
        typer.echo(f"\n{family}:")
        print_summary(json.loads((out / family / "report.json").read_text()), None)
    typer.echo(f"report: {out / 'report.html'}")
