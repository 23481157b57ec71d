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
        ("simclr,flip=1.5", "flip is a probability and must be in [0, 1], got '1.5'"),
        ("flip=2", "views: flip is a probability"),  # issue 25: named as the user wrote it
        ("simclr,grayscale=-1", "grayscale is a probability"),
        ("simclr,blurr=0.5", "(did you mean 'blur'?)"),
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


# -- Cont-Steal's augmentation (RandAugment(2, 14), RandomCrop(padding=4), flip) ----------

def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _levels(values, shape=None):
    """A float image from 8-bit levels."""
    t = torch.tensor(values, dtype=torch.float32) / 255
    return t if shape is None else t.reshape(shape)


def test_rand_augment_magnitudes_follow_torchvision_tables():
    import pytest

    from leakprobe.augment import RAND_AUGMENT_OPS, rand_augment_magnitude

    assert RAND_AUGMENT_OPS == (
        "Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness",
        "Color", "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize")

    def mag(op, m=14, h=32, w=32):
        return rand_augment_magnitude(op, magnitude=m, num_bins=31, height=h, width=w)

    # bin 14 of 31: 14/30 of each range
    assert mag("ShearX") == pytest.approx(0.14) and mag("ShearY") == pytest.approx(0.14)
    assert mag("TranslateX", w=32, h=64) == pytest.approx(150 / 331 * 32 * 14 / 30, rel=1e-6)
    assert mag("TranslateY", w=32, h=64) == pytest.approx(150 / 331 * 64 * 14 / 30, rel=1e-6)
    assert mag("Rotate") == pytest.approx(14.0)
    for op in ("Brightness", "Color", "Contrast", "Sharpness"):
        assert mag(op) == pytest.approx(0.42)
    assert mag("Posterize") == 6 and mag("Posterize", 0) == 8 and mag("Posterize", 30) == 4
    assert mag("Solarize") == pytest.approx(136 / 255) and mag("Solarize", 0) == 1.0
    assert mag("Equalize") == mag("AutoContrast") == mag("Identity") == 0.0
    with pytest.raises(ValueError):
        mag("Rotate", 31)
    with pytest.raises(ValueError):
        mag("Invert")


def test_contsteal_views_shape_range_and_seeding():
    from leakprobe.augment import ContStealAugmentation

    x = torch.rand(5, 3, 40, 40, generator=_gen(0))
    aug = ContStealAugmentation()
    a = aug(x, _gen(1), n_views=3)
    assert a.shape == (5, 3, 3, 32, 32) and a.dtype == x.dtype
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, aug(x, _gen(1), n_views=3))
    assert not torch.allclose(a, aug(x, _gen(2), n_views=3))
    assert not torch.allclose(a[:, 0], a[:, 1])  # views are drawn independently
    assert ContStealAugmentation(size=16)(x, _gen(1)).shape == (5, 1, 3, 16, 16)


def test_contsteal_flip_is_a_mirror_of_the_same_draw():
    from leakprobe.augment import ContStealAugmentation

    x = torch.rand(6, 3, 32, 32, generator=_gen(0))
    kept = ContStealAugmentation(flip_p=0.0)(x, _gen(3), n_views=2)
    flipped = ContStealAugmentation(flip_p=1.0)(x, _gen(3), n_views=2)
    assert torch.equal(flipped, kept.flip(-1))


def test_rand_augment_draw_does_not_depend_on_dtype():
    from leakprobe.augment import rand_augment

    x = torch.randint(0, 256, (64, 3, 16, 16), generator=_gen(0)).float() / 255
    g32, g64 = _gen(7), _gen(7)
    a = rand_augment(x, generator=g32)
    b = rand_augment(x.double(), generator=g64)
    assert torch.equal(g32.get_state(), g64.get_state())  # the same numbers were drawn
    close = torch.isclose(a.double(), b, atol=1e-5).float().mean()
    assert close > 0.999  # only 8-bit rounding ties may differ
    assert not torch.allclose(a, x)


