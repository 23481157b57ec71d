"""``leakprobe audit ownership``: is a suspect encoder derived from the owner's?

Maps options onto :class:`~leakprobe.workflows.ownership.OwnershipSpec` and prints the tests
and the verdict line; :func:`~leakprobe.workflows.ownership.run_ownership` does the work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from leakprobe.cli.options import (
    INPUTS_PANEL,
    MODEL_PANEL,
    SPLIT_FORMS,
    Amp,
    CheckpointKey,
    Device,
    InputSize,
    ModelArch,
    QueryBatchSize,
    ReportOut,
    Seed,
    Threads,
    data_option,
    form_examples,
    model_forms,
    model_option,
    needs_no_arch,
    use_threads,
)

REFERENCE_PANEL = "Reference encoders (required: --reference-data and/or --reference-model)"
TESTS_PANEL = "Tests"


def audit_ownership_cmd(
    *,
    suspect: Annotated[str, model_option(
        "encoder", name="--suspect", lead="The suspect encoder, in one of these forms:")],
    members: Annotated[str, data_option(
        "--members", "Images the owner's encoder trained on, in one of these forms:",
        SPLIT_FORMS)],
    nonmembers: Annotated[str, data_option(
        "--nonmembers", "Images the owner held out (a random part of the same pool as "
        "--members): any form --members takes.", ())],
    out: ReportOut,
    victim: Annotated[str | None, typer.Option(
        rich_help_panel=INPUTS_PANEL, metavar="MODEL",
        help="The owner's encoder (any form --suspect takes; --victim-arch for its "
             "weights): adds the victim-suspect similarity tests.")] = None,
    arch: ModelArch = None,
    victim_arch: Annotated[str | None, typer.Option(
        rich_help_panel=MODEL_PANEL, metavar="NAME",
        help="--arch of the --victim weights (.safetensors recording none, or a published "
             ".pth, .pth.tar or .pt checkpoint).")] = None,
    checkpoint_key: CheckpointKey = None,
    image_size: InputSize = None,
    batch_size: QueryBatchSize = "auto",
    alpha: Annotated[float, typer.Option(
        rich_help_panel=TESTS_PANEL,
        help="Level of the verdict: 'derived' when the combined p-value <= alpha.")] = 0.01,
    tests: Annotated[str, typer.Option(
        rich_help_panel=TESTS_PANEL,
        help="all, or a comma list of calibrated-membership, calibrated-isolation, "
             "similarity-cka, similarity-procrustes, dataset-inference.")] = "all",
    n_views: Annotated[int, typer.Option(
        "--n-views", rich_help_panel=TESTS_PANEL, min=2,
        help="Augmented views per image of the membership statistic.")] = 10,
    views: Annotated[str | None, typer.Option(
        rich_help_panel=TESTS_PANEL,
        help="Their recipe: simclr (default), byol, dino, mae, mild, with overrides "
             "('byol,crop-scale=0.2:1'); give your encoder's training recipe.")] = None,
    di_components: Annotated[int, typer.Option(
        rich_help_panel=TESTS_PANEL, min=1,
        help="Dataset inference: Gaussian-mixture components (it runs with >= 20 members "
             "per component).")] = 10,
    di_fit_on: Annotated[str, typer.Option(
        rich_help_panel=TESTS_PANEL,
        help="Dataset inference fits its mixture on the suspect's (as the released code) "
             "or the victim's member embeddings.")] = "suspect",
    reference_data: Annotated[str | None, data_option(
        "--reference-data", "The owner's other images, to train references on; must not "
        "share images with --members or --nonmembers: any form --members takes but a split "
        "manifest.", (), panel=REFERENCE_PANEL)] = None,
    references: Annotated[int | None, typer.Option(
        rich_help_panel=REFERENCE_PANEL, min=0,
        help="References to train on random halves of --reference-data (default 4, or 0 "
             "with --reference-model).")] = None,
    reference_method: Annotated[str, typer.Option(
        rich_help_panel=REFERENCE_PANEL, help="SSL method of the references.")] = "simclr",
    reference_arch: Annotated[str, typer.Option(
        rich_help_panel=REFERENCE_PANEL, help="Backbone of the references.")] = "resnet-tiny",
    reference_epochs: Annotated[int, typer.Option(
        rich_help_panel=REFERENCE_PANEL, min=1,
        help="Training epochs of each reference.")] = 50,
    reference_model: Annotated[list[str] | None, typer.Option(
        rich_help_panel=REFERENCE_PANEL, metavar="MODEL",
        help="An encoder that never saw the owner's images, as a reference (repeatable): "
             "any --suspect form that needs no --arch "
             f"({form_examples(needs_no_arch(model_forms('encoder')))}).")] = None,
    reference_dir: Annotated[Path | None, typer.Option(
        rich_help_panel=REFERENCE_PANEL,
        help="Cache of trained references (default OUT/references), shared with 'audit "
             "encoder --knowledge reference'; reused and resumed by content hash.")] = None,
    reference_workers: Annotated[int, typer.Option(
        rich_help_panel=REFERENCE_PANEL, min=1,
        help="References trained at once as Ray tasks (1: in this process).")] = 1,
    seed: Seed = 0,
    device: Device = "auto",
    threads: Threads = "auto",
    amp: Amp = "auto",
) -> None:
    """Test whether a suspect encoder is derived from yours (stolen or fine-tuned); write
    report.json and report.html."""
    use_threads(threads)
    from leakprobe.report.ownership import verdict_line
    from leakprobe.workflows.ownership import OwnershipSpec, run_ownership

    spec = OwnershipSpec(
        suspect=suspect, members=members, nonmembers=nonmembers, out=out, victim=victim,
        reference_data=reference_data, references=references,
        reference_method=reference_method, reference_arch=reference_arch,
        reference_epochs=reference_epochs, reference_model=tuple(reference_model or ()),
        reference_dir=reference_dir, reference_workers=reference_workers, alpha=alpha,
        tests=tests, n_views=n_views, views=views, di_components=di_components,
        di_fit_on=di_fit_on, arch=arch, victim_arch=victim_arch,
        checkpoint_key=checkpoint_key, image_size=image_size, batch_size=batch_size,
        seed=seed, device=device, amp=amp)
    try:
        report = run_ownership(spec)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    typer.echo(verdict_line(report))  # the verdict first, as on the page
    width = max(len(t["name"]) for t in report["tests"])
    typer.echo(f"{'test':{width}s} {'statistic':>10s} {'p':>8s} {'refs':>5s}  combined")
    for t in report["tests"]:
        if not t["ran"]:
            typer.echo(f"{t['name']:{width}s} skipped: {t['skipped']}")
            continue
        typer.echo(f"{t['name']:{width}s} {t['statistic']:10.4f} {t['p_value']:8.2g} "
                   f"{t['references']:5d}  {'yes' if t['combined'] else 'no'}")
    for w in report.get("warnings", []):
        typer.echo(f"warning: {w}", err=True)
    typer.echo(f"report: {out / 'report.html'}")
