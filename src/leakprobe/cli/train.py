"""``leakprobe train encoder|image2image|captioner|image-text``: train a target on a member
split."""

from __future__ import annotations

from typing import Annotated

import typer

from leakprobe.cli.options import (
    CAPTION_FORMS,
    DP_PANEL,
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
    Epochs,
    ImageSize,
    LearningRate,
    MemberCount,
    MethodKwargs,
    NonmemberCount,
    Out,
    ProjDim,
    Resume,
    Seed,
    SSLMethod,
    Temperature,
    Threads,
    WeightDecay,
    data_option,
    method_overrides,
    parse_crop_scale,
    parse_json_object,
    use_threads,
)
from leakprobe.errors import LeakprobeError

app = typer.Typer(no_args_is_help=True, help="Train target models on a member split.")


def parse_snapshot_epochs(text: str | None, epochs: int) -> tuple[int, ...]:
    """``--snapshot-epochs 10,20,50`` -> (10, 20, 50), each in 1..``epochs``; () when not given."""
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


@app.command("encoder")
def train_encoder_cmd(
    *,
    data: Annotated[str, data_option(
        "--data", "The image pool the member split is drawn from, in one of these forms:")
    ] = "synthetic:2000",
    members: MemberCount = 1000,
    nonmembers: NonmemberCount = None,
    out: Out,
    method: SSLMethod = "simclr",
    arch: Backbone = "resnet18-cifar",
    arch_kwargs: ArchKwargs = None,
    crop_scale: CropScale = "0.08,1.0",
    temperature: Temperature = None,
    proj_dim: ProjDim = None,
    method_kwargs: MethodKwargs = None,
    epochs: Epochs = 50,
    batch_size: BatchSize = 256,
    lr: LearningRate = 1e-3,
    weight_decay: WeightDecay = 1e-5,
    image_size: ImageSize = 32,
    snapshot_epochs: Annotated[str | None, typer.Option(
        rich_help_panel=TRAINING_PANEL,
        help="Comma list of epochs whose encoder is saved too (early-stopping study), e.g. "
             "10,20,50.")] = None,
    resume: Resume = False,
    dp: Annotated[bool, typer.Option("--dp", rich_help_panel=DP_PANEL,
                                     help="Train with DP-SGD (BatchNorm -> GroupNorm).")
                  ] = False,
    dp_noise: Annotated[float | None, typer.Option(
        rich_help_panel=DP_PANEL, help="DP-SGD noise multiplier (default 1.0).")] = None,
    dp_clip: DPClip = 1.0,
    dp_delta: DPDelta = 1e-5,
    dp_epsilon: Annotated[float | None, typer.Option(
        rich_help_panel=DP_PANEL, help="Target epsilon (sets the noise multiplier).")] = None,
    amp: Amp = "auto",
    seed: Seed = 0,
    device: Device = "auto",
    threads: Threads = "auto",
) -> None:
    """Train an SSL encoder on a member split; write weights, TorchScript and split manifest."""
    use_threads(threads)
    from leakprobe.data.loaders import load_dataset
    from leakprobe.data.splits import make_split
    from leakprobe.training import dp_record
    from leakprobe.training.dp import DPConfig
    from leakprobe.training.encoder import EncoderRecipe
    from leakprobe.training.trainer import TrainConfig
    from leakprobe.workflows.train import train_encoder

    snapshots = parse_snapshot_epochs(snapshot_epochs, epochs)
    dataset = load_dataset(data, image_size, seed)
    split = make_split(dataset, members, nonmembers, seed=seed)
    recipe = EncoderRecipe(method, arch, parse_json_object(arch_kwargs, "--arch-kwargs"),
                           parse_crop_scale(crop_scale),
                           method_overrides(method_kwargs, temperature, proj_dim))
    dp_config = None
    if dp or dp_noise is not None or dp_epsilon is not None:
        noise = dp_noise if dp_noise is not None else (None if dp_epsilon else 1.0)
        dp_config = DPConfig(noise_multiplier=noise, max_grad_norm=dp_clip, delta=dp_delta,
                             target_epsilon=dp_epsilon)
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, amp=amp, seed=seed, device=device,
                         dp=dp_config, snapshot_epochs=snapshots)
    paths, meta = train_encoder(split, recipe, config, out, resume=resume)
    util = meta.get("utility")
    if util is not None:
        typer.echo(f"utility: k-NN {util['knn_accuracy']:.3f}, linear probe "
                   f"{util['linear_probe_accuracy']:.3f} (chance {util['chance']:.3f})")
    if meta.get("dp"):
        dp_rec = meta["dp"]  # epsilon: a guarantee, else none (nominal ...) and the caveat
        typer.echo(f"DP-SGD: epsilon {dp_record.epsilon_text(dp_rec, detail=False)} at delta "
                   f"{dp_rec['delta']:g} (noise multiplier {dp_rec['noise_multiplier']:.3g}, "
                   f"clip {dp_rec['max_grad_norm']:g}, {dp_rec['steps']} steps, Poisson "
                   f"sample rate {dp_rec['sample_rate']:.3g})")
        fields = dp_record.dp_epsilon(dp_rec) or {}
        if fields.get("caveat") and fields.get("epsilon_nominal") is not None:
            typer.echo(f"DP-SGD: not a guarantee: {fields['caveat']}")
    for name, path in paths.items():
        if name == "snapshots":
            for epoch, folder in path.items():
                typer.echo(f"snapshot epoch {epoch}: {folder}")
        else:
            typer.echo(f"{name}: {path}")


