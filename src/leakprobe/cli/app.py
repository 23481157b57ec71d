"""The ``leakprobe`` command: train targets, audit them, render reports, run the demo.

Errors caused by the user's input are printed as one line (``error: ...``) with exit status
2; ``--debug`` shows the full traceback instead.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from leakprobe.errors import LeakprobeError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Audit vision models for training-data leakage and theft.")
train_app = typer.Typer(no_args_is_help=True, help="Train target models on a member split.")
audit_app = typer.Typer(no_args_is_help=True, help="Run membership-inference audits.")
serve_app = typer.Typer(no_args_is_help=True, help="Serve a model over HTTP.")
steal_app = typer.Typer(no_args_is_help=True, help="Steal a model through its queries.")
defend_app = typer.Typer(no_args_is_help=True, help="Train defended targets and measure the "
                         "privacy/utility trade-off.")
app.add_typer(train_app, name="train")
app.add_typer(audit_app, name="audit")
app.add_typer(serve_app, name="serve")
app.add_typer(steal_app, name="steal")
app.add_typer(defend_app, name="defend")


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

    display_type_rich._leakprobe_flags = True
    TyperOption.display_type_rich = display_type_rich


_hide_flag_types()

_state = {"debug": False}

# Machine settings shared by every command that trains or queries (see leakprobe.precision
# and leakprobe.threads): chosen per machine by default, recorded in every report.
AMP_OPTION = typer.Option("auto", "--amp", metavar="auto|on|off",
                          help="bf16 autocast while training: auto = where the device runs "
                          "bf16 natively; queries to a target always run in fp32.")
THREADS_OPTION = typer.Option("auto", "--threads", metavar="auto|N",
                              envvar="LEAKPROBE_THREADS",
                              help="CPU threads for training and queries (auto = free "
                              "cores); scorer fits always use one.")
PERMUTATIONS_OPTION = typer.Option(
    None, "--permutations", min=0, metavar="N",
    help="Label permutations of each attack's test of 'no leakage' (p-value, null band, "
         "fitting-aware AUC interval); the target is queried once; 0 skips them. "
         "Default 100 (or $LEAKPROBE_PERMUTATIONS).")


def _machine(threads: str, amp: str | None = None) -> None:
    """Check ``--amp`` and set ``--threads`` before any work (restored when main ends)."""
    import torch

    from leakprobe.precision import check_amp
    from leakprobe.threads import set_threads

    if amp is not None:
        check_amp(amp)
    _state.setdefault("threads_before", torch.get_num_threads())
    set_threads(threads)


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors.")):
    _state["debug"] = debug


def _parse_scale(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError as e:
        raise LeakprobeError(f"--crop-scale must be 'LOW,HIGH', got {text!r}") from e
    if not 0 < lo <= hi <= 1:
        raise LeakprobeError(f"--crop-scale must satisfy 0 < LOW <= HIGH <= 1, got {text!r}")
    return lo, hi


def _parse_epochs(text: str | None, epochs: int) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError as e:
        raise LeakprobeError(f"--snapshot-epochs must be a comma list of integers, got "
                             f"{text!r}") from e
    if not values or values[0] < 1 or values[-1] > epochs:
        raise LeakprobeError(f"--snapshot-epochs must lie in 1..{epochs}, got {text!r}")
    return tuple(values)


def _parse_json(text: str | None, option: str) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise LeakprobeError(f"{option} must be a JSON object, got {text!r}") from e
    if not isinstance(value, dict):
        raise LeakprobeError(f"{option} must be a JSON object, got {text!r}")
    return value


@train_app.command("encoder")
def train_encoder(
    data: str = typer.Option("synthetic:2000", help="synthetic:N, digits, fashion-mnist, "
                             "idx:DIR, cifar10:DIR, cifar100:DIR or an image folder."),
    members: int = typer.Option(1000, help="Images in the member (training) split."),
    nonmembers: int = typer.Option(None, help="Non-member images kept (default: the rest)."),
    method: str = typer.Option("simclr", help="SSL method."),
    arch: str = typer.Option("resnet18-cifar", help="Backbone (see `leakprobe models`)."),
    arch_kwargs: str = typer.Option(None, help='Backbone overrides as JSON, e.g. \'{"width":32}\''),
    epochs: int = typer.Option(50),
    batch_size: int = typer.Option(256),
    lr: float = typer.Option(1e-3),
    weight_decay: float = typer.Option(1e-5),
    crop_scale: str = typer.Option("0.08,1.0", help="Random-resized-crop area range "
                                   "(SCSR defence: raise the lower bound, e.g. 0.5,1.0)."),
    temperature: float = typer.Option(None, help="Contrastive temperature (SimCLR, MoCo)."),
    proj_dim: int = typer.Option(None, help="Projection head output (SimCLR; 0: no head)."),
    method_kwargs: str = typer.Option(None, help='SSL method overrides as JSON, e.g. '
                                      '\'{"queue_size": 1024}\''),
    dp: bool = typer.Option(False, "--dp", help="Train with DP-SGD (BatchNorm -> GroupNorm)."),
    dp_noise: float = typer.Option(None, help="DP-SGD noise multiplier (default 1.0)."),
    dp_clip: float = typer.Option(1.0, help="DP-SGD per-image clipping bound."),
    dp_delta: float = typer.Option(1e-5, help="Delta at which epsilon is reported."),
    dp_epsilon: float = typer.Option(None, help="Target epsilon (sets the noise multiplier)."),
    snapshot_epochs: str = typer.Option(None, help="Comma list of epochs whose encoder is "
                                        "saved too (early-stopping study), e.g. 10,20,50."),
    image_size: int = typer.Option(32),
    amp: str = AMP_OPTION,
    resume: bool = typer.Option(False, help="Continue from out/checkpoints."),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N"),
    threads: str = THREADS_OPTION,
    out: Path = typer.Option(..., help="Output folder."),
):
    """Train an SSL encoder on a member split; write weights, TorchScript and split manifest."""
    _machine(threads, amp)
    from leakprobe.data.loaders import load_dataset
    from leakprobe.data.splits import make_split
    from leakprobe.io import write_json
    from leakprobe.targets.loading import load_encoder
    from leakprobe.training.dp import DPConfig
    from leakprobe.training.encoder import EncoderRecipe, train_target_encoder
    from leakprobe.training.trainer import TrainConfig
    from leakprobe.workflows.audit import encoder_utility

    _preflight(device, out)
    dataset = load_dataset(data, image_size, seed)
    split = make_split(dataset, members, nonmembers, seed=seed)
    overrides = _parse_json(method_kwargs, "--method-kwargs")
    for key, value in (("temperature", temperature), ("proj_dim", proj_dim)):
        if value is not None:
            overrides.setdefault(key, value)
    recipe = EncoderRecipe(method, arch, _parse_json(arch_kwargs, "--arch-kwargs"),
                           _parse_scale(crop_scale), overrides)
    dp_config = None
    if dp or dp_noise is not None or dp_epsilon is not None:
        noise = dp_noise if dp_noise is not None else (None if dp_epsilon else 1.0)
        dp_config = DPConfig(noise_multiplier=noise, max_grad_norm=dp_clip, delta=dp_delta,
                             target_epsilon=dp_epsilon)
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, amp=amp, seed=seed, device=device,
                         dp=dp_config, snapshot_epochs=_parse_epochs(snapshot_epochs, epochs))
    paths = train_target_encoder(split, recipe, config, out, resume=resume)
    if dataset.labels is not None:
        target = load_encoder(str(paths["weights"]), device=device)
        util = encoder_utility(target, split.nonmembers, seed)
        meta = json.loads(paths["model"].read_text())
        write_json(paths["model"], {**meta, "utility": util})
        typer.echo(f"utility: k-NN {util['knn_accuracy']:.3f}, linear probe "
                   f"{util['linear_probe_accuracy']:.3f} (chance {util['chance']:.3f})")
    meta = json.loads(paths["model"].read_text())
    if meta.get("dp"):
        from leakprobe.training import dp_record

        dp_rec = meta["dp"]  # epsilon: a guarantee, else none (nominal ...) and the caveat
        typer.echo(f"DP-SGD: epsilon {dp_record.epsilon_text(dp_rec, detail=False)} at delta "
                   f"{dp_rec['delta']:g} (noise multiplier {dp_rec['noise_multiplier']:.3g}, "
                   f"clip {dp_rec['max_grad_norm']:g}, {dp_rec['steps']} steps, Poisson "
                   f"sample rate {dp_rec['sample_rate']:.3g})")
        fields = dp_record.dp_epsilon(dp_rec)
        if fields["caveat"] and fields["epsilon_nominal"] is not None:
            typer.echo(f"DP-SGD: not a guarantee: {fields['caveat']}")
    for name, path in paths.items():
        if name == "snapshots":
            for epoch, folder in path.items():
                typer.echo(f"snapshot epoch {epoch}: {folder}")
        else:
            typer.echo(f"{name}: {path}")


def _preflight(device: str | None = None, out: Path | None = None) -> None:
    """The checks every command runs first: the device, then the output folder (not created)."""
    from leakprobe.device import resolve_device
    from leakprobe.preflight import check_out_dir

    if device is not None:
        resolve_device(device)
    check_out_dir(out)


def _print_summary(report: dict, out: Path | None) -> None:
    from leakprobe.workflows.audit import summary_rows

    rows = summary_rows(report)
    width = max([len("attack")] + [len(str(r[0])) for r in rows])  # fits the longest name
    typer.echo(f"{'attack':{width}s} {'AUC':>6s} {'95% CI':>15s} {'p':>8s} {'TPR@1%':>7s} "
               f"{'bal.acc':>7s}")
    for (name, auc, ci, tpr, bal), result in zip(rows, report["results"], strict=True):
        interval = f"[{ci[0]:.3f}, {ci[1]:.3f}]"
        tpr_text = "n/a" if tpr is None else f"{tpr:.3f}"  # n/a: < 1,000 non-members
        p = result["metrics"].get("p_value")  # None: a fitted scorer, no permutations
        p_text = "n/a" if p is None else f"{p:.2g}"
        typer.echo(f"{name!s:{width}s} {auc:6.3f} {interval:>15s} {p_text:>8s} "
                   f"{tpr_text:>7s} {bal:7.3f}")
    for w in report.get("warnings", []):
        typer.echo(f"warning: {w}", err=True)
    if out is not None:
        typer.echo(f"report: {out / 'report.html'}")


def _recorded_utility(model: str) -> dict | None:
    """The utility ``leakprobe train`` recorded in model.json next to the model, if any."""
    path = Path(model)
    meta = (path if path.is_dir() else path.parent) / "model.json"
    if not path.exists() or not meta.is_file():
        return None
    try:
        recorded = json.loads(meta.read_text()).get("utility")
    except (json.JSONDecodeError, OSError, AttributeError):
        return None
    return {**recorded, "source": str(meta)} if isinstance(recorded, dict) else None


@audit_app.command("encoder")
def audit_encoder_cmd(
    model: str = typer.Option(..., help="TorchScript file, .safetensors (+ --arch), "
                              "package.module:factory, file.py:factory, or a train folder."),
    members: str = typer.Option(..., help="Image folder, split manifest JSON or data spec."),
    nonmembers: str = typer.Option(..., help="Image folder, split manifest JSON or data spec."),
    attacks: str = typer.Option("all", help="Comma list; aliases: encodermi, lpla, baseline, "
                                "partcrop-variants, all (= partcrop, encodermi, lpla, baseline; "
                                "partcrop-pooled stands in for partcrop when the model "
                                "exposes no tokens)."),
    out: Path = typer.Option(..., help="Report folder."),
    arch: str = typer.Option(None, help="Architecture of a .safetensors file."),
    image_size: int = typer.Option(None, help="Input side (default: the model's, else 32)."),
    knowledge: str = typer.Option("known-subset", help="known-subset or shadow."),
    folds: int = typer.Option(2, help="Cross-fitting folds (known-subset)."),
    repeats: int = typer.Option(1, help="Cross-fittings averaged per sample (the permutations "
                                 "redo all of them)."),
    permutations: int | None = PERMUTATIONS_OPTION,
    shadow_data: str = typer.Option(None, help="Attacker's own data for a shadow encoder."),
    shadow_arch: str = typer.Option("resnet-tiny"),
    shadow_method: str = typer.Option("simclr"),
    shadow_epochs: int = typer.Option(50),
    num_parts: int = typer.Option(None, help="PartCrop parts per image (default 128)."),
    n_views: int = typer.Option(None, help="EncoderMI views per image (default 10)."),
    views: str = typer.Option(None, help="View recipe of EncoderMI, LpLA and "
                              "baseline-consistency: simclr (default, black box), byol, dino, "
                              "mae, mild, with overrides 'byol,crop-scale=0.2:1,flip=0' or a "
                              "JSON object. Give the target's training recipe if you know it."),
    utility_data: str = typer.Option(None, help="Labelled data for k-NN/linear-probe utility."),
    batch_size: int = typer.Option(256, help="Images per query batch."),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto"),
    threads: str = THREADS_OPTION,
    amp: str = AMP_OPTION,
):
    """Audit an encoder with membership attacks; write report.json, report.html and plots."""
    _machine(threads, amp)
    from leakprobe.data.loaders import load_dataset
    from leakprobe.data.splits import check_shadow_disjoint, load_images
    from leakprobe.evaluation.audit import check_audit_plan
    from leakprobe.targets.loading import load_encoder
    from leakprobe.training.encoder import EncoderRecipe
    from leakprobe.training.trainer import TrainConfig
    from leakprobe.views import parse_views
    from leakprobe.workflows.audit import (
        audit_encoder,
        build_attacks,
        encoder_utility,
        train_shadow,
    )

    _preflight(device, out)
    if views is not None:
        parse_views(views)  # a bad recipe fails before any loading or shadow training
    attack_objs = build_attacks(attacks, seed, num_parts=num_parts, n_views=n_views,
                                views=views)
    if knowledge == "shadow" and not shadow_data:
        raise LeakprobeError("--knowledge shadow needs --shadow-data")
    config = TrainConfig(epochs=shadow_epochs, batch_size=batch_size, seed=seed,
                         device=device, amp=amp)
    target = load_encoder(model, arch, image_size, device, batch_size)
    attack_objs = build_attacks(attacks, seed, target=target, num_parts=num_parts,
                                n_views=n_views, views=views)  # partcrop needs tokens
    size = target.input_size
    mem = load_images(members, size, side="members")
    non = load_images(nonmembers, size, side="nonmembers")
    labelled = load_dataset(utility_data, size, seed) if utility_data else None
    if labelled is not None and labelled.labels is None:
        raise LeakprobeError(f"--utility-data {utility_data}: needs labelled images "
                             "(class-per-folder or a labelled data spec)")
    shadow_images = load_images(shadow_data, size) if knowledge == "shadow" else None
    # everything that can fail, before the shadow trains and the target is queried
    check_audit_plan(attack_objs, target, mem, non, knowledge, folds, repeats,
                     extra_queries=len(labelled) if labelled is not None else 0,
                     extra_what="utility")
    shadow = None
    if shadow_images is not None:
        check_shadow_disjoint(shadow_images, mem, non)
        shadow = train_shadow(shadow_images, EncoderRecipe(shadow_method, shadow_arch), config,
                              seed)
    utility = _recorded_utility(model)
    if labelled is not None:
        utility = encoder_utility(target, labelled, seed)
    context: dict = {"model": model}
    if shadow is not None:
        context["precision"] = {"queries": "fp32",
                                "shadow_training": config.extra.get("precision")}
        context["shadow"] = {"data": shadow_images.source, "method": shadow_method,
                             "arch": shadow_arch, "epochs": shadow_epochs,
                             "members": len(shadow[1]), "nonmembers": len(shadow[2]),
                             "split_seed": seed}
    report = audit_encoder(target, mem, non, attack_objs, knowledge, folds, seed, out, shadow,
                           context=context, utility=utility, repeats=repeats,
                           permutations=permutations)
    _print_summary(report, out)


@train_app.command("image2image")
def train_image2image_cmd(
    task: str = typer.Option(..., help="colorize, denoise, edges2image or segment."),
    data: str = typer.Option("synthetic:400", help="synthetic:N (has masks) or a folder."),
    members: int = typer.Option(100, help="Images in the member (training) split."),
    nonmembers: int = typer.Option(None, help="Non-member images kept (default: the rest)."),
    arch: str = typer.Option("unet-small"),
    epochs: int = typer.Option(50),
    batch_size: int = typer.Option(32),
    lr: float = typer.Option(1e-3),
    image_size: int = typer.Option(32),
    num_classes: int = typer.Option(None, help="Segmentation classes (default: from masks)."),
    amp: str = AMP_OPTION,
    resume: bool = typer.Option(False),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto"),
    threads: str = THREADS_OPTION,
    out: Path = typer.Option(..., help="Output folder."),
):
    """Train an image-to-image U-Net on a member split; export it with its paired folders."""
    _machine(threads, amp)
    from leakprobe.data.loaders import load_dataset
    from leakprobe.data.splits import make_split
    from leakprobe.training.image2image import train_target_image2image
    from leakprobe.training.trainer import TrainConfig

    _preflight(device, out)
    dataset = load_dataset(data, image_size, seed)
    split = make_split(dataset, members, nonmembers, seed=seed)
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, amp=amp, seed=seed,
                         device=device)
    paths = train_target_image2image(split, task, arch, config, out, num_classes, resume)
    for name, path in paths.items():
        typer.echo(f"{name}: {path}")


@audit_app.command("image2image")
def audit_image2image_cmd(
    model: str = typer.Option(..., help="TorchScript file, .safetensors (+ --arch), "
                              "module:factory, or a train folder."),
    members: Path = typer.Option(..., help="Folder with inputs/ and targets/."),
    nonmembers: Path = typer.Option(..., help="Folder with inputs/ and targets/."),
    out: Path = typer.Option(..., help="Report folder."),
    attacks: str = typer.Option("reconstruction,predictability,membership-error",
                                show_default=False,  # a long default typer cuts: in the help
                                help="Comma list; default: reconstruction, predictability, "
                                "membership-error (= all). Also membership-error-weighted."),
    num_classes: int = typer.Option(None, help="Targets are label maps with N classes."),
    features: str = typer.Option("builtin", help="Pixel features: builtin or a backbone "
                                 "name such as wide-resnet50-2 (needs --features-weights)."),
    features_weights: str = typer.Option(None, help="safetensors weights of --features."),
    seg_error: str = typer.Option("l1", help="Segmentation reconstruction error: l1, ce, iou."),
    arch: str = typer.Option(None),
    image_size: int = typer.Option(None),
    folds: int = typer.Option(2),
    repeats: int = typer.Option(1, help="Cross-fittings averaged per sample."),
    permutations: int | None = PERMUTATIONS_OPTION,
    batch_size: int = typer.Option(32),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto"),
    threads: str = THREADS_OPTION,
):
    """Audit an image-to-image model: reconstruction, predictability and membership error."""
    _machine(threads)
    from leakprobe.data.paired import load_paired_folder
    from leakprobe.targets.loading import load_translator
    from leakprobe.workflows.audit import audit_image2image, build_image2image_attacks

    _preflight(device, out)
    build_image2image_attacks(attacks, seed, seg_error=seg_error)  # names fail before loading
    target = load_translator(model, arch, image_size, device, batch_size)
    mem = load_paired_folder(members, target.input_size, num_classes)
    non = load_paired_folder(nonmembers, target.input_size, num_classes)
    report = audit_image2image(target, mem, non, attacks, "known-subset", folds, seed, out,
                               {"model": model}, repeats, pixel_features=features,
                               features_weights=features_weights, num_classes=num_classes,
                               seg_error=seg_error, permutations=permutations)
    _print_summary(report, out)


def _captioned_data(spec: str, image_size: int, seed: int, images: str | None = None):
    """``synthetic:N[:SEED]`` or a COCO caption JSON (``FILE.json`` or ``FILE.json:IMAGES``)."""
    from leakprobe.data.captions import load_coco_captions, make_synthetic_captioned

    if spec.startswith("synthetic:"):
        parts = spec.split(":")
        try:
            n = int(parts[1])
            data_seed = int(parts[2]) if len(parts) > 2 else seed
        except (IndexError, ValueError) as e:
            raise LeakprobeError(f"captioned data spec must be synthetic:N[:SEED], got "
                                 f"{spec!r}") from e
        return make_synthetic_captioned(n, image_size, data_seed)
    path, _, folder = spec.partition(".json:")
    json_path = path + ".json" if folder else spec
    return load_coco_captions(json_path, folder or images, image_size)


@train_app.command("captioner")
def train_captioner_cmd(
    data: str = typer.Option("synthetic:400", help="synthetic:N[:SEED] or COCO.json[:IMAGES]"),
    members: int = typer.Option(100, help="Images in the member (training) split."),
    nonmembers: int = typer.Option(None, help="Non-member images kept (default: the rest)."),
    arch: str = typer.Option("cnn-lstm"),
    epochs: int = typer.Option(100),
    batch_size: int = typer.Option(32),
    lr: float = typer.Option(2e-3),
    image_size: int = typer.Option(32),
    amp: str = AMP_OPTION,
    resume: bool = typer.Option(False),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto"),
    threads: str = THREADS_OPTION,
    out: Path = typer.Option(..., help="Output folder."),
):
    """Train a CNN-LSTM captioner on a member split; export it with its tokenizer and split."""
    _machine(threads, amp)
    from leakprobe.data.splits import make_split
    from leakprobe.training.captioning import train_target_captioner
    from leakprobe.training.trainer import TrainConfig

    _preflight(device, out)
    if arch != "cnn-lstm":
        raise LeakprobeError(f"--arch: only cnn-lstm captioners can be trained, got {arch!r}")
    dataset = _captioned_data(data, image_size, seed)
    split = make_split(dataset, members, nonmembers, seed=seed)
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, amp=amp, seed=seed,
                         device=device)
    paths = train_target_captioner(split, config, out, resume=resume)
    for name, path in paths.items():
        typer.echo(f"{name}: {path}")


@audit_app.command("captioner")
def audit_captioner_cmd(
    model: str = typer.Option(..., help="Captioner folder, TorchScript file (tokenizer.json "
                              "beside it), FILE.py:factory, module:factory or URL."),
    members: str = typer.Option(..., help="COCO caption JSON of known members."),
    nonmembers: str = typer.Option(..., help="COCO caption JSON of known non-members."),
    shadow_data: str = typer.Option(..., help="Attacker's own captioned data (COCO JSON or "
                                    "synthetic:N:SEED)."),
    out: Path = typer.Option(..., help="Report folder."),
    images: str = typer.Option(None, help="Folder the JSON file_names resolve against "
                               "(default: each JSON file's folder)."),
    attacks: str = typer.Option("m4i-metric,m4i-feature"),
    classifier: str = typer.Option("svm", help="m4i-metric classifier: svm, logreg, mlp."),
    shadow_epochs: int = typer.Option(100, help="Shadow captioner epochs (match the target)."),
    extractor_epochs: int = typer.Option(20, help="m4i-feature extractor epochs."),
    budget: int = typer.Option(None, help="Most images sent to the target."),
    permutations: int | None = PERMUTATIONS_OPTION,
    image_size: int = typer.Option(None),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto"),
    threads: str = THREADS_OPTION,
    amp: str = AMP_OPTION,
):
    """Audit a captioner with M4I (metric- and feature-based) under the shadow setting."""
    _machine(threads, amp)
    from leakprobe.device import resolve_device
    from leakprobe.targets.captioner import load_captioner
    from leakprobe.workflows.audit import audit_captioner, build_caption_attacks

    _preflight(device, out)
    attack_objs = build_caption_attacks(attacks, seed, classifier=classifier,
                                        extractor_epochs=extractor_epochs,
                                        device=str(resolve_device(device)))
    target = load_captioner(model, device=device, budget=budget, image_size=image_size)
    size = image_size or target.input_size
    mem = _captioned_data(members, size, seed, images)
    non = _captioned_data(nonmembers, size, seed, images)
    shadow = _captioned_data(shadow_data, size, seed, images)
    # audit_captioner checks the sets, the shadow data and the budget before it trains
    report = audit_captioner(target, mem, non, shadow, attack_objs, seed, out, shadow_epochs,
                             context={"model": model}, amp=amp, permutations=permutations,
                             device=str(resolve_device(device)))
    _print_summary(report, out)


@serve_app.command("encoder")
def serve_encoder_cmd(
    model: str = typer.Option(..., help="Model file, .safetensors (+ --arch), entry point."),
    arch: str = typer.Option(None),
    image_size: int = typer.Option(None),
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(8080),
    max_queries: int = typer.Option(None, help="Total images the service will embed."),
    rate: float = typer.Option(None, help="Requests per second per client."),
    max_batch: int = typer.Option(256, help="Images per request."),
    max_body_mb: float = typer.Option(64.0, help="Request body limit in MiB."),
    max_image_side: int = typer.Option(512, help="Largest accepted image side."),
    noise: float = typer.Option(0.0, help="Gaussian noise std added to embeddings."),
    top_k: int = typer.Option(None, help="Return only the k largest coordinates."),
    round_decimals: int = typer.Option(None, help="Round embeddings to N decimals."),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto"),
    threads: str = THREADS_OPTION,
):
    """Serve an encoder at http://HOST:PORT (/v1/info, /v1/embed) until interrupted."""
    _machine(threads)
    from leakprobe.serving.server import EncoderService, ServeConfig, run_server
    from leakprobe.targets.loading import load_encoder

    _preflight(device)
    if model.startswith(("http://", "https://")):
        raise LeakprobeError("serve needs a local model, not a URL")
    encoder = load_encoder(model, arch, image_size, device)
    config = ServeConfig(max_batch=max_batch, max_body_bytes=int(max_body_mb * 2**20),
                         max_image_side=max_image_side, max_queries=max_queries, rate=rate,
                         noise=noise, top_k=top_k, round_decimals=round_decimals, seed=seed)
    typer.echo(f"serving {model} at http://{host}:{port} (input {encoder.input_size}, "
               f"embedding {encoder.embed_dim})", err=True)
    run_server(EncoderService(encoder, config), host, port)


