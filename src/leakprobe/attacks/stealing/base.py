"""What every stealing method shares: it turns cached target answers into a training loss."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from leakprobe.attacks.stealing.queries import QueryCache


class StealingMethod:
    """A loss that trains a surrogate from the target's embeddings only.

    Attributes:
        name: registry name (see :mod:`leakprobe.attacks.registry`).
        views_per_image: views queried per image (a query is one view embedded).
    """

    # The name of a class registered as itself (set by leakprobe.attacks.registry).
    registered_name: ClassVar[str] = ""
    views_per_image: int = 1

    @property
    def name(self) -> str:
        """The name the method's results are reported under: its registry name."""
        return self.registered_name or type(self).__name__

    def loss(self, surrogate: nn.Module, cache: QueryCache, idx: torch.Tensor,
             generator: torch.Generator) -> torch.Tensor:
        """The loss of one batch of cached images ``idx``."""
        raise NotImplementedError

    def get_params(self) -> dict:
        return {k: v for k, v in vars(self).items() if not k.endswith("_")}
