"""leakprobe: audit vision models for training-data leakage and theft."""

__version__ = "0.1.0"

from leakprobe.attacks.membership import (  # noqa: E402
    AugmentationConsistency,
    Blind,
    EmbeddingNorm,
    EncoderMI,
    LabeledImages,
    LpLA,
    PartCrop,
    create_attack,
)
from leakprobe.attacks.membership.m4i import M4IFeature, M4IMetric  # noqa: E402
from leakprobe.audits import audit_captioner, audit_encoder, encoder_utility  # noqa: E402
from leakprobe.data.captions import load_coco_captions, make_synthetic_captioned  # noqa: E402
from leakprobe.data.images import ImageSet  # noqa: E402
from leakprobe.data.loaders import load_dataset, load_image_folder  # noqa: E402
from leakprobe.data.splits import Split, load_images, make_split  # noqa: E402
from leakprobe.defenses import defend_encoder  # noqa: E402
from leakprobe.errors import LeakprobeError  # noqa: E402
from leakprobe.evaluation.metrics import compute_metrics  # noqa: E402
from leakprobe.study import load_study_config, run_study  # noqa: E402
from leakprobe.targets.captioner import Captioner, ModuleCaptioner, load_captioner  # noqa: E402
from leakprobe.targets.encoder import Encoder, ModuleEncoder  # noqa: E402
from leakprobe.targets.loading import load_encoder  # noqa: E402
from leakprobe.training.dp import DPConfig  # noqa: E402
from leakprobe.training.encoder import EncoderRecipe, train_target_encoder  # noqa: E402
from leakprobe.training.trainer import TrainConfig  # noqa: E402

__all__ = [
    "AugmentationConsistency", "Blind", "Captioner", "DPConfig", "EmbeddingNorm", "Encoder",
    "EncoderMI", "EncoderRecipe", "TrainConfig", "defend_encoder", "load_study_config",
    "run_study", "train_target_encoder",
    "ImageSet", "LabeledImages", "LeakprobeError", "LpLA", "M4IFeature", "M4IMetric",
    "ModuleCaptioner", "ModuleEncoder", "PartCrop", "Split", "audit_captioner", "audit_encoder",
    "compute_metrics", "create_attack", "encoder_utility", "load_captioner",
    "load_coco_captions", "load_dataset", "load_encoder", "load_image_folder", "load_images",
    "make_split", "make_synthetic_captioned",
]
