"""DINO (Caron et al., 2021): self-distillation with a centred, sharpened momentum teacher."""

from __future__ import annotations

import copy
import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from leakprobe.augment import SSLAugmentation
from leakprobe.errors import LeakprobeError
from leakprobe.models.heads import DINOHead
from leakprobe.models.registry import int_attribute
from leakprobe.training.ssl.base import (
    SSLBatch,
    SSLMethod,
    StudentOutputs,
    ema_update,
    flat_views,
    register_method,
)
from leakprobe.training.ssl.byol import check_positive, check_unit, cosine_momentum


@register_method("dino")
class DINO(SSLMethod):
    """DINO: the student's softmax over prototypes matches the teacher's on other crops.

    Each image gives two global crops (``augmentation.size``, area range
    ``augmentation.crop_scale``) and ``n_local`` local crops (``local_size``, area range
    ``local_scale``). The teacher (backbone + head, an EMA of the student with momentum rising
    from ``momentum`` to 1 on a cosine schedule; parameters only, its BatchNorm statistics
    are its own as in the reference code) sees the global crops only; its outputs are
    centred (``center``, an EMA of the batch mean of teacher outputs with
    ``center_momentum``, updated after each step) and sharpened (``teacher_temp``). Loss per
    image: cross-entropy ``-sum softmax((t - c) / teacher_temp) * log_softmax(s /
    student_temp)`` averaged over every (teacher global crop, student crop) pair of different
    crops.

    Defaults, paper -> ours: head 3 layers of 2048, bottleneck 256, 65536 prototypes ->
    ``hidden_dim`` 512, ``proj_dim`` 128, ``out_dim`` 1024; teacher temperature 0.04,
    student 0.1 and center momentum 0.9 as the paper (no teacher-temperature warm-up, no
    frozen last layer in the first epoch); teacher momentum 0.996 -> 0.99 (short runs);
    local crops 8-10 at 96 px with area (0.05, 0.4) and global (0.4, 1) at 224 px -> 2 local
    crops at half the side with area in the lower 35% of ``crop_scale`` (so the SCSR defence,
    which narrows ``crop_scale``, narrows the local crops too); the globals keep
    ``crop_scale``. ``local_scale`` sets the local range explicitly.

    Export: the paper evaluates (and releases) the teacher, so ``export_backbone`` returns
    the teacher backbone by default (``export="student"`` for the student's). The teacher is
    a moving average of student weights, so under DP-SGD it is post-processing.

    Under DP-SGD (:meth:`enable_dp`) the centre is frozen at zero. Within a step an image's
    loss depends on its own crops, the teacher's outputs on them and the centre; the teacher
    is a moving average of DP-trained weights (post-processing), but the centre, a moving
    average of the teacher's raw outputs on past training images, would carry every image
    into all later loss terms without noise. Privatising it would need its own clipping, noise
    and accounting; freezing it (as ``center_momentum=1`` does) keeps each loss term a
    function of one image, so ``dp_per_image_exact`` is True and the accountant's epsilon is a
    guarantee. The price: only sharpening (``teacher_temp``) is left against collapse, which
    at our CPU scale happens with or without the centre (see below).

    At CPU scale the head does not form clusters: in our runs (200-1500 images, up to 300
    steps, lr 1e-4 to 2e-3, with or without local crops, BatchNorm in the head or not, even
    without augmentation) the loss first rises from a low start (the center starts at zero)
    and then settles at ``ln(out_dim)`` (uniform collapse) or just above it; the backbone
    still learns (k-NN / probe utility close to SimCLR's, see docs/guide/training.md). The
    paper's regime (hundreds of thousands of steps, lr 5e-4 x batch / 256) is far from these
    runs.

    Args:
        backbone: the encoder trained.
        augmentation: global-crop view generator (its ``crop_scale`` is honoured).
        out_dim: number of prototypes.
        proj_dim: bottleneck size of the head.
        hidden_dim: head MLP width.
        teacher_temp: teacher softmax temperature (sharpening).
        student_temp: student softmax temperature.
        center_momentum: EMA momentum of the center.
        momentum: base teacher momentum (cosine schedule to 1).
        n_local: local crops per image (0: two global crops only).
        local_size: side of the local crops (default half of ``augmentation.size``).
        local_scale: area range of the local crops (default: the lower 35% of crop_scale).
        export: ``teacher`` or ``student``: which backbone ``export_backbone`` returns.
        head_norm: BatchNorm in the head MLP (the paper's ``use_bn_in_head``, off).
        norm_last_layer: unit-norm prototypes (the paper's default); False learns their norm.
    """

    dp_per_image_exact = True

    def __init__(
        self,
        backbone: nn.Module,
        augmentation: SSLAugmentation,
        out_dim: int = 1024,
        proj_dim: int = 128,
        hidden_dim: int = 512,
        teacher_temp: float = 0.04,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        momentum: float = 0.99,
        n_local: int = 2,
        local_size: int | None = None,
        local_scale: tuple[float, float] | list[float] | None = None,
        export: str = "teacher",
        head_norm: bool = False,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__(backbone, augmentation)
        for value, what in ((out_dim, "out_dim"), (proj_dim, "proj_dim"),
                            (hidden_dim, "hidden_dim"), (teacher_temp, "teacher_temp"),
                            (student_temp, "student_temp")):
            check_positive(value, f"DINO {what}")
        if n_local < 0:
            raise LeakprobeError(f"DINO n_local must be >= 0, got {n_local}")
        if local_size is not None and local_size < 4:
            raise LeakprobeError(f"DINO local_size must be >= 4, got {local_size}")
        if local_scale is not None and not (
            len(local_scale) == 2 and 0 < local_scale[0] <= local_scale[1] <= 1
        ):
            raise LeakprobeError(f"DINO local_scale must be (low, high) in (0, 1], got "
                                 f"{local_scale}")
        if export not in ("teacher", "student"):
            raise LeakprobeError(f"DINO export must be 'teacher' or 'student', got {export!r}")
        self.teacher_temp, self.student_temp = teacher_temp, student_temp
        self.center_momentum = check_unit(center_momentum, "DINO center_momentum")
        self.momentum = check_unit(momentum, "DINO momentum")
        self.n_local, self.local_size = int(n_local), local_size
        self.local_scale: tuple[float, float] | None = (
            (local_scale[0], local_scale[1]) if local_scale is not None else None
        )
        self.export = export
        embed_dim = int_attribute(backbone, "embed_dim")
        self.head = DINOHead(embed_dim, out_dim, hidden_dim, proj_dim, norm=head_norm,
                             norm_last=norm_last_layer)
        self.teacher = copy.deepcopy(nn.Sequential(backbone, self.head)).requires_grad_(False)
        self.register_buffer("center", torch.zeros(out_dim))
        self.center: torch.Tensor  # the buffer's type
        self.center_frozen = False  # True under DP-SGD (enable_dp)
        self._pending: torch.Tensor | None = None

    def local_augmentation(self) -> SSLAugmentation:
        """The augmentation of the local crops (derived from the current global one)."""
        aug = self.augmentation
        lo, hi = aug.crop_scale
        scale = self.local_scale or (lo, lo + 0.35 * (hi - lo))
        return dataclasses.replace(aug, size=self.local_size or max(4, aug.size // 2),
                                   crop_scale=scale)

    def prepare(self, images: torch.Tensor, generator: torch.Generator) -> SSLBatch:
        views = self.augmentation(images, generator, n_views=2)
        inputs: tuple[torch.Tensor, ...] = (views,)
        if self.n_local > 0:
            inputs += (self.local_augmentation()(images, generator, n_views=self.n_local),)
        with torch.no_grad():
            teacher = self.teacher(flat_views(views)).float().reshape(views.shape[0], 2, -1)
        self._pending = teacher
        return SSLBatch(inputs, {"teacher": teacher, "center": self.center.clone()})

    def student(self, *views: torch.Tensor) -> StudentOutputs:
        out = [self.head(self.backbone(flat_views(v))).reshape(v.shape[0], v.shape[1], -1)
               for v in views]
        return (torch.cat(out, dim=1),)

    def objective(self, outputs: StudentOutputs, batch: SSLBatch) -> torch.Tensor:
        s = F.log_softmax(outputs[0].float() / self.student_temp, dim=-1)  # (B, V, K)
        t = F.softmax((batch.extras["teacher"] - batch.extras["center"]) / self.teacher_temp,
                      dim=-1)  # (B, 2, K)
        ce = -(t.unsqueeze(2) * s.unsqueeze(1)).sum(-1)  # (B, 2, V), float32 under autocast
        other = ~torch.eye(2, s.shape[1], dtype=torch.bool, device=ce.device)
        return ce[:, other].mean()

    def after_step(self, progress: float) -> None:
        ema_update(self.teacher, nn.Sequential(self.backbone, self.head),
                   cosine_momentum(self.momentum, progress), copy_buffers=False)
        if self._pending is not None and not self.center_frozen:
            mean = self._pending.to(self.center).mean(dim=(0, 1))
            self.center.mul_(self.center_momentum).add_(mean, alpha=1 - self.center_momentum)
        self._pending = None

    def enable_dp(self) -> None:
        """DP-SGD: the centre is set to zero and never updated (see the class docstring)."""
        with torch.no_grad():
            self.center.zero_()
        self.center_frozen = True

    def export_backbone(self) -> nn.Module:
        """The backbone to save as the target: the teacher's (default) or the student's."""
        return self.teacher[0] if self.export == "teacher" else self.backbone
