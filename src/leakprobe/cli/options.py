"""Option types shared by the ``leakprobe`` commands, each declared and checked in one place.

Each type is a ``typing.Annotated`` alias; a command gives the default in its signature
(``seed: Seed = 0``). The checks run as click callbacks while the command line is parsed,
so a bad ``--device``, ``--out``, ``--amp``, ``--query-precision``, ``--threads``,
``--batch-size``, ``--crop-scale`` or JSON option
is a one-line error (``error: ...``, exit status 2) before any model or data is loaded.
Callbacks import what they need when they run; ``--help`` runs none of them, so help stays
free of torch.

What an input takes is written here once too: :func:`model_forms` (every ``--model`` form of a
model family, one example each), :data:`DATA_FORMS`, :data:`SPLIT_FORMS`,
:data:`CAPTION_FORMS` and :data:`PAIRED_FORMS`; :func:`model_option` and :func:`data_option`
build the options whose help lists them. Every option sits in a help panel: the command's
inputs (its required options and ``--out``) in :data:`INPUTS_PANEL`, shown first, settings in
the others.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import typer

from leakprobe.errors import LeakprobeError

# --------------------------------------------------------------------------------------------
# the panels of a command's --help: what it reads and writes first, then the settings

INPUTS_PANEL = "Inputs"
MODEL_PANEL = "Model loading and queries"
ATTACKS_PANEL = "Attacks"
RECIPE_PANEL = "Encoder recipe"
TRAINING_PANEL = "Training"
DP_PANEL = "DP-SGD"
RUN_PANEL = "Seed, device and threads"

# --------------------------------------------------------------------------------------------
# what an input option accepts, written once: every help text that names a form is built
# from these lists, so the forms a loader takes and the forms a help shows cannot drift apart
# (tests/cli/test_cli_help.py checks every command's help against them)


class Form(NamedTuple):
    """One accepted form of an input: an example, and what it is."""

    example: str
    what: str


def model_forms(family: str, *, url: bool = True) -> tuple[Form, ...]:
    """Every form ``--model`` takes for a model of ``family``, in the loader's order.

    Args:
        family: ``encoder``, ``image2image``, ``captioner`` or ``image-text``
            (:func:`leakprobe.targets.families.load_target`).
        url: whether an ``http(s)://`` service is accepted (``serve`` needs a local model).
    """
    train = {"encoder": "runs/enc", "image2image": "runs/unet", "captioner": "runs/cap",
             "image-text": "runs/clip"}[family]
    if family == "image-text":
        forms = [Form(train, "a folder written by `leakprobe train image-text` "
                      "(image_text.safetensors, tokenizer.json)"),
                 Form("hf:models/clip-vit-base-patch32",
                      "a Hugging Face CLIP or SigLIP save_pretrained folder with its tokenizer "
                      "(config.json model_type clip or siglip; hf:OWNER/NAME reads the local "
                      "Hugging Face cache; needs transformers, the hf extra; never downloads)")]
    else:
        forms = [Form(train, f"a folder written by `leakprobe train {family}`")]
    if family == "captioner":
        forms.append(Form("captioner.pt", "TorchScript exporting generate(images), with "
                          "tokenizer.json beside it"))
    elif family != "image-text":
        forms.append(Form("model.pt", "a TorchScript file (torch.jit.save)"))
        arch = "vit-tiny" if family == "encoder" else "unet-small"
        forms.append(Form(f"weights.safetensors --arch {arch}",
                          "weights of a registered architecture (--arch may be left out when "
                          "leakprobe wrote the file)"))
    if family == "encoder":
        forms.append(Form("dino_vits16.pth --arch vit-small-patch16",
                          "a published checkpoint (.pth, .pth.tar, .pt or .safetensors: MoCo, "
                          "DINO, MAE...) in a layout `leakprobe models` lists"))
        forms.append(Form("hf:models/dinov2-small",
                          "a Hugging Face save_pretrained folder (its config.json model_type: "
                          "`leakprobe models` lists them; hf:OWNER/NAME reads the local "
                          "Hugging Face cache; needs transformers, the hf extra; never "
                          "downloads)"))
    elif family == "image2image":
        forms.append(Form("unet.pth --arch unet-small",
                          "a torch state dict (.pth, .pth.tar, .pt) of a registered "
                          "architecture"))
    returns = {"encoder": "an nn.Module or an object with embed(images)",
               "image2image": "an nn.Module or an object with translate(images)",
               "captioner": "an object with caption(images) -> list of str",
               "image-text": "an object or nn.Module with embed_images(images) and "
               "embed_texts(texts)"}[family]
    forms.append(Form("my_pkg.models:build", f"package.module:factory returning {returns}"))
    forms.append(Form("my_model.py:build", "file.py:factory, the same from a Python file"))
    if url:
        forms.append(Form("http://127.0.0.1:8080",
                          f"a model served by `leakprobe serve {family}` (black box)"))
    return tuple(forms)


#: Data specs and folders of images (:func:`leakprobe.data.loaders.load_dataset`).
DATA_FORMS: tuple[Form, ...] = (
    Form("data/images", "a folder of .png/.jpg/.jpeg/.bmp/.webp images, flat or one "
         "subfolder per class (the labels)"),
    Form("synthetic:2000", "N procedural images, labelled (synthetic:N:SEED)"),
    Form("digits", "scikit-learn's 8x8 digits, labelled"),
    Form("fashion-mnist:test", "Fashion-MNIST of Debian's dataset-fashion-mnist (:train, "
         ":test or :all)"),
    Form("idx:data/mnist:test", "MNIST-format IDX files (.gz too) in a folder"),
    Form("cifar10:data/cifar-10-python.tar.gz", "CIFAR-10 python batches, folder or .tar.gz "
         "(:train, :test or :all)"),
    Form("cifar100:data/cifar-100-python", "CIFAR-100, folder or .tar.gz"),
)
#: A split manifest: one side of the split ``leakprobe train`` made
#: (:func:`leakprobe.data.splits.load_images`).
MANIFEST_FORM = Form("runs/enc/split.json", "the split manifest `leakprobe train` wrote: its "
                     "members for --members, its non-members for --nonmembers (hashes checked)")
#: What --members / --nonmembers of an encoder audit take.
SPLIT_FORMS: tuple[Form, ...] = (DATA_FORMS[0], MANIFEST_FORM, *DATA_FORMS[1:])
#: Captioned images (:func:`leakprobe.data.captions.load_captioned_dataset`).
CAPTION_FORMS: tuple[Form, ...] = (
    Form("data/captions.json", "COCO captions JSON; file_name relative to its folder (or to "
         "--images where the command has it)"),
    Form("data/captions.json:data/images", "the same, file names relative to data/images"),
    Form("synthetic:400", "N synthetic scenes with captions (synthetic:N:SEED)"),
)
#: Paired folders of an image-to-image model (:func:`leakprobe.data.paired.load_paired_folder`).
PAIRED_FORMS: tuple[Form, ...] = (
    Form("data/pairs", "a folder holding inputs/ and targets/, files matched by name; "
         "targets are images, or PNG label maps with --num-classes"),
)


def _escaped(text: str) -> str:
    """``text`` for typer's rich help, whose markup would take ``[hf]`` for a style tag."""
    return text.replace("[", "\\[")


