"""Option types shared by the ``leakprobe`` commands, each declared and checked in one place.

Each type is a ``typing.Annotated`` alias; a command gives the default in its signature
(``seed: Seed = 0``). The checks run as click callbacks while the command line is parsed,
so a bad ``--device``, ``--out``, ``--amp``, ``--query-precision``, ``--threads``,
``--batch-size``, ``--crop-scale`` or JSON option
is a one-line error (``error: ...``, exit status 2) before any model or data is loaded.
Callbacks import what they need when they run; ``--help`` runs none of them, so help stays
free of torch.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from leakprobe.errors import LeakprobeError

# --------------------------------------------------------------------------------------------
# parsers (used by the callbacks below and by the commands that need the parsed value)


def parse_crop_scale(text: str) -> tuple[float, float]:
    """``--crop-scale LOW,HIGH`` -> (LOW, HIGH) with 0 < LOW <= HIGH <= 1."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError as e:
        raise LeakprobeError(f"--crop-scale must be 'LOW,HIGH', got {text!r}") from e
    if not 0 < lo <= hi <= 1:
        raise LeakprobeError(f"--crop-scale must satisfy 0 < LOW <= HIGH <= 1, got {text!r}")
    return lo, hi


def parse_json_object(text: str | None, option: str) -> dict:
    """A JSON-object option (``--arch-kwargs`` ...) as a dict; empty when not given."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise LeakprobeError(f"{option} must be a JSON object, got {text!r}") from e
    if not isinstance(value, dict):
        raise LeakprobeError(f"{option} must be a JSON object, got {text!r}")
    return value


def method_overrides(method_kwargs: str | None, temperature: float | None,
                     proj_dim: int | None) -> dict:
    """``--method-kwargs`` with ``--temperature`` / ``--proj-dim`` where it does not set them."""
    overrides = parse_json_object(method_kwargs, "--method-kwargs")
    for key, value in (("temperature", temperature), ("proj_dim", proj_dim)):
        if value is not None:
            overrides.setdefault(key, value)
    return overrides


# --------------------------------------------------------------------------------------------
# callbacks: check the value, return it unchanged


def _device(value: str) -> str:
    from leakprobe.device import resolve_device

    resolve_device(value)  # the name, then whether this machine has that device
    return value


def _device_name(value: str | None) -> str | None:
    if value is not None:
        from leakprobe.device import check_device_name

        check_device_name(value)
    return value


def _out_dir(value: Path | None) -> Path | None:
    from leakprobe.preflight import check_out_dir

    check_out_dir(value)  # nothing is created
    return value


def _amp(value: str) -> str:
    from leakprobe.precision import check_amp

    check_amp(value)
    return value


def _query_precision(value: str) -> str:
    from leakprobe.precision import check_query_precision

    return check_query_precision(value)


def parse_query_batch_size(value: Any) -> int | str:
    """``--batch-size auto|N`` -> ``"auto"`` or N >= 1 (the parser of :data:`QueryBatchSize`)."""
    from leakprobe.targets.batching import check_batch_size  # torch-free module import

    return check_batch_size(value, "--batch-size")


def _threads(value: str) -> str:
    from leakprobe.threads import parse_threads

    if value != "auto":  # auto is measured when the command sets the threads
        parse_threads(value)
    return value


def _crop_scale(value: str) -> str:
    parse_crop_scale(value)
    return value


def _views(value: str | None) -> str | None:
    if value is not None:
        from leakprobe.views import parse_views

        parse_views(value)  # a bad recipe fails before any loading or training
    return value


def json_object_callback(option: str) -> Callable[[str | None], str | None]:
    """A callback that checks a JSON-object option named ``option``."""

    def check(value: str | None) -> str | None:
        parse_json_object(value, option)
        return value

    return check


# --------------------------------------------------------------------------------------------
# the machine: device, threads, precision (recorded in every report)

Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N (auto: "
                                     "CUDA when present).", callback=_device)]
# a study's device is only named here: its Ray workers judge what they have
StudyDevice = Annotated[str | None, typer.Option(
    "--device", help="auto, cpu, cuda, cuda:N (default: the config's).",
    callback=_device_name)]
Threads = Annotated[str, typer.Option(
    "--threads", metavar="auto|N", envvar="LEAKPROBE_THREADS", callback=_threads,
    help="CPU threads for training and queries (auto = free cores); scorer fits always use "
         "one.")]
Amp = Annotated[str, typer.Option(
    "--amp", metavar="auto|on|off", callback=_amp,
    help="bf16 autocast while training: auto = where the device runs bf16 natively "
         "(queries to a target: --query-precision).")]
QueryPrecision = Annotated[str, typer.Option(
    "--query-precision", metavar="auto|fp32|bf16", callback=_query_precision,
    help="Precision of the queries to a local target: auto = bf16 autocast where the device "
         "runs bf16 natively, else fp32; answers are float32 either way. Recorded in the "
         "report.")]


def use_threads(threads: str) -> None:
    """Set torch's CPU threads from ``--threads`` (``main`` restores them when it ends)."""
    import torch

    from leakprobe.threads import set_threads

    if not _threads_before:
        _threads_before.append(torch.get_num_threads())
    set_threads(threads)