def test_rand_augment_on_cuda_draws_as_on_cpu():
    import pytest

    from leakprobe.augment import ContStealAugmentation

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    x = torch.randint(0, 256, (64, 3, 16, 16), generator=_gen(0)).float() / 255
    g_cpu, g_gpu = _gen(7), _gen(7)
    a = ContStealAugmentation(size=16)(x, g_cpu, 2)
    c = ContStealAugmentation(size=16)(x.cuda(), g_gpu, 2)
    assert c.is_cuda and torch.equal(g_cpu.get_state(), g_gpu.get_state())
    assert torch.isclose(a, c.cpu(), atol=1e-5).float().mean() > 0.999


def test_magnitude_zero_makes_every_magnitude_op_the_identity():
    from leakprobe.augment import RAND_AUGMENT_OPS, ContStealAugmentation, rand_augment

    x = torch.rand(32, 3, 12, 12, generator=_gen(0)) * 0.999  # below 1: solarize(1.0) keeps it
    ops = [op for op in RAND_AUGMENT_OPS if op not in ("AutoContrast", "Equalize")]
    out = rand_augment(x, generator=_gen(1), num_ops=3, magnitude=0, ops=ops)
    assert torch.equal(out, x)
    # solarize at magnitude 0 (threshold 1.0) inverts exactly the white pixels, as torchvision
    white = x.clone()
    white[:, :, 0, 0] = 1.0
    sol = rand_augment(white, generator=_gen(1), magnitude=0, ops=["Solarize"])
    assert torch.equal(sol[:, :, 0, 0], torch.zeros(32, 3))
    assert torch.equal(sol[..., 1:], x[..., 1:])
    # the whole pipeline: per-channel constant images are also fixed by autocontrast/equalize
    flat = torch.rand(8, 3, 1, 1, generator=_gen(2)).expand(8, 3, 16, 16) * 0.999
    views = ContStealAugmentation(size=16, magnitude=0, padding=0, flip_p=0.0)(flat, _gen(3), 2)
    assert torch.equal(views, flat[:, None].expand_as(views))
    # ... and a non-zero magnitude does change them (the test can fail)
    moved = ContStealAugmentation(size=16, padding=0, flip_p=0.0)(flat, _gen(3), 2)
    assert not torch.equal(moved, flat[:, None].expand_as(moved))


def test_posterize_keeps_the_top_six_bits_at_magnitude_14():
    from leakprobe.augment import rand_augment

    x = _levels([0, 1, 2, 3, 4, 5, 63, 64, 130, 255]).view(1, 1, 1, 10).expand(4, 3, 1, 10)
    out = rand_augment(x, generator=_gen(0), num_ops=1, ops=["Posterize"])
    want = _levels([0, 0, 0, 0, 4, 4, 60, 64, 128, 252]).view(1, 1, 1, 10).expand(4, 3, 1, 10)
    torch.testing.assert_close(out, want)
    lowest = rand_augment(x, generator=_gen(0), num_ops=1, magnitude=30, ops=["Posterize"])
    torch.testing.assert_close(lowest[0, 0, 0], _levels([0, 0, 0, 0, 0, 0, 48, 64, 128, 240]))


def test_solarize_inverts_at_or_above_136_of_255():
    from leakprobe.augment import rand_augment

    x = _levels([0, 100, 135, 136, 137, 200, 255]).view(1, 1, 1, 7).expand(2, 3, 1, 7)
    out = rand_augment(x, generator=_gen(0), num_ops=1, ops=["Solarize"])
    want = _levels([0, 100, 135, 119, 118, 55, 0]).view(1, 1, 1, 7).expand(2, 3, 1, 7)
    torch.testing.assert_close(out, want)


def test_autocontrast_stretches_each_channel():
    from leakprobe.augment import rand_augment

    x = torch.tensor([[[0.2, 0.4, 0.6]], [[0.3, 0.3, 0.3]], [[0.0, 0.25, 1.0]]]).unsqueeze(0)
    out = rand_augment(x, generator=_gen(0), num_ops=1, ops=["AutoContrast"])
    want = torch.tensor([[[0.0, 0.5, 1.0]], [[0.3, 0.3, 0.3]], [[0.0, 0.25, 1.0]]]).unsqueeze(0)
    torch.testing.assert_close(out, want)


