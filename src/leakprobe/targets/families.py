"""Each model family, described once: encoder, image2image, captioner, image-text.

A :class:`Family` says what the rest of leakprobe picks per family: the target protocol a
model of the family follows and the method the attacks query, the loader that turns
``--model SPEC`` into a target, the HTTP client and the service of ``leakprobe serve``, the
attacks an audit runs by default, and the ``kind`` of its audit's ``report.json``.

The description holds import paths, resolved on first use, so reading it (e.g. for a CLI's
help text) imports neither torch nor a web server. :func:`load_target` loads any family's
``--model``.

Example:
    >>> from leakprobe.targets.families import family, load_target
    >>> family("captioner").default_attacks
    'm4i-metric,m4i-feature'
    >>> target = load_target("runs/t1", family="encoder", device="cpu")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from leakprobe.errors import LeakprobeError

if TYPE_CHECKING:
    import torch


def _resolve(path: str) -> Any:
    """The object at ``package.module:name``."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Family:
    """One model family and everything leakprobe picks for it.

    Attributes:
        name: the family, as ``/v1/info`` declares it and the CLI names it (``encoder``,
            ``image2image``, ``captioner``, ``image-text``).
        what: the family in a sentence ("an encoder"), for errors.
        method: the query method of its targets (``embed``, ``translate``, ``caption``,
            ``embed_images``).
        target_path: ``module:name`` of its target protocol.
        loader_path: ``module:name`` of the function loading ``--model SPEC``.
        client_path: ``module:name`` of its HTTP client class.
        service_path: ``module:name`` of its HTTP service class.
        default_attacks: the attacks an audit runs by default (a comma list of names).
        report_kind: the ``kind`` of its audit's ``report.json``.
        loader_takes_arch: whether its loader reads ``--arch`` (safetensors weights).
    """

    name: str
    what: str
    method: str
    target_path: str
    loader_path: str
    client_path: str
    service_path: str
    default_attacks: str
    report_kind: str
    loader_takes_arch: bool = True

    @property
    def target(self) -> type:
        """The target protocol (``isinstance`` works: it is runtime-checkable)."""
        return _resolve(self.target_path)

    @property
    def loader(self) -> Any:
        """The loader: ``loader(spec, ..., device=, batch_size=, budget=, image_size=,
        query_precision=)``."""
        return _resolve(self.loader_path)

    @property
    def client(self) -> type:
        """The HTTP client class (``client(url, batch_size=, budget=, image_size=)``)."""
        return _resolve(self.client_path)

    @property
    def service(self) -> type:
        """The HTTP service class (``service(target, config, clients=None)``)."""
        return _resolve(self.service_path)


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            name="encoder",
            what="an encoder",
            method="embed",
            target_path="leakprobe.targets.encoder:Encoder",
            loader_path="leakprobe.targets.loading:load_encoder",
            client_path="leakprobe.serving.client:HTTPEncoder",
            service_path="leakprobe.serving.server:EncoderService",
            default_attacks="all",
            report_kind="encoder-membership",
        ),
        Family(
            name="image2image",
            what="an image-to-image model",
            method="translate",
            target_path="leakprobe.targets.image2image:ImageToImage",
            loader_path="leakprobe.targets.loading:load_translator",
            client_path="leakprobe.serving.client:HTTPTranslator",
            service_path="leakprobe.serving.server:TranslatorService",
            default_attacks="reconstruction,predictability,membership-error",
            report_kind="image2image-membership",
        ),
        Family(
            name="captioner",
            what="a captioner",
            method="caption",
            target_path="leakprobe.targets.captioner:Captioner",
            loader_path="leakprobe.targets.captioner:load_captioner",
            client_path="leakprobe.serving.client:HTTPCaptioner",
            service_path="leakprobe.serving.server:CaptionerService",
            default_attacks="m4i-metric,m4i-feature",
            report_kind="captioner-membership",
            loader_takes_arch=False,
        ),
        Family(
            name="image-text",
            what="an image-text model",
            method="embed_images",
            target_path="leakprobe.targets.image_text:ImageTextModel",
            loader_path="leakprobe.targets.image_text:load_image_text",
            client_path="leakprobe.serving.client:HTTPImageText",
            service_path="leakprobe.serving.server:ImageTextService",
            default_attacks="clip-cosine,clip-rank,clip-augment",
            report_kind="image-text-membership",
            loader_takes_arch=False,
        ),
    )
}


