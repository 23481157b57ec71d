import pytest
import torch

from leakprobe.attacks.membership.pixel_features import (
    BackbonePixelFeatures,
    BuiltinPixelFeatures,
    create_pixel_features,
)
from leakprobe.errors import LeakprobeError
from leakprobe.models import create_model
from leakprobe.models import wide_resnet as _wrn  # noqa: F401  (registers wide-resnet50-2)
from leakprobe.models.serialization import save_weights

SMALL_WRN = {"layers": [1, 1, 1, 1], "width_per_group": 8, "num_classes": 10, "input_size": 32}


def test_builtin_shapes_resolution_and_determinism():
    x = torch.rand(3, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    extractor = BuiltinPixelFeatures(size=32)
    feats = extractor(x)
    assert feats.shape == (3, extractor.num_features, 32, 32)
    assert extractor.num_features == 3 + 9 + 6 + 2 + 4 * 8
    assert torch.isfinite(feats).all()
    torch.testing.assert_close(feats, BuiltinPixelFeatures(size=32)(x), rtol=0, atol=0)
    torch.testing.assert_close(feats[:, :3], torch.nn.functional.interpolate(
        x, size=(32, 32), mode="bilinear", align_corners=False))  # the RGB values come first
    # per-sample: a batch gives the same features as its images one by one
    torch.testing.assert_close(feats[1:2], extractor(x[1:2]))
    assert not torch.equal(feats, BuiltinPixelFeatures(size=32, seed=1)(x))


def test_builtin_keeps_the_input_size_by_default_and_describes_itself():
    extractor = create_pixel_features("builtin")
    assert extractor(torch.rand(2, 3, 10, 10)).shape[-2:] == (10, 10)
    info = extractor.describe()
    assert info["name"] == "builtin" and info["num_features"] == extractor.num_features
    assert info["weights"] is None


def test_backbone_features_from_saved_weights(tmp_path):
    torch.manual_seed(0)
    model = create_model("wide-resnet50-2", **SMALL_WRN)
    path = save_weights(model, tmp_path / "wrn.safetensors", "wide-resnet50-2", SMALL_WRN)
    extractor = create_pixel_features("wide-resnet50-2", weights=str(path), size=8)
    assert isinstance(extractor, BackbonePixelFeatures)
    feats = extractor(torch.rand(2, 3, 32, 32))
    assert feats.shape == (2, 256 + 512 + 1024 + 2048, 8, 8)
    info = extractor.describe()
    assert info["num_features"] == 3840 and info["resolution"] == 8
    assert info["weights"] == str(path)
    few = BackbonePixelFeatures(extractor.model, layers=(1, 2), size=4)
    assert few(torch.rand(1, 3, 32, 32)).shape == (1, 768, 4, 4)


def test_create_pixel_features_errors(tmp_path):
    with pytest.raises(LeakprobeError, match="unknown pixel feature extractor"):
        create_pixel_features("nope")
    with pytest.raises(LeakprobeError, match="need a weights file"):
        create_pixel_features("wide-resnet50-2")
    with pytest.raises(LeakprobeError, match="do not exist"):
        create_pixel_features("wide-resnet50-2", weights=str(tmp_path / "missing.safetensors"))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(LeakprobeError, match="not a readable safetensors"):
        create_pixel_features("wide-resnet50-2", weights=str(junk))
    other = create_model("resnet-tiny")  # weights of another architecture
    wrong = save_weights(other, tmp_path / "wrong.safetensors", "resnet-tiny", {})
    with pytest.raises(LeakprobeError, match="do not fit"):
        create_pixel_features("wide-resnet50-2", weights=str(wrong), arch_kwargs=SMALL_WRN)
    with pytest.raises(LeakprobeError, match="no features"):
        BackbonePixelFeatures(create_model("resnet-tiny"))
    with pytest.raises(LeakprobeError, match="layers"):
        BackbonePixelFeatures(create_model("wide-resnet50-2", **SMALL_WRN), layers=(5,))
