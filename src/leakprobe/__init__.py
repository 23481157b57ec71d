"""leakprobe: audit vision models for training-data leakage and theft.

The public names below are imported on first use (PEP 562), so ``import leakprobe`` and
every ``leakprobe --help`` start without loading torch, scikit-learn or matplotlib.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from leakprobe._lazy import lazy_exports
from leakprobe._version import __version__  # noqa: F401  (re-exported)

# public name -> module that defines it
_EXPORTS = {
    "AugmentationConsistency": "leakprobe.attacks.membership",
    "Blind": "leakprobe.attacks.membership",
    "EmbeddingNorm": "leakprobe.attacks.membership",
    "EncoderMI": "leakprobe.attacks.membership",
    "LabeledImages": "leakprobe.attacks.membership",
    "LpLA": "leakprobe.attacks.membership",
    "PartCrop": "leakprobe.attacks.membership",
    "create_attack": "leakprobe.attacks.membership",
    "M4IFeature": "leakprobe.attacks.membership.m4i",
    "M4IMetric": "leakprobe.attacks.membership.m4i",
    "audit_captioner": "leakprobe.workflows.audit",
    "audit_encoder": "leakprobe.workflows.audit",
    "audit_image2image": "leakprobe.workflows.audit",
    "audit_image_text": "leakprobe.workflows.image_text_audit",
    "audit_model": "leakprobe.workflows.audit",
    "encoder_utility": "leakprobe.workflows.audit",
    "load_coco_captions": "leakprobe.data.captions",
    "make_synthetic_captioned": "leakprobe.data.captions",
    "ImageSet": "leakprobe.data.images",
    "load_dataset": "leakprobe.data.loaders",
    "load_image_folder": "leakprobe.data.loaders",
    "Split": "leakprobe.data.splits",
    "load_images": "leakprobe.data.splits",
    "make_split": "leakprobe.data.splits",
    "defend_encoder": "leakprobe.workflows.defend",
    "LeakprobeError": "leakprobe.errors",
    "compute_metrics": "leakprobe.evaluation.metrics",
    "native_bf16": "leakprobe.precision",
    "resolve_amp": "leakprobe.precision",
    "steal_encoder": "leakprobe.workflows.steal",
    "OwnershipSpec": "leakprobe.workflows.ownership",
    "run_ownership": "leakprobe.workflows.ownership",
    "load_study_config": "leakprobe.study",
    "run_study": "leakprobe.study",
    "Captioner": "leakprobe.targets.captioner",
    "ModuleCaptioner": "leakprobe.targets.captioner",
    "load_captioner": "leakprobe.targets.captioner",
    "Encoder": "leakprobe.targets.encoder",
    "ModuleEncoder": "leakprobe.targets.encoder",
    "load_encoder": "leakprobe.targets.loading",
    "load_target": "leakprobe.targets.families",
    "set_threads": "leakprobe.threads",
    "single_threaded": "leakprobe.threads",
    "DPConfig": "leakprobe.training.dp",
    "EncoderRecipe": "leakprobe.training.encoder",
    "train_target_encoder": "leakprobe.training.encoder",
    "TrainConfig": "leakprobe.training.trainer",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:  # static analysers see the real names
    from leakprobe.attacks.membership import (  # noqa: F401
        AugmentationConsistency,
        Blind,
        EmbeddingNorm,
        EncoderMI,
        LabeledImages,
        LpLA,
        PartCrop,
        create_attack,
    )
    from leakprobe.attacks.membership.m4i import M4IFeature, M4IMetric  # noqa: F401
    from leakprobe.data.captions import load_coco_captions, make_synthetic_captioned  # noqa
    from leakprobe.data.images import ImageSet  # noqa: F401
    from leakprobe.data.loaders import load_dataset, load_image_folder  # noqa: F401
    from leakprobe.data.splits import Split, load_images, make_split  # noqa: F401
    from leakprobe.errors import LeakprobeError  # noqa: F401
    from leakprobe.evaluation.metrics import compute_metrics  # noqa: F401
    from leakprobe.precision import native_bf16, resolve_amp  # noqa: F401
    from leakprobe.study import load_study_config, run_study  # noqa: F401
    from leakprobe.targets.captioner import Captioner, ModuleCaptioner, load_captioner  # noqa
    from leakprobe.targets.encoder import Encoder, ModuleEncoder  # noqa: F401
    from leakprobe.targets.families import load_target  # noqa: F401
    from leakprobe.targets.loading import load_encoder  # noqa: F401
    from leakprobe.threads import set_threads, single_threaded  # noqa: F401
    from leakprobe.training.dp import DPConfig  # noqa: F401
    from leakprobe.training.encoder import EncoderRecipe, train_target_encoder  # noqa: F401
    from leakprobe.training.trainer import TrainConfig  # noqa: F401
    from leakprobe.workflows.audit import (  # noqa: F401
        audit_captioner,
        audit_encoder,
        audit_image2image,
        audit_model,
        encoder_utility,
    )
    from leakprobe.workflows.defend import defend_encoder  # noqa: F401
    from leakprobe.workflows.image_text_audit import audit_image_text  # noqa: F401
    from leakprobe.workflows.ownership import OwnershipSpec, run_ownership  # noqa: F401
    from leakprobe.workflows.steal import steal_encoder  # noqa: F401
