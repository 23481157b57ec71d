"""``leakprobe audit encoder|image2image|captioner|image-text``: membership-inference audits (and
``audit ownership``, registered from :mod:`leakprobe.cli.ownership`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from leakprobe.cli.options import (
    ATTACKS_PANEL,
    CAPTION_FORMS,
    INPUTS_PANEL,
    MODEL_PANEL,
    PAIRED_FORMS,
    SPLIT_FORMS,
    Amp,
    CheckpointKey,
    Device,
    Folds,
    InputSize,
    ModelArch,
    NumParts,
    NViews,
    Permutations,
    QueryBatchSize,
    QueryPrecision,
    Repeats,
    ReportOut,
    Seed,
    Threads,
    Views,
    data_option,
    form_examples,
    model_forms,
    model_option,
    needs_no_arch,
    use_threads,
)
from leakprobe.cli.output import print_summary
from leakprobe.cli.ownership import audit_ownership_cmd
from leakprobe.targets.families import FAMILIES

app = typer.Typer(no_args_is_help=True, help="Run membership-inference audits.")
SHADOW_PANEL = "Shadow encoder (--knowledge shadow)"
REFERENCE_PANEL = "Reference encoders (--knowledge reference)"
IMAGE_TEXT_REFERENCE_PANEL = "Reference image-text models (--knowledge reference)"
SCALE_PANEL = "Scale and resuming"
app.command("ownership")(audit_ownership_cmd)

#: What --shadow-data, --reference-data... take: the forms --members lists, less a manifest.
_DATA_FORMS = "any form --members takes but a split manifest"


@app.command("encoder")
def audit_encoder_cmd(
    *,
    model: Annotated[str, model_option("encoder")],
    members: Annotated[str, data_option(
        "--members", "Images the encoder trained on, in one of these forms:", SPLIT_FORMS)],
    nonmembers: Annotated[str, data_option(
        "--nonmembers", "Images it did not train on, from the same pool: any form --members "
        "takes.", ())],
    out: ReportOut,
    utility_data: Annotated[str | None, data_option(
        "--utility-data", f"Labelled data for k-NN/linear-probe utility: {_DATA_FORMS}.",
        ())] = None,
    arch: ModelArch = None,
    checkpoint_key: CheckpointKey = None,
    image_size: InputSize = None,
    batch_size: QueryBatchSize = "auto",
    query_precision: QueryPrecision = "auto",
    attacks: Annotated[str, typer.Option(
        rich_help_panel=ATTACKS_PANEL,
        help="Comma list (`leakprobe attacks` lists them with their queries per image); "
             "aliases: encodermi, lpla, baseline, partcrop-variants, calibrated, all (= "
             "partcrop, encodermi, lpla, baseline; partcrop-pooled stands in for partcrop "
             "when the model exposes no tokens).")] = FAMILIES["encoder"].default_attacks,
    knowledge: Annotated[str, typer.Option(
        rich_help_panel=ATTACKS_PANEL,
        help="known-subset, shadow, or reference (calibrated attacks against reference "
             "encoders; default attacks then: calibrated).")] = "known-subset",
    folds: Folds = 2,
    repeats: Repeats = 1,
    permutations: Permutations = None,
    num_parts: NumParts = None,
    n_views: NViews = None,
    views: Views = None,
    shadow_data: Annotated[str | None, data_option(
        "--shadow-data", f"Attacker's own data for a shadow encoder: {_DATA_FORMS}.", (),
        panel=SHADOW_PANEL)] = None,
    shadow_arch: Annotated[str, typer.Option(
        rich_help_panel=SHADOW_PANEL, help="Backbone of the shadow encoder.")] = "resnet-tiny",
    shadow_method: Annotated[str, typer.Option(
        rich_help_panel=SHADOW_PANEL, help="SSL method of the shadow encoder.")] = "simclr",
    shadow_epochs: Annotated[int, typer.Option(
        rich_help_panel=SHADOW_PANEL, help="Training epochs of the shadow encoder.")] = 50,
    reference_data: Annotated[str | None, data_option(
        "--reference-data", "Attacker's population data for reference encoders; must not "
        f"share images with the audited sets: {_DATA_FORMS}.", (),
        panel=REFERENCE_PANEL)] = None,
    references: Annotated[int | None, typer.Option(
        rich_help_panel=REFERENCE_PANEL, min=0,
        help="Reference encoders to train on random halves of --reference-data "
             "(default 4, or 0 with --reference-model).")] = None,
    reference_method: Annotated[str, typer.Option(
        rich_help_panel=REFERENCE_PANEL, help="SSL method of the references.")] = "simclr",
    reference_arch: Annotated[str, typer.Option(
        rich_help_panel=REFERENCE_PANEL,
        help="Backbone of the references: a registered name (`leakprobe models`), or "
             "file.py:factory / package.module:factory returning a fresh nn.Module that maps "
             "images (B,3,H,W) to embeddings (B,D), e.g. the target's own architecture.")
    ] = "resnet-tiny",
    reference_init: Annotated[str | None, typer.Option(
        rich_help_panel=REFERENCE_PANEL, metavar="MODEL",
        help="Weights every reference starts from instead of random init (e.g. the public "
             "checkpoint the target was fine-tuned from), then fine-tunes on its half: a "
             "train folder, .safetensors of --reference-arch, a published .pth of a public "
             "--reference-arch, TorchScript, or file.py:factory.")] = None,
    reference_base_epochs: Annotated[int, typer.Option(
        rich_help_panel=REFERENCE_PANEL, min=0,
        help="Cheap references: first train one reference on all of --reference-data for "
             "this many epochs, then fine-tune each reference from it for "
             "--reference-epochs (0: every reference from scratch or --reference-init).")
    ] = 0,
    reference_epochs: Annotated[int, typer.Option(
        rich_help_panel=REFERENCE_PANEL, min=1,
        help="Training epochs of each reference.")] = 50,
    reference_model: Annotated[list[str] | None, typer.Option(
        rich_help_panel=REFERENCE_PANEL, metavar="MODEL",
        help="An encoder that did not train on the audited images, as a reference "
             "(repeatable): any --model form that needs no --arch "
             f"({form_examples(needs_no_arch(model_forms('encoder')))}).")] = None,
    online: Annotated[bool, typer.Option(
        "--online", rich_help_panel=REFERENCE_PANEL,
        help="Train references on halves of reference data + the audited candidates (IN "
             "and OUT references per candidate; costlier; pays off only with many references "
             "that memorise like the target).")] = False,
    population_samples: Annotated[int, typer.Option(
        rich_help_panel=REFERENCE_PANEL, min=2,
        help="Reference-data images queried on the target too (RMIA's z, the statistics' "
             "direction).")] = 500,
    reference_dir: Annotated[Path | None, typer.Option(
        rich_help_panel=REFERENCE_PANEL,
        help="Cache of trained references (default OUT/references); reused and resumed "
             "by content hash.")] = None,
    reference_workers: Annotated[int, typer.Option(
        rich_help_panel=REFERENCE_PANEL, min=1,
        help="References trained at once as Ray tasks (1: in this process).")] = 1,
    workers: Annotated[int, typer.Option(
        rich_help_panel=SCALE_PANEL, min=1,
        help="Ray workers that answer the query plan (one per GPU where there are GPUs, "
             "CPU processes otherwise); the report equals a one-process run's.")] = 1,
    ray_address: Annotated[str | None, typer.Option(
        rich_help_panel=SCALE_PANEL,
        help="An existing Ray cluster for --workers (auto, ray://HOST:10001); the images "
             "must be readable at the same path on every node.")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume/--no-resume", rich_help_panel=SCALE_PANEL,
        help="Reuse the features a killed run left in OUT/query-cache.")] = True,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", rich_help_panel=SCALE_PANEL,
        help="Check everything, print the query plan and a time estimate, query nothing.")
    ] = False,
    seed: Seed = 0,
    device: Device = "auto",
    threads: Threads = "auto",
    amp: Amp = "auto",
) -> None:
    """Audit an encoder with membership attacks; write report.json, report.html and plots."""
    use_threads(threads)
    from leakprobe.workflows.encoder_audit import EncoderAuditSpec

    spec = EncoderAuditSpec(
        model=model, members=members, nonmembers=nonmembers, out=out, attacks=attacks,
        arch=arch, checkpoint_key=checkpoint_key, image_size=image_size, knowledge=knowledge,
        folds=folds, repeats=repeats, permutations=permutations, shadow_data=shadow_data,
        shadow_arch=shadow_arch, shadow_method=shadow_method, shadow_epochs=shadow_epochs,
        reference_data=reference_data, references=references,
        reference_method=reference_method, reference_arch=reference_arch,
        reference_init=reference_init, reference_base_epochs=reference_base_epochs,
        reference_epochs=reference_epochs, reference_model=tuple(reference_model or ()),
        online=online, population_samples=population_samples, reference_dir=reference_dir,
        reference_workers=reference_workers, num_parts=num_parts, n_views=n_views,
        views=views, utility_data=utility_data, batch_size=batch_size,
        query_precision=query_precision, seed=seed, device=device, amp=amp, workers=workers,
        ray_address=ray_address, resume=resume, dry_run=dry_run)
    _run_spec(spec)


def _run_spec(spec) -> None:
    from leakprobe.workflows.encoder_audit import run_encoder_audit

    try:
        report = run_encoder_audit(spec)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    if isinstance(report, dict):
        print_summary(report, spec.out)


@app.command("run")
def audit_run_cmd(
    spec_file: Annotated[Path, typer.Argument(
        metavar="SPEC.yaml", help="An audit spec: the options of 'audit encoder' as YAML "
        "keys (model, members, nonmembers, out, attacks, arch, ...). model: "
        f"{form_examples(model_forms('encoder'))} (arch: NAME beside a .pth or "
        f".safetensors); members, nonmembers: {form_examples(SPLIT_FORMS)}.")],
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", rich_help_panel=SCALE_PANEL,
        help="Check everything, print the query plan, query nothing.")] = False,
    threads: Threads = "auto",
) -> None:
    """Run an encoder audit described by a YAML spec (same keys as the options).

    Example spec: model: dino_vits16.pth, arch: vit-small-patch16, members: data/members,
    nonmembers: data/nonmembers, out: runs/audit (one key a line).
    """
    use_threads(threads)
    from leakprobe.workflows.encoder_audit import EncoderAuditSpec

    spec = EncoderAuditSpec.from_yaml(spec_file)
    _run_spec(spec.replace(dry_run=True) if dry_run else spec)


@app.command("image2image")
def audit_image2image_cmd(
    *,
    model: Annotated[str, model_option("image2image")],
    members: Annotated[Path, data_option(
        "--members", "Pairs the model trained on, in this form:", PAIRED_FORMS)],
    nonmembers: Annotated[Path, data_option(
        "--nonmembers", "Pairs it did not train on, in the same form.", ())],
    out: ReportOut,
    arch: ModelArch = None,
    image_size: InputSize = None,
    batch_size: QueryBatchSize = 32,
    attacks: Annotated[str, typer.Option(
        show_default=False,  # a long default typer cuts: in the help
        rich_help_panel=ATTACKS_PANEL,
        help="Comma list; default: reconstruction, predictability, membership-error (= "
             "all). Also membership-error-weighted.")
    ] = FAMILIES["image2image"].default_attacks,
    num_classes: Annotated[int | None, typer.Option(
        rich_help_panel=INPUTS_PANEL,
        help="Targets are label maps with N classes.")] = None,
    features: Annotated[str, typer.Option(
        rich_help_panel=ATTACKS_PANEL,
        help="Pixel features: builtin or a backbone name such as wide-resnet50-2 (needs "
             "--features-weights).")] = "builtin",
    features_weights: Annotated[str | None, typer.Option(
        rich_help_panel=ATTACKS_PANEL, metavar="FILE",
        help="safetensors weights of --features, e.g. wrn50_2.safetensors (torchvision's, "
             "converted).")] = None,
    seg_error: Annotated[str, typer.Option(
        rich_help_panel=ATTACKS_PANEL,
        help="Segmentation reconstruction error: l1, ce, iou.")] = "l1",
    folds: Folds = 2,
    repeats: Repeats = 1,
    permutations: Permutations = None,
    seed: Seed = 0,
    device: Device = "auto",
    threads: Threads = "auto",
) -> None:
    """Audit an image-to-image model: reconstruction, predictability and membership error."""
    use_threads(threads)
    from leakprobe.data.paired import load_paired_folder
    from leakprobe.targets.families import load_target
    from leakprobe.workflows.audit import audit_image2image, build_image2image_attacks

    build_image2image_attacks(attacks, seed, seg_error=seg_error)  # names fail before loading
    target = load_target(model, family="image2image", arch=arch, image_size=image_size,
                         device=device, batch_size=batch_size)
    mem = load_paired_folder(members, target.input_size, num_classes)
    non = load_paired_folder(nonmembers, target.input_size, num_classes)
    report = audit_image2image(target, mem, non, attacks=attacks, folds=folds, repeats=repeats,
                               permutations=permutations, seed=seed, out_dir=out,
                               context={"model": model}, pixel_features=features,
                               features_weights=features_weights, num_classes=num_classes,
                               seg_error=seg_error)
    print_summary(report, out)


@app.command("captioner")
def audit_captioner_cmd(
    *,
    model: Annotated[str, model_option("captioner")],
    members: Annotated[str, data_option(
        "--members", "Captioned images the captioner trained on, in one of these forms:",
        CAPTION_FORMS)],
    nonmembers: Annotated[str, data_option(
        "--nonmembers", "Captioned images it did not train on: any form --members takes.",
        ())],
    shadow_data: Annotated[str, data_option(
        "--shadow-data", "Attacker's own captioned data, to train a shadow captioner: any "
        "form --members takes.", ())],
    out: ReportOut,
    images: Annotated[str | None, typer.Option(
        rich_help_panel=INPUTS_PANEL, metavar="FOLDER",
        help="Folder the JSON file_names resolve against (default: each JSON file's "
             "folder).")] = None,
    image_size: InputSize = None,
    budget: Annotated[int | None, typer.Option(
        rich_help_panel=MODEL_PANEL, help="Most images sent to the target.")] = None,
    attacks: Annotated[str, typer.Option(
        rich_help_panel=ATTACKS_PANEL, help="Comma list: m4i-metric, m4i-feature (all).")
    ] = FAMILIES["captioner"].default_attacks,
    classifier: Annotated[str, typer.Option(
        rich_help_panel=ATTACKS_PANEL, help="m4i-metric classifier: svm, logreg, mlp.")
    ] = "svm",
    shadow_epochs: Annotated[int, typer.Option(
        rich_help_panel=ATTACKS_PANEL, help="Shadow captioner epochs (match the target).")
    ] = 100,
    extractor_epochs: Annotated[int, typer.Option(
        rich_help_panel=ATTACKS_PANEL, help="m4i-feature extractor epochs.")] = 20,
    permutations: Permutations = None,
    seed: Seed = 0,
    device: Device = "auto",
    threads: Threads = "auto",
    amp: Amp = "auto",
) -> None:
    """Audit a captioner with M4I (metric- and feature-based) under the shadow setting."""
    use_threads(threads)
    from leakprobe.data.captions import load_captioned_dataset
    from leakprobe.device import resolve_device
    from leakprobe.targets.families import load_target
    from leakprobe.workflows.audit import audit_captioner, build_caption_attacks

    resolved = str(resolve_device(device))  # m4i-feature's extractor trains there
    attack_objs = build_caption_attacks(attacks, seed, classifier=classifier,
                                        extractor_epochs=extractor_epochs, device=resolved)
    target = load_target(model, family="captioner", device=device, budget=budget,
                         image_size=image_size)
    size = image_size or target.input_size
    mem = load_captioned_dataset(members, size, seed, images)
    non = load_captioned_dataset(nonmembers, size, seed, images)
    shadow = load_captioned_dataset(shadow_data, size, seed, images)
    # audit_captioner checks the sets, the shadow data and the budget before it trains
    report = audit_captioner(target, mem, non, shadow_data=shadow, attacks=attack_objs,
                             permutations=permutations, seed=seed, out_dir=out,
                             context={"model": model}, shadow_epochs=shadow_epochs, amp=amp,
                             device=resolved)
    print_summary(report, out)


@app.command("image-text")
def audit_image_text_cmd(
    *,
    model: Annotated[str, model_option("image-text")],
    members: Annotated[str, data_option(
        "--members", "Captioned images the model trained on (image-caption pairs), in one of "
        "these forms:", CAPTION_FORMS)],
    nonmembers: Annotated[str, data_option(
        "--nonmembers", "Captioned images it did not train on, from the same pool: any form "
        "--members takes.", ())],
    out: ReportOut,
    images: Annotated[str | None, typer.Option(
        rich_help_panel=INPUTS_PANEL, metavar="FOLDER",
        help="Folder the JSON file_names resolve against (default: each JSON file's "
             "folder).")] = None,
    population: Annotated[str | None, data_option(
        "--population", "Attacker's own captioned images, sharing none with the audited "
        "sets: their captions join clip-rank's distractors; any form --members takes.", (),
        panel=ATTACKS_PANEL)] = None,
    image_size: InputSize = None,
    batch_size: QueryBatchSize = "auto",
    query_precision: QueryPrecision = "auto",
    budget: Annotated[int | None, typer.Option(
        rich_help_panel=MODEL_PANEL, min=1,
        help="Most queries sent to the target (each image and each text is one).")] = None,
    attacks: Annotated[str | None, typer.Option(
        show_default=False,  # a long default typer cuts: in the help
        rich_help_panel=ATTACKS_PANEL,
        help="Comma list (`leakprobe attacks` lists them with their queries per image); "
             "default: clip-cosine, clip-rank, clip-augment (under --knowledge reference: "
             "clip-cosine, clip-rank, clip-augment-mean, calibrated). Also "
             "clip-augment-mean; all = the four; calibrated = lira-clip-cosine, "
             "rmia-clip-cosine, lira-clip-augment-mean, rmia-clip-augment-mean; "
             "encoder:NAME runs an encoder attack or alias on the image tower, e.g. "
             "encoder:all. The blind floor always runs.")] = None,
    knowledge: Annotated[str, typer.Option(
        rich_help_panel=ATTACKS_PANEL,
        help="known-subset (fitted attacks cross-fit on the audited pairs) or reference "
             "(calibrated attacks against reference image-text models).")] = "known-subset",
    n_views: Annotated[int | None, typer.Option(
        "--n-views", rich_help_panel=ATTACKS_PANEL, min=1,
        help="clip-augment's (view, perturbed caption) pairs per image (default 8); "
             "EncoderMI's views for encoder: attacks.")] = None,
    views: Annotated[str | None, typer.Option(
        "--views", rich_help_panel=ATTACKS_PANEL,
        help="View recipe of clip-augment (default: mild,jitter-p=0: crops of 0.5-1 of the "
             "image and flips) and of the encoder: attacks, e.g. 'simclr' or "
             "'mild,crop-scale=0.8:1'.")] = None,
    num_parts: NumParts = None,
    folds: Folds = 2,
    repeats: Repeats = 1,
    permutations: Permutations = None,
    reference_data: Annotated[str | None, data_option(
        "--reference-data", "Attacker's own captioned images for reference models; must "
        "not share images with the audited sets: any form --members takes.", (),
        panel=IMAGE_TEXT_REFERENCE_PANEL)] = None,
    references: Annotated[int | None, typer.Option(
        rich_help_panel=IMAGE_TEXT_REFERENCE_PANEL, min=0,
        help="Reference models to train (CLIP recipe of `leakprobe train image-text`) on "
             "random halves of --reference-data (default 4, or 0 with "
             "--reference-model).")] = None,
    reference_epochs: Annotated[int, typer.Option(
        rich_help_panel=IMAGE_TEXT_REFERENCE_PANEL, min=1,
        help="Training epochs of each reference.")] = 50,
    reference_lr: Annotated[float, typer.Option(
        rich_help_panel=IMAGE_TEXT_REFERENCE_PANEL, min=0.0,
        help="Learning rate of each reference.")] = 2e-3,
    reference_arch: Annotated[str, typer.Option(
        rich_help_panel=IMAGE_TEXT_REFERENCE_PANEL,
        help="Image backbone of the references.")] = "resnet-tiny",
    reference_model: Annotated[list[str] | None, typer.Option(
        rich_help_panel=IMAGE_TEXT_REFERENCE_PANEL, metavar="MODEL",
        help="An image-text model that did not train on the audited pairs, as a reference "
             "(repeatable): any --model form, e.g. hf:DIR.")] = None,
    population_samples: Annotated[int, typer.Option(
        rich_help_panel=IMAGE_TEXT_REFERENCE_PANEL, min=2,
        help="Reference-data pairs queried on the target too (RMIA's z).")] = 500,
    reference_dir: Annotated[Path | None, typer.Option(
        rich_help_panel=IMAGE_TEXT_REFERENCE_PANEL,
        help="Cache of trained references (default OUT/references); reused and resumed by "
             "content hash.")] = None,
    seed: Seed = 0,
    device: Device = "auto",
    threads: Threads = "auto",
) -> None:
    """Audit an image-text (CLIP-style) model: cosine, retrieval rank and augmentation
    stability of image-caption pairs (calibrated against reference models under --knowledge
    reference), with the blind floor; write report.json and report.html.
    """
    use_threads(threads)
    from leakprobe.data.captions import load_captioned_dataset
    from leakprobe.device import resolve_device
    from leakprobe.errors import LeakprobeError
    from leakprobe.preflight import check_out_dir
    from leakprobe.targets.families import load_target
    from leakprobe.workflows.image_text_audit import (
        DEFAULT_ATTACKS,
        DEFAULT_REFERENCE_ATTACKS,
        audit_image_text,
        build_image_text_attacks,
        check_image_text_audit,
        image_text_references,
    )

    given: dict[str, Any] = {"n_views": n_views, "views": views, "num_parts": num_parts}
    options = {k: v for k, v in given.items() if v is not None}
    reference = knowledge == "reference"
    if not reference and (reference_data or reference_model or references is not None):
        raise LeakprobeError("--reference-data/--reference-model/--references need "
                             "--knowledge reference")
    if reference and not reference_data:
        raise LeakprobeError("--knowledge reference needs --reference-data (the attacker's "
                             "captioned images: references train on it and its pairs "
                             "calibrate)")
    if attacks is None:
        attacks = DEFAULT_REFERENCE_ATTACKS if reference else DEFAULT_ATTACKS
    build_image_text_attacks(attacks, seed, **options)  # names fail before loading
    check_out_dir(out, "--out")
    target = load_target(model, family="image-text", device=device, budget=budget,
                         image_size=image_size, batch_size=batch_size,
                         query_precision=query_precision)
    size = image_size or target.input_size
    mem = load_captioned_dataset(members, size, seed, images)
    non = load_captioned_dataset(nonmembers, size, seed, images)
    pop = load_captioned_dataset(population, size, seed, images) if population else None
    ref_data = load_captioned_dataset(reference_data, size, seed, images) \
        if reference_data else None
    common: dict[str, Any] = dict(attacks=attacks, folds=folds, repeats=repeats, seed=seed,
                                  knowledge=knowledge, population=pop, **options)
    # captions, sizes, overlap (reference data too) and the budget, before references train
    check_image_text_audit(target, mem, non, reference_data=ref_data,
                           population_samples=population_samples, **common)
    refs = None
    if ref_data is not None:
        count = references if references is not None else (0 if reference_model else 4)
        refs = image_text_references(
            ref_data, count=count, models=tuple(reference_model or ()),
            epochs=reference_epochs, lr=reference_lr, arch=reference_arch,
            out_dir=reference_dir or Path(out) / "references", seed=seed,
            population_samples=population_samples, device=str(resolve_device(device)),
            image_size=size)
    report = audit_image_text(target, mem, non, permutations=permutations, out_dir=out,
                              context={"model": model}, references=refs, **common)
    print_summary(report, out)
