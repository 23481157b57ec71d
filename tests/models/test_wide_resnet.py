import pytest
import torch

from leakprobe.models import create_model
from leakprobe.models import wide_resnet as _wrn  # noqa: F401  (registers wide-resnet50-2)

# A sample of torchvision's wide_resnet50_2 state_dict keys and shapes.
TORCHVISION_KEYS = {
    "conv1.weight": (64, 3, 7, 7),
    "bn1.running_var": (64,),
    "bn1.num_batches_tracked": (),
    "layer1.0.conv1.weight": (128, 64, 1, 1),
    "layer1.0.conv2.weight": (128, 128, 3, 3),
    "layer1.0.conv3.weight": (256, 128, 1, 1),
    "layer1.0.downsample.0.weight": (256, 64, 1, 1),
    "layer1.0.downsample.1.running_mean": (256,),
    "layer1.2.bn3.bias": (256,),
    "layer2.0.downsample.0.weight": (512, 256, 1, 1),
    "layer2.3.conv2.weight": (256, 256, 3, 3),
    "layer3.5.conv2.weight": (512, 512, 3, 3),
    "layer3.5.bn2.weight": (512,),
    "layer4.0.downsample.1.weight": (2048,),
    "layer4.2.conv3.weight": (2048, 1024, 1, 1),
    "fc.weight": (1000, 2048),
    "fc.bias": (1000,),
}


@pytest.fixture(scope="module")
def wrn():
    torch.manual_seed(0)
    return create_model("wide-resnet50-2").eval()


def test_state_dict_matches_torchvision_layout(wrn):
    state = wrn.state_dict()
    assert len(state) == 320  # torchvision's wide_resnet50_2 has 320 entries
    for key, shape in TORCHVISION_KEYS.items():
        assert key in state, key
        assert tuple(state[key].shape) == shape, key
    assert not any(k.startswith(("mean", "std")) for k in state)  # normalisation not saved
    assert "layer1.1.downsample.0.weight" not in state
    assert sum(p.numel() for p in wrn.parameters()) == 68_883_240


def test_features_and_logits_on_one_small_image(wrn):
    with torch.no_grad():
        x = torch.rand(1, 3, 64, 64)
        maps = wrn.features(x)
        logits = wrn(x)
    assert [m.shape[1] for m in maps] == [256, 512, 1024, 2048]
    assert [m.shape[-1] for m in maps] == [16, 8, 4, 2]
    assert logits.shape == (1, 1000)


def test_loads_weights_without_num_batches_tracked():
    small = create_model("wide-resnet50-2", layers=(1, 1, 1, 1), width_per_group=8)
    state = {k: v for k, v in small.state_dict().items() if "num_batches_tracked" not in k}
    other = create_model("wide-resnet50-2", layers=(1, 1, 1, 1), width_per_group=8)
    other.load_state_dict(state, strict=True)
    torch.testing.assert_close(other.conv1.weight, small.conv1.weight)