@app.command("image2image")
def train_image2image_cmd(
    *,
    task: Annotated[str, typer.Option(rich_help_panel=INPUTS_PANEL,
                                      help="colorize, denoise, edges2image or segment.")],
    data: Annotated[str, data_option(
        "--data", "The image pool the member split is drawn from (segment: synthetic only, "
        "it has masks), in one of these forms:")] = "synthetic:400",
    members: MemberCount = 100,
    nonmembers: NonmemberCount = None,
    out: Out,
    arch: Annotated[str, typer.Option(rich_help_panel=TRAINING_PANEL,
                                      help="U-Net (`leakprobe models`).")] = "unet-small",
    num_classes: Annotated[int | None, typer.Option(
        rich_help_panel=TRAINING_PANEL,
        help="Segmentation classes (default: from masks).")] = None,
    epochs: Epochs = 50,
    batch_size: BatchSize = 32,
    lr: LearningRate = 1e-3,
    image_size: ImageSize = 32,
    resume: Resume = False,
    amp: Amp = "auto",
    seed: Seed = 0,
    device: Device = "auto",
    threads: Threads = "auto",
) -> None:
    """Train an image-to-image U-Net on a member split; export it with its paired folders."""
    use_threads(threads)
    from leakprobe.data.loaders import load_dataset
    from leakprobe.data.splits import make_split
    from leakprobe.training.image2image import train_target_image2image
    from leakprobe.training.trainer import TrainConfig

    dataset = load_dataset(data, image_size, seed)
    split = make_split(dataset, members, nonmembers, seed=seed)
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, amp=amp, seed=seed,
                         device=device)
    paths = train_target_image2image(split, task, arch, config, out, num_classes, resume)
    for name, path in paths.items():
        typer.echo(f"{name}: {path}")


@app.command("captioner")
def train_captioner_cmd(
    *,
    data: Annotated[str, data_option(
        "--data", "Captioned images the member split is drawn from, in one of these forms:",
        CAPTION_FORMS)] = "synthetic:400",
    members: MemberCount = 100,
    nonmembers: NonmemberCount = None,
    out: Out,
    arch: Annotated[str, typer.Option(rich_help_panel=TRAINING_PANEL,
                                      help="Captioner (only cnn-lstm trains).")] = "cnn-lstm",
    epochs: Epochs = 100,
    batch_size: BatchSize = 32,
    lr: LearningRate = 2e-3,
    image_size: ImageSize = 32,
    resume: Resume = False,
    amp: Amp = "auto",
    seed: Seed = 0,
    device: Device = "auto",
    threads: Threads = "auto",
) -> None:
    """Train a CNN-LSTM captioner on a member split; export it with its tokenizer and split."""
    use_threads(threads)
    from leakprobe.data.captions import load_captioned_dataset
    from leakprobe.data.splits import make_split
    from leakprobe.training.captioning import train_target_captioner
    from leakprobe.training.trainer import TrainConfig

    if arch != "cnn-lstm":
        raise LeakprobeError(f"--arch: only cnn-lstm captioners can be trained, got {arch!r}")
    dataset = load_captioned_dataset(data, image_size, seed)
    split = make_split(dataset, members, nonmembers, seed=seed)
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, amp=amp, seed=seed,
                         device=device)
    paths = train_target_captioner(split, config, out, resume=resume)
    for name, path in paths.items():
        typer.echo(f"{name}: {path}")


@app.command("image-text")
def train_image_text_cmd(
    *,
    data: Annotated[str, data_option(
        "--data", "Captioned images the member split is drawn from, in one of these forms:",
        CAPTION_FORMS)] = "synthetic:400",
    members: MemberCount = 100,
    nonmembers: NonmemberCount = None,
    out: Out,
    arch: Annotated[str, typer.Option(
        rich_help_panel=TRAINING_PANEL,
        help="Image tower backbone (`leakprobe models`).")] = "resnet-tiny",
    arch_kwargs: ArchKwargs = None,
    embed_dim: Annotated[int, typer.Option(
        rich_help_panel=TRAINING_PANEL, min=1,
        help="Size of the joint image-text embedding.")] = 64,
    epochs: Epochs = 100,
    batch_size: BatchSize = 64,
    lr: LearningRate = 2e-3,
    image_size: ImageSize = 32,
    resume: Resume = False,
    amp: Amp = "auto",
    seed: Seed = 0,
    device: Device = "auto",
    threads: Threads = "auto",
) -> None:
    """Train a CLIP-style image-text model (image tower + text transformer, symmetric
    InfoNCE) on a member split; export it with its tokenizer and both sides as COCO JSON."""
    use_threads(threads)
    from leakprobe.data.captions import load_captioned_dataset
    from leakprobe.data.splits import make_split
    from leakprobe.training.image_text import train_target_image_text

    dataset = load_captioned_dataset(data, image_size, seed)
    split = make_split(dataset, members, nonmembers, seed=seed)
    paths = train_target_image_text(
        split.members, out_dir=out, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
        device=device, arch=arch, embed_dim=embed_dim,
        arch_kwargs=parse_json_object(arch_kwargs, "--arch-kwargs"), amp=amp,
        nonmembers=split.nonmembers, resume=resume)
    for name, path in paths.items():
        typer.echo(f"{name}: {path}")
