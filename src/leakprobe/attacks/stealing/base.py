"""What every stealing method shares: it turns cached target answers into a training loss.

A method declares what it buys from the target (:attr:`StealingMethod.query_recipe`: the clean
image, or views of a named augmentation recipe, :attr:`StealingMethod.views_per_image` of
them per image) and how a surrogate learns from the cached answers (:meth:`loss`). The budget
is always counted in target queries: a method that asks N views per image buys budget / N
images. Whatever a method does on the surrogate's side (fresh augmentations of its own
images) is free.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from torch import nn

from leakprobe.attacks.stealing.queries import QueryCache

#: (images (B, C, H, W), generator, n_views) -> views (B, n_views, C, S, S)
ViewMaker = Callable[[torch.Tensor, torch.Generator, int], torch.Tensor]


class StealingMethod:
    """A loss that trains a surrogate from the target's embeddings only.

    Attributes:
        name: registry name (see :mod:`leakprobe.attacks.registry`).
        views_per_image: views queried per image (a query is one view embedded).
        query_recipe: the views the target is asked for: ``clean`` (the image itself, one
            view) or the name of an augmentation recipe (:func:`query_views`).
    """

    # The name of a class registered as itself (set by leakprobe.attacks.registry).
    registered_name: ClassVar[str] = ""
    views_per_image: int = 1
    query_recipe: str = "clean"

    @property
    def name(self) -> str:
        """The name the method's results are reported under: its registry name."""
        return self.registered_name or type(self).__name__

    def query_views(self, size: int) -> ViewMaker | None:
        """What makes the views the target embeds (None: the clean image)."""
        return None

    def loss(self, surrogate: nn.Module, cache: QueryCache, idx: torch.Tensor,
             generator: torch.Generator) -> torch.Tensor:
        """The loss of one batch of cached images ``idx``."""
        raise NotImplementedError

    def get_params(self) -> dict:
        return {k: v for k, v in vars(self).items() if not k.endswith("_")}


def surrogate_device(surrogate: nn.Module) -> torch.device:
    """Where the surrogate's parameters live (its inputs go there)."""
    return next(surrogate.parameters()).device
