"""The attacker's paid queries: views of its images and the target's embeddings of them.

Each query is paid once: views and embeddings are cached on disk (safetensors, written
atomically after every chunk), so an interrupted steal resumes where it stopped and a budget
sweep reuses the prefix of one query stream.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from leakprobe.augment import SSLAugmentation
from leakprobe.errors import LeakprobeError
from leakprobe.io import atomic_write
from leakprobe.progress import log, track
from leakprobe.targets.encoder import resize


class QueryCache:
    """Views (n, v, 3, S, S) of the attacker's images and the target's embeddings (n, v, D).

    With ``views == 1`` the single view is the clean image (what the conventional attack
    queries); with more, every view is a random SimCLR augmentation (Cont-Steal).

    Args:
        images: the attacker's query images (N, 3, H, W) in [0, 1], in query order.
        views: queried views per image (a query is one view embedded).
        size: side the views are made at (the target's input size).
        seed: seeds the views.
        path: cache file (None: memory only).
    """

    def __init__(self, images: torch.Tensor, views: int, size: int, seed: int = 0,
                 path: str | Path | None = None) -> None:
        if views < 1:
            raise LeakprobeError(f"views per image must be >= 1, got {views}")
        self.images = resize(images, size)
        self.views_per_image = views
        self.size = size
        self.seed = seed
        self.path = Path(path) if path else None
        self.views = torch.empty(0, views, 3, size, size)
        self.embeddings = torch.empty(0)
        if self.path is not None and self.path.exists():
            self._load()

    @property
    def n_done(self) -> int:
        return self.views.shape[0]

    @property
    def queries(self) -> int:
        return self.n_done * self.views_per_image

    def _load(self) -> None:
        state = load_file(str(self.path))
        if state["views"].shape[1:] != self.views.shape[1:] or int(state["seed"]) != self.seed:
            raise LeakprobeError(f"{self.path}: a query cache of other settings; remove it")
        self.views, self.embeddings = state["views"], state["embeddings"]
        log(f"resuming: {self.queries} queries already paid ({self.path})")

    def _save(self) -> None:
        if self.path is None:
            return
        state = {"views": self.views.contiguous(), "embeddings": self.embeddings.contiguous(),
                 "seed": torch.tensor(self.seed)}
        atomic_write(self.path, lambda p: save_file(state, str(p)))

    def _make_views(self, start: int, stop: int) -> torch.Tensor:
        chunk = self.images[start:stop]
        if self.views_per_image == 1:
            return chunk[:, None]
        # one generator per chunk start: resumed runs draw exactly the same views
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + start)
        return SSLAugmentation(size=self.size)(chunk, g, self.views_per_image)

    def fill(self, target, n_images: int, chunk: int = 256) -> None:
        """Query the target until ``n_images`` images (all their views) are embedded."""
        if n_images > self.images.shape[0]:
            raise LeakprobeError(
                f"the budget needs {n_images} query images at {self.views_per_image} views "
                f"each, only {self.images.shape[0]} given: add query images or raise --views")
        starts = range(self.n_done, n_images, chunk)
        for start in track(starts, "querying the target", len(starts)):
            stop = min(start + chunk, n_images)
            views = self._make_views(start, stop)
            b, v = views.shape[:2]
            emb = target.embed(views.reshape(b * v, *views.shape[2:])).view(b, v, -1)
            self.views = torch.cat([self.views, views])
            self.embeddings = emb if self.embeddings.numel() == 0 else \
                torch.cat([self.embeddings, emb])
            self._save()
