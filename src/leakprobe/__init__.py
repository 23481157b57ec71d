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
from leakprobe.audits import audit_encoder, encoder_utility  # noqa: E402
from leakprobe.data.images import ImageSet  # noqa: E402
from leakprobe.data.loaders import load_dataset, load_image_folder  # noqa: E402
from leakprobe.data.splits import Split, load_images, make_split  # noqa: E402
from leakprobe.errors import LeakprobeError  # noqa: E402
from leakprobe.evaluation.metrics import compute_metrics  # noqa: E402
from leakprobe.targets.encoder import Encoder, ModuleEncoder  # noqa: E402
from leakprobe.targets.loading import load_encoder  # noqa: E402

__all__ = [
    "AugmentationConsistency", "Blind", "EmbeddingNorm", "Encoder", "EncoderMI", "ImageSet",
    "LabeledImages", "LeakprobeError", "LpLA", "ModuleEncoder", "PartCrop", "Split",
    "audit_encoder", "compute_metrics", "create_attack", "encoder_utility", "load_dataset",
    "load_encoder", "load_image_folder", "load_images", "make_split",
]