@steal_app.command("encoder")
def steal_encoder_cmd(
    model: str = typer.Option(..., help="Target: model file, .safetensors, entry point or URL."),
    query_data: str = typer.Option(..., help="Attacker's images: folder or data spec."),
    out: Path = typer.Option(..., help="Output folder (surrogates, query cache, report)."),
    budget: str = typer.Option("5000", help="Queries allowed; a comma list sweeps budgets."),
    method: str = typer.Option("contsteal", help="contsteal, mse, cosine (comma list)."),
    surrogate_arch: str = typer.Option("resnet-tiny"),
    surrogate_kwargs: str = typer.Option(None, help="Surrogate backbone overrides (JSON)."),
    epochs: int = typer.Option(50),
    batch_size: int = typer.Option(128),
    lr: float = typer.Option(1e-3),
    views: int = typer.Option(None, help="Views per image (default: 2 contsteal, 1 mse)."),
    probe_train: str = typer.Option(None, help="Labelled images to fit the linear probes."),
    probe_test: str = typer.Option(None, help="Labelled images to judge the probes."),
    arch: str = typer.Option(None),
    image_size: int = typer.Option(None),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto"),
    threads: str = THREADS_OPTION,
    amp: str = AMP_OPTION,
):
    """Train surrogate encoders from the target's embeddings within a query budget."""
    _machine(threads, amp)
    from leakprobe.attacks.stealing import create_stealing_method
    from leakprobe.data.splits import load_images
    from leakprobe.targets.loading import load_encoder
    from leakprobe.workflows.steal import parse_budgets, steal_encoder

    _preflight(device, out)
    parse_budgets(budget)
    for name in (m.strip() for m in method.split(",")):
        if name:
            create_stealing_method(name)  # a wrong name fails before the model is loaded
    target = load_encoder(model, arch, image_size, device)
    size = target.input_size
    queries = load_images(query_data, size)
    p_train = load_images(probe_train, size) if probe_train else None
    p_test = load_images(probe_test, size) if probe_test else None
    report = steal_encoder(target, queries, budget, method, surrogate_arch,
                           _parse_json(surrogate_kwargs, "--surrogate-kwargs"), epochs,
                           batch_size, lr, seed, device, out, p_train, p_test, views,
                           amp=amp)
    if report["target_probe_accuracy"] is not None:
        typer.echo(f"target linear-probe accuracy {report['target_probe_accuracy']:.3f}, "
                   f"random-init surrogate {report['random_init_probe_accuracy']:.3f}"
                   + (f" (its Procrustes cosine {report['random_init_procrustes_cosine']:.3f})"
                      if report.get("random_init_procrustes_cosine") is not None else "")
                   + ("" if report.get("probe_informative", True) else " (probe not informative)"))
    width = max([len("method")] + [len(str(r["method"])) for r in report["results"]])
    typer.echo(f"{'method':{width}s} {'budget':>7s} {'queries':>8s} {'probe acc':>9s} "
               f"{'agreement':>9s} {'procrustes':>10s}")
    for r in report["results"]:
        m = r["metrics"]
        typer.echo(f"{r['method']!s:{width}s} {r['budget']:7d} {r['queries_used']:8d} "
                   f"{m.get('surrogate_probe_accuracy', float('nan')):9.3f} "
                   f"{m.get('agreement', float('nan')):9.3f} "
                   f"{m.get('procrustes_cosine', float('nan')):10.3f}")
    for warning in report.get("warnings", []):
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(f"report: {out / 'report.html'}")