def forms_help(lead: str, forms: Sequence[Form]) -> str:
    """``lead``, then one line per form: ``- EXAMPLE  what it is`` (rich help keeps the lines:
    each is its own paragraph)."""
    return "\n\n".join([lead, *(_escaped(f"- {f.example}  {f.what}") for f in forms)])


def form_examples(forms: Sequence[Form]) -> str:
    """The forms' examples in one comma list (where a help refers to a list shown above)."""
    return _escaped(", ".join(f.example for f in forms))

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
                                     "CUDA when present).", callback=_device,
                                     rich_help_panel=RUN_PANEL)]
# a study's device is only named here: its Ray workers judge what they have
StudyDevice = Annotated[str | None, typer.Option(
    "--device", help="auto, cpu, cuda, cuda:N (default: the config's).",
    callback=_device_name, rich_help_panel=RUN_PANEL)]
Threads = Annotated[str, typer.Option(
    "--threads", metavar="auto|N", envvar="LEAKPROBE_THREADS", callback=_threads,
    rich_help_panel=RUN_PANEL,
    help="CPU threads for training and queries (auto = free cores); scorer fits always use "
         "one.")]
Amp = Annotated[str, typer.Option(
    "--amp", metavar="auto|on|off", callback=_amp, rich_help_panel=RUN_PANEL,
    help="bf16 autocast while training: auto = where the device runs bf16 natively "
         "(queries to a target: --query-precision).")]
