import pytest
import torch

from leakprobe.models import create_model
from leakprobe.models import unet as _unet  # noqa: F401  (registers unet-small)
from leakprobe.models.unet import UNet


@pytest.mark.parametrize("up", ["bilinear", "transpose"])
def test_shapes_and_sigmoid_range(up):
    torch.manual_seed(0)
    model = UNet(out_channels=3, width=8, depth=3, up=up).eval()
    with torch.no_grad():
        y = model(torch.rand(2, 3, 32, 32))
    assert y.shape == (2, 3, 32, 32)
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_softmax_output_is_a_distribution_over_channels():
    torch.manual_seed(0)
    model = UNet(out_channels=9, width=8, depth=2, output="softmax").eval()
    with torch.no_grad():
        y = model(torch.rand(2, 3, 16, 16))
    assert y.shape == (2, 9, 16, 16)
    torch.testing.assert_close(y.sum(dim=1), torch.ones(2, 16, 16))
    assert float(y.min()) >= 0.0


def test_any_input_side_is_padded_and_cropped_back():
    model = UNet(width=4, depth=3).eval()
    assert model(torch.rand(1, 3, 20, 28)).shape == (1, 3, 20, 28)


def test_scriptable_and_identical_after_save(tmp_path):
    torch.manual_seed(0)
    model = create_model("unet-small", out_channels=5, output="softmax", input_size=16).eval()
    assert model.input_size == 16
    scripted = torch.jit.script(model)
    scripted.save(str(tmp_path / "u.pt"))
    loaded = torch.jit.load(str(tmp_path / "u.pt"))
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(loaded(x), model(x))


def test_group_norm_variant_has_no_batchnorm():
    model = create_model("unet-small", norm="group", width=8)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, torch.nn.GroupNorm) for m in model.modules())
    model.train()
    assert model(torch.rand(1, 3, 16, 16)).shape == (1, 3, 16, 16)  # batch of one is fine


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="output"):
        UNet(output="tanh")
