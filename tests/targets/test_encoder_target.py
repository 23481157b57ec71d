import pytest
import torch
from torch import nn

from leakprobe.errors import BudgetExceededError, LeakprobeError
from leakprobe.models import create_model
from leakprobe.targets.encoder import ModuleEncoder


class FixedSize(nn.Module):
    """Accepts 32x32 only, like many user models."""

    def forward(self, x):
        if x.shape[-1] != 32:
            raise RuntimeError("expected 32x32")
        return x.flatten(1)[:, :10]


def test_queries_are_counted_and_budget_enforced():
    enc = ModuleEncoder(create_model("resnet-tiny"), budget=10, device="cpu")
    enc.embed(torch.rand(6, 3, 32, 32))
    assert enc.queries == 6
    with pytest.raises(BudgetExceededError):
        enc.embed(torch.rand(5, 3, 32, 32))


def test_fixed_size_models_get_resized_inputs():
    enc = ModuleEncoder(FixedSize(), input_size=32, device="cpu")
    assert not enc.flexible_size
    assert enc.embed(torch.rand(3, 3, 16, 16)).shape == (3, 10)
    assert enc.tokens(torch.rand(3, 3, 32, 32)) is None


def test_wrong_output_shape_is_a_clear_error():
    class Bad(nn.Module):
        def forward(self, x):
            return x  # 4-D, not (B, D)

    with pytest.raises(LeakprobeError, match=r"\(B,D\)"):
        ModuleEncoder(Bad(), device="cpu")


def test_nan_embeddings_are_refused():
    class NaNs(nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 4), float("nan"))

    with pytest.raises(LeakprobeError, match="NaN"):
        ModuleEncoder(NaNs(), device="cpu")


def test_tokens_of_a_cnn_are_its_last_feature_map():
    enc = ModuleEncoder(create_model("resnet-tiny"), device="cpu")
    tok = enc.tokens(torch.rand(2, 3, 32, 32))
    assert tok.shape == (2, 16, enc.embed_dim)