def restore_threads() -> None:
    """Give an in-process caller (tests, notebooks) its thread setting back."""
    if _threads_before:
        import torch

        torch.set_num_threads(_threads_before.pop())


_threads_before: list[int] = []  # torch's threads before the first use_threads

# --------------------------------------------------------------------------------------------
# output, randomness, sizes



def out_option(help: str) -> Any:
    """``--out FOLDER``, checked writable (nothing is created), with this help text."""
    return typer.Option("--out", help=help, callback=_out_dir)


Out = Annotated[Path, out_option("Output folder.")]
ReportOut = Annotated[Path, out_option("Report folder.")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed.")]
ImageSize = Annotated[int, typer.Option("--image-size", help="Side of the square images.")]
InputSize = Annotated[int | None, typer.Option(
    "--image-size", help="Input side (default: the model's, else 32).")]
ModelArch = Annotated[str | None, typer.Option(
    "--arch", help="Architecture of a .safetensors file.")]
CheckpointKey = Annotated[str | None, typer.Option(
    "--checkpoint-key", help="Section of a published checkpoint to load with --arch (DINO: "
    "teacher, the default, or student).")]

# --------------------------------------------------------------------------------------------
# training

MemberCount = Annotated[int, typer.Option(
    "--members", help="Images in the member (training) split.")]
NonmemberCount = Annotated[int | None, typer.Option(
    "--nonmembers", help="Non-member images kept (default: the rest).")]
Epochs = Annotated[int, typer.Option("--epochs", help="Training epochs.")]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Images per training batch.")]
LearningRate = Annotated[float, typer.Option("--lr", help="Peak learning rate.")]
WeightDecay = Annotated[float, typer.Option("--weight-decay", help="Weight decay (AdamW).")]
Resume = Annotated[bool, typer.Option("--resume/--no-resume",
                                      help="Continue from out/checkpoints.")]
SSLMethod = Annotated[str, typer.Option("--method", help="SSL method.")]
Backbone = Annotated[str, typer.Option("--arch", help="Backbone (see `leakprobe models`).")]
ArchKwargs = Annotated[str | None, typer.Option(
    "--arch-kwargs", callback=json_object_callback("--arch-kwargs"),
    help='Backbone overrides as JSON, e.g. \'{"width":32}\'')]
MethodKwargs = Annotated[str | None, typer.Option(
    "--method-kwargs", callback=json_object_callback("--method-kwargs"),
    help='SSL method overrides as JSON, e.g. \'{"queue_size": 1024}\'')]
Temperature = Annotated[float | None, typer.Option(
    "--temperature", help="Contrastive temperature (SimCLR, MoCo).")]
ProjDim = Annotated[int | None, typer.Option(
    "--proj-dim", help="Projection head output (SimCLR; 0: no head).")]
CropScale = Annotated[str, typer.Option(
    "--crop-scale", metavar="LOW,HIGH", callback=_crop_scale,
    help="Random-resized-crop area range (SCSR defence: raise the lower bound, e.g. "
         "0.5,1.0).")]
DPClip = Annotated[float, typer.Option("--dp-clip", help="DP-SGD per-image clipping bound.")]
DPDelta = Annotated[float, typer.Option("--dp-delta",
                                        help="Delta at which epsilon is reported.")]

# --------------------------------------------------------------------------------------------
# auditing

# ``auto`` or an int: typer takes no Union, so the value is typed Any and parsed here
QueryBatchSize = Annotated[Any, typer.Option(
    "--batch-size", metavar="auto|N", parser=parse_query_batch_size,
    help="Images per query batch; auto: chosen for the model on its device (CUDA: from a "
         "memory probe; CPU: 32 within the memory), more per call for smaller images.")]
Folds = Annotated[int, typer.Option("--folds", help="Cross-fitting folds.")]
Repeats = Annotated[int, typer.Option(
    "--repeats", help="Cross-fittings averaged per sample (the permutations redo all of "
                      "them).")]
Permutations = Annotated[int | None, typer.Option(
    "--permutations", min=0, metavar="N",
    help="Label permutations of each attack's test of 'no leakage' (p-value, null band, "
         "fitting-aware AUC interval); the target is queried once; 0 skips them. "
         "Default 100 (or $LEAKPROBE_PERMUTATIONS).")]
NumParts = Annotated[int | None, typer.Option(
    "--num-parts", help="PartCrop parts per image (default 128).")]
NViews = Annotated[int | None, typer.Option(
    "--n-views", help="EncoderMI views per image (default 10).")]
Views = Annotated[str | None, typer.Option(
    "--views", help="View recipe of EncoderMI, LpLA and baseline-consistency: simclr "
                    "(default, black box), byol, dino, mae, mild, with overrides "
                    "'byol,crop-scale=0.2:1,flip=0' or a JSON object. Give the target's "
                    "training recipe if you know it.", callback=_views)]