QueryPrecision = Annotated[str, typer.Option(
    "--query-precision", metavar="auto|fp32|bf16", callback=_query_precision,
    rich_help_panel=MODEL_PANEL,
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
    """``--out FOLDER`` in the Inputs panel, checked writable (nothing is created)."""
    return typer.Option("--out", help=help, callback=_out_dir, metavar="FOLDER",
                        rich_help_panel=INPUTS_PANEL)


Out = Annotated[Path, out_option("Output folder (the files written are listed at the end).")]
ReportOut = Annotated[Path, out_option("Report folder: report.json, report.html, plots.")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed.", rich_help_panel=RUN_PANEL)]
ImageSize = Annotated[int, typer.Option("--image-size", help="Side of the square images.",
                                        rich_help_panel=TRAINING_PANEL)]
InputSize = Annotated[int | None, typer.Option(
    "--image-size", help="Input side (default: the model's, else 32).",
    rich_help_panel=MODEL_PANEL)]
ModelArch = Annotated[str | None, typer.Option(
    "--arch", metavar="NAME", rich_help_panel=MODEL_PANEL,
    help="Registered architecture of the weights (`leakprobe models` lists them): needed for "
         "a .pth, .pth.tar or .pt state dict (a published checkpoint: MoCo, DINO, MAE...) and "
         "for a .safetensors file that records none.")]
CheckpointKey = Annotated[str | None, typer.Option(
    "--checkpoint-key", rich_help_panel=MODEL_PANEL,
    help="Section of a published checkpoint to load with --arch (DINO: teacher, the "
         "default, or student; default: the first of state_dict, teacher, model).")]

# --------------------------------------------------------------------------------------------
# training

MemberCount = Annotated[int, typer.Option(
    "--members", help="Images in the member (training) split.", rich_help_panel=INPUTS_PANEL)]
NonmemberCount = Annotated[int | None, typer.Option(
    "--nonmembers", help="Non-member images kept (default: the rest).",
    rich_help_panel=INPUTS_PANEL)]
Epochs = Annotated[int, typer.Option("--epochs", help="Training epochs.",
                                     rich_help_panel=TRAINING_PANEL)]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Images per training batch.",
                                        rich_help_panel=TRAINING_PANEL)]
LearningRate = Annotated[float, typer.Option("--lr", help="Peak learning rate.",
                                             rich_help_panel=TRAINING_PANEL)]
WeightDecay = Annotated[float, typer.Option("--weight-decay", help="Weight decay (AdamW).",
                                            rich_help_panel=TRAINING_PANEL)]
Resume = Annotated[bool, typer.Option("--resume/--no-resume",
                                      help="Continue from out/checkpoints.",
                                      rich_help_panel=TRAINING_PANEL)]
SSLMethod = Annotated[str, typer.Option("--method", help="SSL method (`leakprobe models`).",
                                        rich_help_panel=RECIPE_PANEL)]
Backbone = Annotated[str, typer.Option("--arch", help="Backbone (`leakprobe models`).",
                                       rich_help_panel=RECIPE_PANEL)]
ArchKwargs = Annotated[str | None, typer.Option(
    "--arch-kwargs", callback=json_object_callback("--arch-kwargs"),
    rich_help_panel=RECIPE_PANEL,
    help='Backbone overrides as JSON, e.g. \'{"width":32}\'')]
MethodKwargs = Annotated[str | None, typer.Option(
    "--method-kwargs", callback=json_object_callback("--method-kwargs"),
    rich_help_panel=RECIPE_PANEL,
    help='SSL method overrides as JSON, e.g. \'{"queue_size": 1024}\'')]
Temperature = Annotated[float | None, typer.Option(
    "--temperature", help="Contrastive temperature (SimCLR, MoCo).",
    rich_help_panel=RECIPE_PANEL)]
ProjDim = Annotated[int | None, typer.Option(
    "--proj-dim", help="Projection head output (SimCLR; 0: no head).",
    rich_help_panel=RECIPE_PANEL)]
CropScale = Annotated[str, typer.Option(
    "--crop-scale", metavar="LOW,HIGH", callback=_crop_scale, rich_help_panel=RECIPE_PANEL,
    help="Random-resized-crop area range (SCSR defence: raise the lower bound, e.g. "
         "0.5,1.0).")]
DPClip = Annotated[float, typer.Option("--dp-clip", help="DP-SGD per-image clipping bound.",
                                       rich_help_panel=DP_PANEL)]
DPDelta = Annotated[float, typer.Option("--dp-delta",
                                        help="Delta at which epsilon is reported.",
                                        rich_help_panel=DP_PANEL)]

# --------------------------------------------------------------------------------------------
# auditing

# ``auto`` or an int: typer takes no Union, so the value is typed Any and parsed here
QueryBatchSize = Annotated[Any, typer.Option(
    "--batch-size", metavar="auto|N", parser=parse_query_batch_size,
    rich_help_panel=MODEL_PANEL,
    help="Images per query batch; auto: chosen for the model on its device (CUDA: from a "
         "memory probe; CPU: 32 within the memory), more per call for smaller images.")]
Folds = Annotated[int, typer.Option("--folds", help="Cross-fitting folds.",
                                    rich_help_panel=ATTACKS_PANEL)]
Repeats = Annotated[int, typer.Option(
    "--repeats", rich_help_panel=ATTACKS_PANEL,
    help="Cross-fittings averaged per sample (the permutations redo all of them).")]
Permutations = Annotated[int | None, typer.Option(
    "--permutations", min=0, metavar="N", rich_help_panel=ATTACKS_PANEL,
    help="Label permutations of each attack's test of 'no leakage' (p-value, null band, "
         "fitting-aware AUC interval); the target is queried once; 0 skips them. "
         "Default 100 (or $LEAKPROBE_PERMUTATIONS).")]
NumParts = Annotated[int | None, typer.Option(
    "--num-parts", help="PartCrop parts per image (default 128).",
    rich_help_panel=ATTACKS_PANEL)]
NViews = Annotated[int | None, typer.Option(
    "--n-views", help="EncoderMI views per image (default 10).",
    rich_help_panel=ATTACKS_PANEL)]
Views = Annotated[str | None, typer.Option(
    "--views", rich_help_panel=ATTACKS_PANEL, callback=_views,
    help="View recipe of EncoderMI, LpLA and baseline-consistency: simclr (default, black "
         "box), byol, dino, mae, mild, with overrides 'byol,crop-scale=0.2:1,flip=0' or a "
         "JSON object. Give the target's training recipe if you know it.")]

# --------------------------------------------------------------------------------------------
# inputs: the model and the data a command reads, each help listing every form it takes


def model_option(family: str, *, url: bool = True, name: str = "--model",
                 lead: str | None = None) -> Any:
    """``--model`` (or ``name``) of ``family`` in the Inputs panel, its help listing every form
    (:func:`model_forms`)."""
    what = {"encoder": "encoder", "image2image": "image-to-image model",
            "captioner": "captioner", "image-text": "image-text model"}[family]
    return typer.Option(name, metavar="MODEL", rich_help_panel=INPUTS_PANEL, help=forms_help(
        lead or f"The {what}{'' if url else ' (local)'}, in one of these forms:",
        model_forms(family, url=url)))


def data_option(name: str, lead: str, forms: Sequence[Form] = DATA_FORMS, *,
                panel: str | None = INPUTS_PANEL) -> Any:
    """A data option (``--members``, ``--data``...) whose help lists ``forms``."""
    return typer.Option(name, metavar="DATA", rich_help_panel=panel,
                        help=forms_help(lead, forms) if forms else lead)


def needs_no_arch(forms: Sequence[Form]) -> tuple[Form, ...]:
    """The forms loaded without ``--arch`` (for options such as ``--reference-model`` that
    take none)."""
    return tuple(f for f in forms if "--arch" not in f.example)
