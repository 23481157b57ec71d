"""``leakprobe steal encoder``: surrogate encoders trained from a target's embeddings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from leakprobe.cli.options import (
    DATA_FORMS,
    TRAINING_PANEL,
    Amp,
    CheckpointKey,
    Device,
    Epochs,
    InputSize,
    LearningRate,
    ModelArch,
    Seed,
    Threads,
    data_option,
    json_object_callback,
    model_option,
    out_option,
    parse_json_object,
    use_threads,
)

app = typer.Typer(no_args_is_help=True, help="Steal a model through its queries.")

STEALING_PANEL = "Stealing"


@app.command("encoder")
def steal_encoder_cmd(
    *,
    model: Annotated[str, model_option("encoder", lead="The target encoder, in one of these "
                                       "forms:")],
    query_data: Annotated[str, data_option(
        "--query-data", "Attacker's images, sent to the target, in one of these forms:",
        DATA_FORMS)],
    out: Annotated[Path, out_option("Output folder (surrogates, query cache, report).")],
    probe_train: Annotated[str | None, data_option(
        "--probe-train", "Labelled images to fit the linear probes: any form --query-data "
        "takes.", ())] = None,
    probe_test: Annotated[str | None, data_option(
        "--probe-test", "Labelled images to judge the probes: any form --query-data takes.",
        ())] = None,
    arch: ModelArch = None,
    checkpoint_key: CheckpointKey = None,
    image_size: InputSize = None,
    budget: Annotated[str, typer.Option(
        rich_help_panel=STEALING_PANEL,
        help="Queries allowed; a comma list sweeps budgets.")] = "5000",
    method: Annotated[str, typer.Option(
        rich_help_panel=STEALING_PANEL,
        help="Stealing methods, comma list or 'all': contsteal, contsteal-fresh, rda, "
        "stolenencoder, mse, cosine (`leakprobe attacks` lists their queries per "
        "image).")] = "contsteal",
    views: Annotated[int | None, typer.Option(
        "--views-per-image", "--views", rich_help_panel=STEALING_PANEL,
        help="Target views each query image buys, for every method that takes a count "
        "(default: rda 10, contsteal-fresh 2, the others 1).")] = None,
    target_defence: Annotated[str | None, typer.Option(
        rich_help_panel=STEALING_PANEL,
        help="Answer defences applied to every answer the attacker gets, each its own row: "
        "none, noise:STD, round:DECIMALS, topk:K, b4b or b4b:NAME=VALUE,... (NAME: lambda, "
        "alpha, beta, transform) (join with +, separate rows with commas; B4B treats the "
        "attacker as one client). "
        "Local targets only: a server applies its own.")] = None,
    surrogate_arch: Annotated[str, typer.Option(
        rich_help_panel=TRAINING_PANEL,
        help="Backbone of the surrogate (`leakprobe models`).")] = "resnet-tiny",
    surrogate_kwargs: Annotated[str | None, typer.Option(
        rich_help_panel=TRAINING_PANEL,
        help="Surrogate backbone overrides (JSON).",
        callback=json_object_callback("--surrogate-kwargs"))] = None,
    epochs: Epochs = 50,
    batch_size: Annotated[int, typer.Option(
        rich_help_panel=TRAINING_PANEL, help="Images per surrogate training batch.")] = 128,
    lr: LearningRate = 1e-3,
    seed: Seed = 0,
    device: Device = "auto",
    threads: Threads = "auto",
    amp: Amp = "auto",
) -> None:
    """Train surrogate encoders from the target's embeddings within a query budget."""
    use_threads(threads)
    from leakprobe.data.splits import load_images
    from leakprobe.targets.defended import refuse_remote_defence
    from leakprobe.targets.families import load_target
    from leakprobe.workflows.steal import (
        parse_budgets,
        resolve_defences,
        resolve_methods,
        steal_encoder,
    )

    # wrong names and impossible settings fail before the model is loaded
    parse_budgets(budget)
    resolve_methods(method, views)
    defences = resolve_defences(target_defence)
    if any(not d.is_identity for d in defences):
        refuse_remote_defence(model)
    target = load_target(model, family="encoder", arch=arch, image_size=image_size,
                         device=device, checkpoint_key=checkpoint_key)
    size = target.input_size
    queries = load_images(query_data, size)
    p_train = load_images(probe_train, size) if probe_train else None
    p_test = load_images(probe_test, size) if probe_test else None
    report = steal_encoder(
        target, queries, budgets=budget, methods=method, views=views,
        target_defences=target_defence,
        surrogate_arch=surrogate_arch,
        surrogate_kwargs=parse_json_object(surrogate_kwargs, "--surrogate-kwargs"),
        epochs=epochs, batch_size=batch_size, lr=lr, amp=amp, device=device,
        probe_train=p_train, probe_test=p_test, seed=seed, out_dir=out)
    _print_theft_table(report, out)


def _print_theft_table(report: dict, out: Path) -> None:
    """The verdict, the target's probe accuracy, one row per (method, budget), warnings, the
    page."""
    if report.get("summary"):
        typer.echo(report["summary"])
    if report["target_probe_accuracy"] is not None:
        typer.echo(f"target linear-probe accuracy {report['target_probe_accuracy']:.3f}"
                   + (f" (k-NN {report['target_knn_accuracy']:.3f})"
                      if report.get("target_knn_accuracy") is not None else "") + ", "
                   f"random-init surrogate {report['random_init_probe_accuracy']:.3f}"
                   + (f" (its Procrustes cosine {report['random_init_procrustes_cosine']:.3f})"
                      if report.get("random_init_procrustes_cosine") is not None else "")
                   + ("" if report.get("probe_informative", True) else " (probe not informative)"))
    width = max([len("method")] + [len(str(r["method"])) for r in report["results"]])
    dwidth = max([len("defence")] + [len(str(r.get("defence"))) for r in report["results"]])
    typer.echo(f"{'method':{width}s} {'defence':{dwidth}s} {'budget':>7s} {'queries':>8s} "
               f"{'probe acc':>9s} {'agreement':>9s} {'procrustes':>10s} {'seconds':>8s}")
    for r in report["results"]:
        m = r["metrics"]
        typer.echo(f"{r['method']!s:{width}s} {r.get('defence', 'none')!s:{dwidth}s} "
                   f"{r['budget']:7d} {r['queries_used']:8d} "
                   f"{m.get('surrogate_probe_accuracy', float('nan')):9.3f} "
                   f"{m.get('agreement', float('nan')):9.3f} "
                   f"{m.get('procrustes_cosine', float('nan')):10.3f} "
                   f"{r.get('seconds', float('nan')):8.1f}")
    for d in report.get("defences") or []:
        typer.echo(f"defence {d['defence']}: the target's own probe accuracy "
                   f"{d['target_probe_accuracy']:.3f}, k-NN {d['target_knn_accuracy']:.3f} "
                   "for a legitimate user")
    for warning in report.get("warnings", []):
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(f"report: {out / 'report.html'}")