@serve_app.command("image2image")
def serve_image2image_cmd(
    model: str = typer.Option(..., help="Model file, .safetensors (+ --arch), entry point."),
    arch: str = typer.Option(None),
    image_size: int = typer.Option(None),
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(8080),
    max_queries: int = typer.Option(None),
    rate: float = typer.Option(None),
    max_batch: int = typer.Option(64),
    device: str = typer.Option("auto"),
    threads: str = THREADS_OPTION,
):
    """Serve an image-to-image model at http://HOST:PORT (/v1/info, /v1/translate)."""
    _machine(threads)
    from leakprobe.serving.server import ServeConfig, TranslatorService, run_server
    from leakprobe.targets.loading import load_translator

    _preflight(device)
    target = load_translator(model, arch, image_size, device)
    config = ServeConfig(max_batch=max_batch, max_queries=max_queries, rate=rate)
    typer.echo(f"serving {model} at http://{host}:{port}", err=True)
    run_server(TranslatorService(target, config), host, port)


@serve_app.command("captioner")
def serve_captioner_cmd(
    model: str = typer.Option(..., help="Captioner folder, TorchScript file (tokenizer.json "
                              "beside it), FILE.py:factory or module:factory."),
    image_size: int = typer.Option(None),
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(8080),
    max_queries: int = typer.Option(None, help="Total images the service will caption."),
    rate: float = typer.Option(None, help="Requests per second per client."),
    max_batch: int = typer.Option(64, help="Images per request."),
    max_body_mb: float = typer.Option(64.0, help="Request body limit in MiB."),
    max_image_side: int = typer.Option(512, help="Largest accepted image side."),
    device: str = typer.Option("auto"),
    threads: str = THREADS_OPTION,
):
    """Serve a captioner at http://HOST:PORT (/v1/info, /v1/caption) until interrupted."""
    _machine(threads)
    from leakprobe.serving.server import CaptionerService, ServeConfig, run_server
    from leakprobe.targets.captioner import load_captioner

    _preflight(device)
    if model.startswith(("http://", "https://")):
        raise LeakprobeError("serve needs a local model, not a URL")
    target = load_captioner(model, device=device, image_size=image_size)
    config = ServeConfig(max_batch=max_batch, max_body_bytes=int(max_body_mb * 2**20),
                         max_image_side=max_image_side, max_queries=max_queries, rate=rate)
    typer.echo(f"serving {model} at http://{host}:{port}", err=True)
    run_server(CaptionerService(target, config), host, port)