def test_equalize_matches_pil_on_hand_computed_histograms():
    from leakprobe.augment import rand_augment

    # channel 0: 255, 257 and 256 pixels at levels 50, 100, 200 -> step = 512 // 255 = 2, so
    # the levels map to (0 + 1) // 2 = 0, (255 + 1) // 2 = 128 and (512 + 1) // 2 = 256 -> 255
    c0 = _levels([50] * 255 + [100] * 257 + [200] * 256, (8, 96))
    # channel 1: constant (one level: step 0) -> unchanged; channel 2: too few pixels below
    # the top level (step = 200 // 255 = 0) -> unchanged
    c1 = torch.full((8, 96), 0.3)
    c2 = _levels([10] * 200 + [20] * 568, (8, 96))
    x = torch.stack([c0, c1, c2])[None]
    out = rand_augment(x, generator=_gen(0), num_ops=1, ops=["Equalize"])
    torch.testing.assert_close(out[0, 0], _levels([0] * 255 + [128] * 257 + [255] * 256, (8, 96)))
    assert torch.equal(out[0, 1], c1) and torch.equal(out[0, 2], c2)


def test_translate_shifts_by_int_magnitude_with_zeros_entering():
    from leakprobe.augment import rand_augment

    x = torch.rand(16, 3, 32, 32, generator=_gen(0)) + 0.01  # no zeros inside
    out = rand_augment(x, generator=_gen(1), num_ops=1, ops=["TranslateX"])
    right = torch.zeros_like(x)
    right[..., 6:] = x[..., :-6]  # int(150/331 * 32 * 14/30) = int(6.77) = 6 pixels
    left = torch.zeros_like(x)
    left[..., :-6] = x[..., 6:]
    is_right = (out == right).flatten(1).all(1)
    is_left = (out == left).flatten(1).all(1)
    assert bool((is_right | is_left).all()) and is_right.any() and is_left.any()


def test_shear_x_shears_about_the_top_left_corner():
    from leakprobe.augment import rand_augment

    x = torch.rand(16, 1, 32, 32, generator=_gen(0))
    out = rand_augment(x, generator=_gen(1), num_ops=1, ops=["ShearX"])
    # x_in = x_out + m * (y + 0.5), m = +-0.14: rows 0, 10 and 31 move by 0, 1 and 4 pixels
    assert torch.equal(out[..., 0, :], x[..., 0, :])
    for row, s in ((10, 1), (31, 4)):
        plus = [torch.equal(out[i, 0, row, : 32 - s], x[i, 0, row, s:]) for i in range(16)]
        minus = [torch.equal(out[i, 0, row, s:], x[i, 0, row, : 32 - s]) for i in range(16)]
        assert all(p != q for p, q in zip(plus, minus, strict=True)) and any(plus) and any(minus)


def test_rotate_is_counter_clockwise_about_the_centre():
    from leakprobe.augment import rand_augment

    x = torch.zeros(8, 1, 33, 33)
    x[:, :, 16, 16] = 0.5  # the centre stays put
    x[:, :, 16, 24] = 1.0  # 8 pixels right of the centre
    out = rand_augment(x, generator=_gen(2), num_ops=1, magnitude=30, ops=["Rotate"])
    assert torch.equal(out[:, 0, 16, 16], torch.full((8,), 0.5))
    up = out[:, 0, 12, 23] == 1.0  # +30 degrees: (8, 0) -> (6.9, -4), counter-clockwise
    down = out[:, 0, 20, 23] == 1.0  # -30 degrees
    assert bool((up ^ down).all()) and up.any() and down.any()


