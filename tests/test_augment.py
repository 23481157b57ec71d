import torch

from leakprobe.augment import SSLAugmentation, crops_from_boxes, random_resized_crop


def test_identity_box_reproduces_the_image():
    x = torch.rand(3, 3, 16, 16)
    boxes = torch.tensor([0.0, 0.0, 1.0, 1.0]).expand(3, 1, 4)
    torch.testing.assert_close(crops_from_boxes(x, 16, boxes)[:, 0], x)


def test_mirrored_box_flips_horizontally():
    x = torch.rand(2, 3, 8, 8)
    boxes = torch.tensor([0.0, 0.0, -1.0, 1.0]).expand(2, 1, 4)
    torch.testing.assert_close(crops_from_boxes(x, 8, boxes)[:, 0], x.flip(-1))


def test_crops_are_seeded_and_batched():
    x = torch.rand(4, 3, 32, 32)
    a = random_resized_crop(x, 16, 8, (0.08, 0.2), generator=torch.Generator().manual_seed(0))
    b = random_resized_crop(x, 16, 8, (0.08, 0.2), generator=torch.Generator().manual_seed(0))
    assert a.shape == (4, 8, 3, 16, 16)
    torch.testing.assert_close(a, b)


def test_crop_of_a_constant_region_is_constant():
    x = torch.zeros(1, 3, 32, 32)
    x[..., :16, :16] = 1.0  # top-left quarter white
    box = torch.tensor([[[-0.5, -0.5, 0.25, 0.25]]])  # well inside that quarter
    assert torch.allclose(crops_from_boxes(x, 8, box), torch.ones(1, 1, 3, 8, 8))


def test_ssl_views_stay_in_range_and_differ():
    x = torch.rand(5, 3, 32, 32)
    views = SSLAugmentation(blur_p=0.5)(x, torch.Generator().manual_seed(1), n_views=3)
    assert views.shape == (5, 3, 3, 32, 32)
    assert views.min() >= 0 and views.max() <= 1
    assert not torch.allclose(views[:, 0], views[:, 1])


# -- view recipes (leakprobe.views, ``--views``) ------------------------------------------

def _views_of(spec, seed=0):
    x = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    return spec.augmentation(16)(x, torch.Generator().manual_seed(seed), n_views=3)


def test_simclr_preset_reproduces_the_old_views_bit_for_bit():
    import pytest

    from leakprobe.views import VIEW_PRESETS, parse_views

    x = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    old = SSLAugmentation(size=16)(x, torch.Generator().manual_seed(0), n_views=3)
    for spec in (VIEW_PRESETS["simclr"], parse_views("simclr"), parse_views(None)):
        assert torch.equal(_views_of(spec), old)
    # values the code gave before view recipes existed (same seed, same images)
    assert float(old.double().sum()) == pytest.approx(6740.582, rel=1e-5)
    torch.testing.assert_close(old.reshape(-1)[:3],
                               torch.tensor([0.35516876, 0.22837158, 0.21793836]))


def test_presets_follow_their_papers():
    from leakprobe.views import VIEW_PRESETS

    p = VIEW_PRESETS
    assert set(p) == {"simclr", "byol", "dino", "mae", "mild"}
    assert p["simclr"].crop_scale == (0.08, 1.0) and p["simclr"].gray_p == 0.2
    assert (p["simclr"].brightness, p["simclr"].hue, p["simclr"].jitter_p) == (0.4, 0.1, 0.8)
    assert p["byol"].saturation == 0.2 and p["byol"].solarize_p > 0 and p["byol"].blur_p > 0
    assert p["dino"].crop_scale == (0.4, 1.0)
    mae = p["mae"]
    assert mae.crop_scale == (0.2, 1.0) and mae.flip_p == 0.5
    assert mae.jitter_p == mae.gray_p == mae.blur_p == mae.solarize_p == 0
    assert p["mild"].crop_scale == (0.5, 1.0)
    for name, spec in p.items():
        views = _views_of(spec)
        assert spec.preset == name and views.shape == (6, 3, 3, 16, 16)
        assert views.min() >= 0 and views.max() <= 1


def test_mae_views_keep_colours():
    from leakprobe.views import parse_views

    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    full = parse_views("mae,crop-scale=1:1,crop-ratio=1:1,flip=0").augmentation(16)
    torch.testing.assert_close(full(x, torch.Generator().manual_seed(0))[:, 0], x)


def test_overrides_and_json_parse():
    from leakprobe.views import ViewSpec, parse_views

    s = parse_views("simclr, crop-scale=0.2:1 ,jitter=0.2,flip=0,gray_p=0.5")
    assert s.crop_scale == (0.2, 1.0) and s.flip_p == 0.0 and s.gray_p == 0.5
    assert (s.brightness, s.contrast, s.saturation, s.hue) == (0.2, 0.2, 0.2, 0.05)
    assert s.preset == "simclr+custom"
    assert parse_views("crop-scale=0.5:1").crop_scale == (0.5, 1.0)  # base: simclr
    assert parse_views("BYOL").preset == "byol"
    j = parse_views('{"preset": "dino", "crop_scale": [0.32, 1], "jitter": "0.4:0.4:0.2:0.1"}')
    assert j.crop_scale == (0.32, 1.0) and j.saturation == 0.2 and j.solarize_p > 0
    assert parse_views({"preset": "mae"}) == parse_views("mae")
    d = parse_views("byol").to_dict()
    assert d["preset"] == "byol" and d["crop_scale"] == [0.08, 1.0]
    assert parse_views({k: v for k, v in d.items()}) == parse_views("byol")  # round trip
    assert isinstance(parse_views(ViewSpec()), ViewSpec)


def test_solarize_and_blur_draw_nothing_when_off():
    from leakprobe.augment import solarize

    x = torch.rand(5, 3, 8, 8)
    assert torch.equal(solarize(x, 0.0, torch.Generator()), x)
    s = solarize(x, 1.0, torch.Generator())
    assert torch.equal(s, torch.where(x >= 0.5, 1 - x, x))


def test_bad_views_are_one_clear_error():
    import pytest

    from leakprobe.errors import LeakprobeError
    from leakprobe.views import parse_views

    cases = [
        ("simclar", "unknown preset 'simclar'; known: simclr, byol, dino, mae, mild"),
        ("simclr,zoom=2", "unknown key 'zoom'; known: crop-scale"),
        ("simclr,crop-scale=0.9:0.2", "crop-scale must satisfy 0 < LO <= HI <= 1"),
        ("simclr,crop-scale=0:1", "crop-scale must satisfy"),
        ("simclr,crop-scale=0.5", "crop-scale must be LO:HI"),
        ("simclr,flip=1.5", "flip-p must be a number in [0, 1]"),
        ("simclr,flip=yes", "flip must be a number"),
        ("simclr,jitter=1:2", "jitter must be S or B:C:S:H"),
        ("simclr,hue=0.9", "hue must be a number in [0, 0.5]"),
        ("simclr,mae", "expected KEY=VALUE"),
        ("{not json", "not a valid JSON object"),
        ('{"preset": "sim"}', "unknown preset 'sim'"),
        ("", "expected a preset name"),
    ]
    for text, message in cases:
        with pytest.raises(LeakprobeError) as info:
            parse_views(text)
        assert message in str(info.value), (text, str(info.value))
        assert "\n" not in str(info.value)
