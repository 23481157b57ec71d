"""``leakprobe defend encoder``: one defence at several strengths, privacy against utility."""

from __future__ import annotations

from typing import Annotated

import typer

from leakprobe.cli.options import (
    ATTACKS_PANEL,
    INPUTS_PANEL,
    TRAINING_PANEL,
    Amp,
    ArchKwargs,
    Backbone,
    BatchSize,
    CropScale,
    Device,
    DPClip,
    DPDelta,
    Folds,
    ImageSize,
    LearningRate,
    MemberCount,
    MethodKwargs,
    NonmemberCount,
    NumParts,
    NViews,
    Out,
    Permutations,
    ProjDim,
    Repeats,
    Seed,
    SSLMethod,
    Temperature,
    Threads,
    Views,
    WeightDecay,
    data_option,
    method_overrides,
    parse_crop_scale,
    parse_json_object,
    use_threads,
)
from leakprobe.errors import LeakprobeError

app = typer.Typer(no_args_is_help=True, help="Train defended targets and measure the "
                  "privacy/utility trade-off.")


def parse_values(text: str | None, defence: str) -> list[float | None]:
    """``--values`` as strengths of ``defence`` (``none``/``off``: a DP sweep's run without DP;
    SCSR's default lower bounds when not given)."""
    if not text:
        if defence == "scsr":
            from leakprobe.defences.scsr import DEFAULT_LOWER_BOUNDS

            return list(DEFAULT_LOWER_BOUNDS)
        raise LeakprobeError(f"--values is required for --defence {defence}")
    values: list[float | None] = []
    for v in text.split(","):
        v = v.strip()
        if v.lower() in ("none", "off") and defence in ("dp", "dp-epsilon"):
            values.append(None)
            continue
        try:
            values.append(float(v))
        except ValueError as e:
            raise LeakprobeError(f"--values must be a comma list of numbers, got {text!r}") from e
    return values


@app.command("encoder")
def defend_encoder_cmd(
    *,
    defence: Annotated[str, typer.Option(
        rich_help_panel=INPUTS_PANEL,
        help="early-stopping (values: epochs), dp (noise multipliers; 'none' adds a run "
             "without DP), dp-epsilon (target epsilons) or scsr (crop-scale lower bounds).")],
    values: Annotated[str | None, typer.Option(
        rich_help_panel=INPUTS_PANEL,
        help="Comma list of strengths (scsr default: 0.08,0.3,0.5).")] = None,
    data: Annotated[str, data_option(
        "--data", "The image pool the member split is drawn from (labelled for utility), in "
        "one of these forms:")] = "synthetic:400",
    members: MemberCount = 200,
    nonmembers: NonmemberCount = None,
    utility_data: Annotated[str | None, data_option(
        "--utility-data", "Labelled data for k-NN/linear-probe utility (default: the "
        "non-member split): any form --data takes.", ())] = None,
    out: Out,
    attacks: Annotated[str, typer.Option(
        rich_help_panel=ATTACKS_PANEL,
        help="Comma list of attacks (`leakprobe attacks`).")] = "partcrop,encodermi",
    folds: Folds = 2,
    repeats: Repeats = 1,
    permutations: Permutations = None,
    num_parts: NumParts = None,
    n_views: NViews = None,
    views: Views = None,
    method: SSLMethod = "simclr",
    arch: Backbone = "resnet-tiny",
    arch_kwargs: ArchKwargs = None,
    method_kwargs: MethodKwargs = None,
    temperature: Temperature = None,
    proj_dim: ProjDim = None,
    crop_scale: CropScale = "0.08,1.0",
    epochs: Annotated[int, typer.Option(
        rich_help_panel=TRAINING_PANEL,
        help="Training epochs (early stopping: max of --values).")] = 40,
    batch_size: BatchSize = 64,
    lr: LearningRate = 1e-3,
    weight_decay: WeightDecay = 1e-5,
    image_size: ImageSize = 32,
    dp_clip: DPClip = 1.0,
    dp_delta: DPDelta = 1e-5,
    amp: Amp = "auto",
    seed: Seed = 0,
    device: Device = "auto",
    threads: Threads = "auto",
) -> None:
    """Train targets at several strengths of one defence, audit each, report the trade-off."""
    use_threads(threads)
    from leakprobe.data.loaders import load_dataset
    from leakprobe.data.splits import make_split
    from leakprobe.report.defence import defence_rows
    from leakprobe.training.encoder import EncoderRecipe
    from leakprobe.training.trainer import TrainConfig
    from leakprobe.workflows.defend import defend_encoder

    vals = parse_values(values, defence)
    if defence == "early-stopping":
        epochs = int(max(v for v in vals if v is not None))
    dataset = load_dataset(data, image_size, seed)
    split = make_split(dataset, members, nonmembers, seed=seed)
    recipe = EncoderRecipe(method, arch, parse_json_object(arch_kwargs, "--arch-kwargs"),
                           parse_crop_scale(crop_scale),
                           method_overrides(method_kwargs, temperature, proj_dim))
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, amp=amp, seed=seed, device=device)
    labelled = load_dataset(utility_data, image_size, seed) if utility_data else None
    report = defend_encoder(split, defence=defence, values=vals, recipe=recipe, config=config,
                            out_dir=out, attacks=attacks, utility_set=labelled, folds=folds,
                            repeats=repeats,
                            permutations=permutations, max_grad_norm=dp_clip, delta=dp_delta,
                            num_parts=num_parts, n_views=n_views, views=views)
    _print_tradeoff_table(report, defence_rows(report))
    typer.echo(f"report: {out / 'report.html'}")


def _print_tradeoff_table(report: dict, table: tuple[list[str], list[dict]]) -> None:
    """The verdict, then one row per setting: utility, epsilon, each attack's AUC; footnotes
    and warnings."""
    names, rows = table
    if report.get("summary"):
        typer.echo(report["summary"])
    typer.echo(f"{'setting':16s} {'k-NN':>6s} {'probe':>6s} {'epsilon':>8s} "
               + " ".join(f"{n[:12]:>12s}" for n in names))
    for r in rows:
        # a number only when it is a DP guarantee; none*: nominal only (footnote below)
        eps = {"-": "-", "inf (no noise)": "inf"}.get(r["epsilon_text"], r["epsilon_text"])
        if r["epsilon"] is None and r["epsilon_nominal"] is not None:
            eps = "none*"
        knn = "-" if r["knn"] is None else f"{r['knn']:.3f}"
        probe = "-" if r["probe"] is None else f"{r['probe']:.3f}"
        typer.echo(f"{r['name']:16s} {knn:>6s} {probe:>6s} {eps:>8s} "
                   + " ".join(f"{r['auc'].get(n, float('nan')):12.3f}" for n in names))
    for r in rows:
        if r["epsilon"] is None and r["epsilon_nominal"] is not None:
            typer.echo(f"* {r['name']}: no DP guarantee, nominal epsilon "
                       f"{r['epsilon_nominal']:.3g} ({r['caveat']})")
    for w in report.get("warnings", []):
        typer.echo(f"warning: {w}", err=True)