def family(name: str | Family) -> Family:
    """The :class:`Family` called ``name`` (a :class:`Family` is returned as is).

    Raises:
        LeakprobeError: an unknown family, naming the known ones.
    """
    if isinstance(name, Family):
        return name
    found = FAMILIES.get(str(name).strip().lower())
    if found is None:
        raise LeakprobeError(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}")
    return found


_family = family  # load_target's keyword ``family`` shadows the function


def _takes(fn: Any, name: str) -> bool:
    """Whether ``fn`` accepts the keyword ``name`` (a family added later may not)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def family_of_report(kind: str) -> Family | None:
    """The family whose audit writes a ``report.json`` of ``kind`` (None: no audit's)."""
    return next((f for f in FAMILIES.values() if f.report_kind == kind), None)


def load_target(
    spec: str,
    *,
    family: str | Family,
    device: str | torch.device = "auto",
    arch: str | None = None,
    image_size: int | None = None,
    batch_size: int | str | None = None,
    budget: int | None = None,
    checkpoint_key: str | None = None,
    query_precision: str = "auto",
) -> Any:
    """A target of ``family`` for ``--model SPEC`` (file, folder, entry point or URL).

    Args:
        spec: what the user passed as ``--model``.
        family: the family's name (``encoder``, ``image2image``, ``captioner``,
            ``image-text``) or :class:`Family`.
        device: where a local model runs.
        arch: registered architecture of ``.safetensors`` weights (not for captioners).
        image_size: input side (default: what the model declares, else 32).
        batch_size: images per model call or request (default: the family loader's), or
            ``"auto"``: measured for a local model on its device
            (:func:`~leakprobe.targets.batching.auto_batch_size`).
        budget: optional query budget.
        checkpoint_key: section of a published checkpoint read with ``arch`` (encoders only;
            DINO: ``teacher``, the default, or ``student``).
        query_precision: ``auto`` (bf16 autocast where the device computes bf16 natively,
            fp32 elsewhere), ``fp32`` or ``bf16``, for a local model (the target's
            ``query_precision`` names the one used); HTTP services answer as they do. A
            family whose loader takes no ``query_precision`` accepts only ``auto``.
    Returns:
        The family's target (e.g. a :class:`~leakprobe.targets.encoder.ModuleEncoder` or an
        :class:`~leakprobe.serving.client.HTTPEncoder`).
    Raises:
        LeakprobeError: unknown family, ``arch`` for a family without it, any loading error.
    """
    fam = _family(family)
    options: dict[str, Any] = {"device": device, "image_size": image_size, "budget": budget}
    loader = fam.loader
    if _takes(loader, "query_precision"):
        options["query_precision"] = query_precision
    elif query_precision != "auto":
        raise LeakprobeError(f"--query-precision {query_precision}: the {fam.name} family's "
                             "loader takes no query precision")
    if batch_size is not None:
        options["batch_size"] = batch_size
    if arch is not None:
        if not fam.loader_takes_arch:
            raise LeakprobeError(f"--arch {arch}: {fam.name} models are loaded without an "
                                 "architecture name; drop --arch")
        options["arch"] = arch
    if checkpoint_key is not None:
        if fam.name != "encoder":
            raise LeakprobeError(f"--checkpoint-key {checkpoint_key}: only for encoders")
        options["checkpoint_key"] = checkpoint_key
    return loader(str(spec), **options)

