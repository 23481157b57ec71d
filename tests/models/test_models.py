import pytest
import torch

from leakprobe.errors import LeakprobeError
from leakprobe.models import create_model, list_models


@pytest.mark.parametrize("name", ["resnet-tiny", "resnet18-cifar", "vit-tiny"])
def test_embeddings_and_tokens_have_the_documented_shapes(name):
    model = create_model(name).eval()
    x = torch.rand(2, 3, 32, 32)
    emb, tok = model(x), model.tokens(x)
    assert emb.shape == (2, model.embed_dim)
    assert tok.shape[0] == 2 and tok.shape[2] == model.embed_dim
    assert model.tokens(x[:, :, :16, :16]).shape[2] == model.embed_dim  # half-size parts


def test_models_script_to_torchscript_with_tokens(tmp_path):
    model = create_model("vit-tiny", depth=1).eval()
    scripted = torch.jit.script(model)
    scripted.save(str(tmp_path / "m.pt"))
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(loaded.tokens(x), model.tokens(x))


def test_group_norm_variant_has_no_batchnorm():
    model = create_model("resnet-tiny", norm="group")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_unknown_architecture_lists_known_ones():
    with pytest.raises(LeakprobeError, match="resnet-tiny"):
        create_model("nope")
    assert "vit-tiny" in list_models()
