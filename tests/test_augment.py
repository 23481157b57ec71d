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