def _audit_reports(path: Path) -> list[Path]:
    """The audit reports behind ``path``: itself, or each setting's of a defence sweep."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return [path]  # render_reports gives the precise error
    if isinstance(data, dict) and data.get("kind") == "encoder-defence":
        return [path.parent / s["report"] for s in data.get("settings", []) if s.get("report")]
    return [path]


@app.command("report")
def report_cmd(
    runs: list[Path] = typer.Argument(..., help="report.json files or folders holding one."),
    out: Path = typer.Option(..., help="Folder for the combined report.html."),
):
    """Render one HTML page from one or more report.json files."""
    from leakprobe.report.html import render_reports

    _preflight(out=out)
    paths = [q for p in runs for q in _audit_reports(p / "report.json" if p.is_dir() else p)]
    written = render_reports(paths, out)
    typer.echo(f"report: {written['html']}")


@app.command("models")
def models_cmd():
    """List the registered architectures and SSL methods."""
    from leakprobe.models import list_models
    from leakprobe.training.ssl.base import list_methods

    typer.echo("architectures: " + ", ".join(list_models()))
    typer.echo("ssl methods: " + ", ".join(list_methods()))


@app.command("study")
def study_cmd(
    config: Path = typer.Option(..., help="Study YAML (paradigms x defences x seeds)."),
    out: Path = typer.Option(None, help="Study folder (default: the config's 'out')."),
    workers: int = typer.Option(None, help="Run cells as Ray tasks on a local cluster with "
                                "N CPUs."),
    address: str = typer.Option(None, help="Run cells on the Ray cluster at ADDR."),
    device: str = typer.Option(None, help="auto, cpu, cuda, cuda:N (default: the config's)."),
    threads: str = THREADS_OPTION,
    dry_run: bool = typer.Option(False, "--dry-run", help="List the cells and which are "
                                 "cached; run nothing."),
):
    """Run a privacy-utility study grid (cached, resumable) and write its HTML report."""
    _machine(threads)
    from leakprobe.study import load_study_config, plan, run_study
    from leakprobe.study.report import print_table

    study = load_study_config(config)
    folder = out if out is not None else study.out
    local = workers is None and address is None  # Ray workers judge their own devices
    _preflight(device if local else None, None if dry_run else folder)
    if dry_run:
        rows = plan(study, folder)
        for r in rows:
            typer.echo(f"{'cached' if r['cached'] else 'todo  '}  {r['name']:32s} "
                       f"cells/{r['folder']}  (train/{r['train_run']})")
        typer.echo(f"{len(rows)} cells, {sum(r['cached'] for r in rows)} cached")
        return
    summary = run_study(study, folder, workers=workers, address=address, device=device)
    print_table(summary, typer.echo)
    typer.echo(f"report: {Path(folder or study.out) / 'report.html'}")


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("runs/demo"), help="Output folder."),
    members: int = typer.Option(128, help="Member images of the demo target."),
    epochs: int = typer.Option(500, help="Training epochs of the demo target."),
    families: bool = typer.Option(True, help="Also audit a U-Net and a captioner."),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto"),
    threads: str = THREADS_OPTION,
    amp: str = AMP_OPTION,
):
    """Train small targets on built-in data (encoder, U-Net, captioner), audit, report."""
    _machine(threads, amp)
    from leakprobe.workflows.demo import run_demo

    _preflight(device, out)
    report = run_demo(out, members=members, epochs=epochs, seed=seed, device=device,
                      families=families, amp=amp)
    _print_summary(report, None)
    for family in ("image2image", "captioner") if families else ():
        typer.echo(f"\n{family}:")
        _print_summary(json.loads((out / family / "report.json").read_text()), None)
    typer.echo(f"report: {out / 'report.html'}")


def _parse_values(text: str | None, defence: str) -> list[float | None]:
    from leakprobe.defenses import DEFAULT_LOWER_BOUNDS

    if not text:
        if defence == "scsr":
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


@defend_app.command("encoder")
def defend_encoder_cmd(
    defence: str = typer.Option(..., help="early-stopping (values: epochs), dp (noise "
                                "multipliers; 'none' adds a run without DP), dp-epsilon "
                                "(target epsilons) or scsr (crop-scale lower bounds)."),
    values: str = typer.Option(None, help="Comma list of strengths (scsr default: "
                               "0.08,0.3,0.5)."),
    data: str = typer.Option("synthetic:400", help="Data spec or image folder (labelled for "
                             "utility)."),
    members: int = typer.Option(200, help="Images in the member (training) split."),
    nonmembers: int = typer.Option(None, help="Non-member images kept (default: the rest)."),
    method: str = typer.Option("simclr", help="SSL method."),
    arch: str = typer.Option("resnet-tiny", help="Backbone (see `leakprobe models`)."),
    arch_kwargs: str = typer.Option(None, help="Backbone overrides as JSON."),
    method_kwargs: str = typer.Option(None, help="SSL method overrides as JSON."),
    temperature: float = typer.Option(None, help="Contrastive temperature (SimCLR, MoCo)."),
    proj_dim: int = typer.Option(None, help="Projection head output (SimCLR; 0: no head)."),
    epochs: int = typer.Option(40, help="Training epochs (early stopping: max of --values)."),
    batch_size: int = typer.Option(64),
    lr: float = typer.Option(1e-3),
    weight_decay: float = typer.Option(1e-5),
    crop_scale: str = typer.Option("0.08,1.0", help="Undefended crop-scale range (SCSR "
                                   "replaces its lower bound)."),
    dp_clip: float = typer.Option(1.0, help="DP-SGD per-image clipping bound."),
    dp_delta: float = typer.Option(1e-5, help="Delta at which epsilon is reported."),
    attacks: str = typer.Option("partcrop,encodermi", help="Comma list of attacks."),
    utility_data: str = typer.Option(None, help="Labelled data for k-NN/linear-probe utility "
                                     "(default: the non-member split)."),
    folds: int = typer.Option(2, help="Cross-fitting folds."),
    repeats: int = typer.Option(1, help="Cross-fittings averaged per sample."),
    permutations: int | None = PERMUTATIONS_OPTION,
    num_parts: int = typer.Option(None, help="PartCrop parts per image (default 128)."),
    n_views: int = typer.Option(None, help="EncoderMI views per image (default 10)."),
    views: str = typer.Option(None, help="View recipe of EncoderMI, LpLA and "
                              "baseline-consistency: simclr (default, black box), byol, dino, "
                              "mae, mild, with overrides 'byol,crop-scale=0.2:1,flip=0' or a "
                              "JSON object. Give the target's training recipe if you know it."),
    image_size: int = typer.Option(32),
    amp: str = AMP_OPTION,
    seed: int = typer.Option(0),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N"),
    threads: str = THREADS_OPTION,
    out: Path = typer.Option(..., help="Output folder."),
):
    """Train targets at several strengths of one defence, audit each, report the trade-off."""
    _machine(threads, amp)
    from leakprobe.data.loaders import load_dataset
    from leakprobe.data.splits import make_split
    from leakprobe.report.defence import defence_rows
    from leakprobe.training.encoder import EncoderRecipe
    from leakprobe.training.trainer import TrainConfig
    from leakprobe.workflows.defend import defend_encoder

    _preflight(device, out)
    vals = _parse_values(values, defence)
    if defence == "early-stopping":
        epochs = int(max(v for v in vals if v is not None))
    dataset = load_dataset(data, image_size, seed)
    split = make_split(dataset, members, nonmembers, seed=seed)
    overrides = _parse_json(method_kwargs, "--method-kwargs")
    for key, value in (("temperature", temperature), ("proj_dim", proj_dim)):
        if value is not None:
            overrides.setdefault(key, value)
    recipe = EncoderRecipe(method, arch, _parse_json(arch_kwargs, "--arch-kwargs"),
                           _parse_scale(crop_scale), overrides)
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, amp=amp, seed=seed, device=device)
    labelled = load_dataset(utility_data, image_size, seed) if utility_data else None
    report = defend_encoder(split, defence, vals, recipe, config, out, attacks, labelled,
                            folds=folds, repeats=repeats, permutations=permutations,
                            max_grad_norm=dp_clip,
                            delta=dp_delta, num_parts=num_parts, n_views=n_views,
                            views=views)
    names, rows = defence_rows(report)
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
    typer.echo(f"report: {out / 'report.html'}")


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
        before = _state.pop("threads_before", None)
        if before is not None:
            import torch

            torch.set_num_threads(before)

