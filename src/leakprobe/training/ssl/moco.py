"""MoCo v2 (Chen et al., 2020; He et al., 2020): momentum key encoder and a queue of keys."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from leakprobe.augment import SSLAugmentation
from leakprobe.models.heads import mlp_head
from leakprobe.models.registry import int_attribute
from leakprobe.training.ssl.base import (
    SSLBatch,
    SSLMethod,
    StudentOutputs,
    ema_update,
    flat_views,
    register_method,
)
from leakprobe.training.ssl.byol import check_positive, check_unit


@register_method("moco")
class MoCo(SSLMethod):
    """MoCo v2: InfoNCE of each query against its key and a queue of past keys.

    The query encoder is the backbone plus a 2-layer MLP head (no BatchNorm, as MoCo v2);
    the key encoder is its momentum copy, updated after each step with a constant
    ``momentum`` (parameters only; its BatchNorm statistics are its own, as the reference).
    Logits are ``[q.k+, q.queue] / temperature`` with the positive first; after
    each step the keys of the batch (one per image) replace the oldest queue entries. The
    queue starts as random unit vectors (as the reference code). With ``symmetric`` both
    views are queries (each against the other's key); otherwise view 0 is the query and
    view 1 the key, as the paper. The exported encoder is the query backbone.

    Defaults, paper -> ours: queue 65536 -> ``queue_size`` 4096 (a queue longer than the
    data set holds older keys of each image among its own negatives; with 200 images it did
    no harm in our runs, see docs/guide/training.md); momentum 0.999 -> 0.99 (short runs);
    temperature 0.2; head 2048 -> ``hidden_dim`` 512 -> ``proj_dim`` 128; symmetric loss
    (MoCo v3's; the paper's is one-sided). Shuffle-BN (multi-GPU) is not reproduced: the key
    encoder sees the batch in training mode.

    ``dp_per_image_exact`` is False: within a step each query meets its own key and a queue
    snapshot from earlier steps, but every image's key (the momentum encoder's output on it,
    not noised) enters the queue and is a negative in every later image's loss term, so one
    image moves many clipped terms of later steps (the tests show the clipped sum moving by
    more than C when one queue row changes). The accountant's epsilon is recorded as
    ``epsilon_nominal`` with :attr:`dp_caveat`, not as a guarantee.

    Args:
        backbone: the encoder trained and exported.
        augmentation: view generator (two views per image).
        temperature: InfoNCE temperature.
        proj_dim: head output size (the key size).
        hidden_dim: head width.
        queue_size: number of keys kept as negatives.
        momentum: key encoder momentum.
        symmetric: both views act as queries.
    """

    dp_per_image_exact = False
    dp_caveat = ("MoCo: each image's key joins the queue, a negative in every later image's "
                 "loss term, so its sensitivity exceeds C; epsilon_nominal is the accountant's "
                 "number for clipped per-image terms, not a guarantee")

    def __init__(
        self,
        backbone: nn.Module,
        augmentation: SSLAugmentation,
        temperature: float = 0.2,
        proj_dim: int = 128,
        hidden_dim: int = 512,
        queue_size: int = 4096,
        momentum: float = 0.99,
        symmetric: bool = True,
    ) -> None:
        super().__init__(backbone, augmentation)
        self.temperature = check_positive(temperature, "MoCo temperature")
        check_positive(proj_dim, "MoCo proj_dim")
        check_positive(hidden_dim, "MoCo hidden_dim")
        check_positive(queue_size, "MoCo queue_size")
        self.momentum = check_unit(momentum, "MoCo momentum")
        self.symmetric = bool(symmetric)
        embed_dim = int_attribute(backbone, "embed_dim")
        self.projector = mlp_head(embed_dim, hidden_dim, proj_dim, norm=False)
        self.teacher = copy.deepcopy(nn.Sequential(backbone, self.projector)).requires_grad_(False)
        self.register_buffer("queue", F.normalize(torch.randn(int(queue_size), proj_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.queue: torch.Tensor  # the buffers' types
        self.queue_ptr: torch.Tensor
        self._pending: torch.Tensor | None = None

    def prepare(self, images: torch.Tensor, generator: torch.Generator) -> SSLBatch:
        views = self.augmentation(images, generator, n_views=2)
        b = views.shape[0]
        with torch.no_grad():
            keys = F.normalize(self.teacher(flat_views(views)).float(), dim=-1).reshape(b, 2, -1)
        # the key of each query view is the other view's
        keys = keys.flip(1) if self.symmetric else keys[:, 1:]
        queries = views if self.symmetric else views[:, :1]
        self._pending = keys[:, 0]
        return SSLBatch((queries,), {"keys": keys, "queue": self.queue.clone()})

    def student(self, views: torch.Tensor) -> StudentOutputs:
        q = self.projector(self.backbone(flat_views(views)))
        return (q.reshape(views.shape[0], views.shape[1], -1),)

    def objective(self, outputs: StudentOutputs, batch: SSLBatch) -> torch.Tensor:
        q = F.normalize(outputs[0].float(), dim=-1)  # (B, V, D)
        keys, queue = batch.extras["keys"], batch.extras["queue"]
        pos = (q * keys).sum(-1, keepdim=True)  # (B, V, 1)
        with torch.autocast(q.device.type, enabled=False):  # logits in float32
            neg = q @ queue.t()
        logits = torch.cat([pos, neg], dim=-1) / self.temperature
        target = torch.zeros(logits.shape[:-1], dtype=torch.long, device=logits.device)
        return F.cross_entropy(logits.flatten(0, 1), target.flatten())

    def after_step(self, progress: float) -> None:
        ema_update(self.teacher, nn.Sequential(self.backbone, self.projector), self.momentum,
                   copy_buffers=False)
        if self._pending is None:
            return
        keys, self._pending = self._pending.to(self.queue), None
        n = self.queue.shape[0]
        idx = (self.queue_ptr + torch.arange(keys.shape[0], device=keys.device)) % n
        self.queue[idx[-n:]] = keys[-n:]
        self.queue_ptr.copy_((self.queue_ptr + keys.shape[0]) % n)