def test_geometric_ops_move_as_torchvision_for_a_positive_magnitude():
    from leakprobe.augment import _affine_nearest, _geometric_theta

    def move(op, value, x):
        theta = _geometric_theta(op, torch.tensor([value], dtype=torch.float64), *x.shape[2:])
        return _affine_nearest(x, theta, 0.0)

    x = torch.rand(1, 3, 32, 32, generator=_gen(0)) + 0.01
    tx, ty = move("TranslateX", 6.77, x), move("TranslateY", 6.77, x)  # int(): 6 pixels
    assert torch.equal(tx[..., 6:], x[..., :-6]) and tx[..., :6].eq(0).all()  # moves right
    assert torch.equal(ty[..., 6:, :], x[..., :-6, :]) and ty[..., :6, :].eq(0).all()  # down
    sx, sy = move("ShearX", 0.14, x), move("ShearY", 0.14, x)
    assert torch.equal(sx[..., 31, :28], x[..., 31, 4:])  # x_in = x + m (y + 0.5)
    assert torch.equal(sy[..., :28, 31], x[..., 4:, 31])  # y_in = y + m (x + 0.5)
    dot = torch.zeros(1, 1, 33, 33)
    dot[..., 16, 24] = 1.0
    assert move("Rotate", 30.0, dot)[0, 0, 12, 23] == 1.0  # counter-clockwise
    assert move("Rotate", -30.0, dot)[0, 0, 20, 23] == 1.0
    filled = _affine_nearest(x, _geometric_theta("TranslateX", torch.tensor([6.0]), 32, 32), 0.5)
    assert filled[..., :6].eq(0.5).all() and torch.equal(filled[..., 6:], x[..., :-6])


def test_colour_ops_at_magnitude_14_blend_as_torchvision():
    from leakprobe.augment import rand_augment

    x = torch.tensor([0.2, 0.5, 0.8]).view(1, 3, 1, 1).expand(6, 3, 4, 4)
    out = rand_augment(x, generator=_gen(0), num_ops=1, ops=["Brightness"])
    lo, hi = x * 0.58, (x * 1.42).clamp(max=1)
    assert all(torch.allclose(o, lo[0]) or torch.allclose(o, hi[0]) for o in out)
    out = rand_augment(x, generator=_gen(0), num_ops=1, ops=["Color"])
    gray = 0.2989 * 0.2 + 0.587 * 0.5 + 0.114 * 0.8
    for o in out:
        f = 0.58 if o[0, 0, 0] > 0.2 else 1.42  # desaturation pulls red up towards gray
        torch.testing.assert_close(o, (f * x[0] + (1 - f) * gray).clamp(0, 1))


def test_pad_random_crop_is_a_shift_with_zeros_entering():
    from leakprobe.augment import pad_random_crop

    x = torch.rand(64, 3, 10, 12, generator=_gen(0)) + 0.01
    g = _gen(1)
    state = g.get_state()
    assert torch.equal(pad_random_crop(x, padding=0, generator=g), x)
    assert torch.equal(g.get_state(), state)  # padding 0 draws nothing
    out = pad_random_crop(x, padding=3, generator=g)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (3, 3, 3, 3))
    seen = set()
    for i in range(64):  # the test's loop: find each image's offset
        hits = [(dy, dx) for dy in range(7) for dx in range(7)
                if torch.equal(out[i], padded[i, :, dy:dy + 10, dx:dx + 12])]
        assert len(hits) == 1
        seen.add(hits[0])
    assert len(seen) > 20 and {0, 6} <= {dy for dy, _ in seen} and {0, 6} <= {dx for _, dx in seen}


def test_contsteal_augmentation_is_batched(monkeypatch):
    import time

    import torch.nn.functional as F

    from leakprobe import augment
    from leakprobe.augment import ContStealAugmentation

    calls = {"grid_sample": 0, "conv2d": 0}

    def counting(name):
        real = getattr(F, name)

        def wrapped(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)

        return wrapped

    for name in calls:
        monkeypatch.setattr(augment.F, name, counting(name))
    torch.manual_seed(0)
    x = torch.rand(512, 3, 32, 32, generator=_gen(0))
    start = time.perf_counter()
    views = ContStealAugmentation()(x, _gen(1), n_views=2)
    elapsed = time.perf_counter() - start
    assert views.shape == (512, 2, 3, 32, 32)
    # one resampling and at most one sharpness convolution per RandAugment round (2 rounds),
    # whatever the number of images
    assert 1 <= calls["grid_sample"] <= 2 and 1 <= calls["conv2d"] <= 2
    assert elapsed < 20.0  # ~0.3 s on one CPU thread; a per-image loop is several times that
