"""MoCo v2, BYOL, DINO and MAE: training, the prepare/student/objective contract, audits."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call, grad, vmap

from leakprobe.augment import SSLAugmentation
from leakprobe.data.splits import make_split
from leakprobe.data.synthetic import make_synthetic
from leakprobe.errors import LeakprobeError
from leakprobe.models import create_model
from leakprobe.targets.encoder import ModuleEncoder
from leakprobe.training.encoder import EncoderRecipe, train_ssl_encoder
from leakprobe.training.ssl.base import create_method, list_methods
from leakprobe.training.trainer import TrainConfig
from leakprobe.workflows.audit import audit_encoder

METHODS = ["moco", "byol", "dino", "mae"]
SIZE = 16
# backbone and small-scale method options per method (vit-tiny for MAE, depth 2)
ARCH = {"moco": ("resnet-tiny", {}), "byol": ("resnet-tiny", {}),
        "dino": ("resnet-tiny", {}), "mae": ("vit-tiny", {"depth": 2})}
KWARGS = {"moco": {"queue_size": 64}, "byol": {}, "dino": {"out_dim": 256}, "mae": {}}
# per-image (DP-ready) variants: GroupNorm backbone, no BatchNorm in the heads
DP_ARCH = {"moco": ("resnet-tiny", {"norm": "group"}), "byol": ("resnet-tiny", {"norm": "group"}),
           "dino": ("resnet-tiny", {"norm": "group"}), "mae": ("vit-tiny", {"depth": 2})}
DP_KWARGS = {"moco": {"queue_size": 64}, "byol": {"head_norm": False},
             "dino": {"out_dim": 256}, "mae": {}}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def build(name: str, dp: bool = False, **kw):
    torch.manual_seed(0)
    arch, akw = (DP_ARCH if dp else ARCH)[name]
    backbone = create_model(arch, input_size=SIZE, **akw)
    options = {**(DP_KWARGS if dp else KWARGS)[name], **kw}
    return create_method(name, backbone, SSLAugmentation(size=SIZE), **options)


@pytest.fixture(scope="module")
def data():
    return make_split(make_synthetic(96, SIZE, seed=0), 48, seed=0)


@pytest.fixture(scope="module")
def trained(data):
    """Each method trained for a few epochs on 48 images of 16 px: (backbone, history)."""
    out = {}
    for name in METHODS:
        arch, akw = ARCH[name]
        recipe = EncoderRecipe(name, arch, akw, (0.08, 1.0), KWARGS[name])
        config = TrainConfig(epochs=6, batch_size=16, lr=2e-3, seed=0, device="cpu")
        out[name] = train_ssl_encoder(data.members.images, recipe, config)
    return out


def test_all_methods_are_registered():
    assert set(METHODS) | {"simclr"} <= set(list_methods())


@pytest.mark.parametrize("name", METHODS)
def test_training_runs_and_gives_finite_losses(trained, name):
    backbone, history = trained[name]
    assert len(history) == 6 and all(math.isfinite(h) for h in history)
    assert not backbone.training
    emb = backbone(torch.rand(3, 3, SIZE, SIZE))
    assert emb.shape == (3, backbone.embed_dim) and torch.isfinite(emb).all()


@pytest.mark.parametrize("name", METHODS)
def test_loss_decreases_on_a_fixed_batch(name):
    """The student minimises its objective: 30 Adam steps on one prepared batch."""
    method = build(name)
    g = torch.Generator().manual_seed(0)
    batch = method.prepare(make_synthetic(16, SIZE, seed=1).images, g)
    params = [p for p in method.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-3)
    losses = []
    for _ in range(30):
        loss = method.objective(method.student(*batch.inputs), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize("name", ["byol", "mae"])
def test_epoch_loss_decreases(trained, name):
    """Methods with a stationary objective: the last epoch's mean loss is below the first's.

    (MoCo's epoch loss rises while real keys replace the random initial queue, DINO's while
    its center, starting at zero, catches up: both are covered by the fixed-batch test.)
    """
    _, history = trained[name]
    assert history[-1] < history[0], history


@pytest.mark.parametrize("name", METHODS)
def test_trained_target_is_audited(trained, data, name, tmp_path):
    backbone, _ = trained[name]
    target = ModuleEncoder(backbone, device="cpu")
    assert target.has_tokens  # patch tokens / feature-map tokens are exposed
    report = audit_encoder(target, data.members, data.nonmembers,
                           attacks="partcrop,encodermi-threshold,lpla-p2,baseline-norm", seed=0,
                           out_dir=tmp_path, repeats=1, num_parts=16, n_views=4)
    assert (tmp_path / "report.json").is_file() and (tmp_path / "report.html").is_file()
    names = [r["attack"] for r in report["results"]]
    assert names == ["partcrop", "encodermi-threshold", "lpla-p2", "baseline-norm", "blind"]
    for r in report["results"]:
        assert 0.0 <= r["metrics"]["auc"] <= 1.0
        assert r["n_members"] == 48 and r["n_nonmembers"] == 48


@pytest.mark.parametrize("name", METHODS)
def test_student_rows_are_independent(name):
    """Perturbing image 3's inputs changes its outputs and nobody else's (eval mode)."""
    method = build(name).eval()
    g = torch.Generator().manual_seed(0)
    batch = method.prepare(make_synthetic(4, SIZE, seed=2).images, g)
    with torch.no_grad():
        before = method.student(*batch.inputs)
        moved = tuple(
            torch.cat([t[:3], (t[3:] + 0.3).clamp(0, 1)]) if t.is_floating_point() else t
            for t in batch.inputs
        )
        after = method.student(*moved)
    for b, a in zip(before, after, strict=True):
        torch.testing.assert_close(a[:3], b[:3])
        assert (a[3] - b[3]).abs().max() > 1e-4


@pytest.mark.parametrize("name", METHODS)
def test_student_runs_per_image_under_vmap(name):
    """What the DP engine does: per-image forward and per-image gradients with torch.func."""
    method = build(name, dp=True)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in method.modules())
    g = torch.Generator().manual_seed(0)
    batch = method.prepare(make_synthetic(4, SIZE, seed=3).images, g)
    outputs = method.student(*batch.inputs)
    per_image = vmap(lambda *x: method.student(*(t.unsqueeze(0) for t in x)))(*batch.inputs)
    for full, single in zip(outputs, per_image, strict=True):
        torch.testing.assert_close(single.squeeze(1), full, atol=1e-5, rtol=1e-4)

    params = {k: v.detach() for k, v in method.named_parameters() if v.requires_grad}

    def loss(p, *x):
        out = functional_call(method, p, tuple(t.unsqueeze(0) for t in x))
        return sum(o.float().pow(2).mean() for o in out)

    in_dims = (None, *[0] * len(batch.inputs))
    grads = vmap(grad(loss), in_dims=in_dims)(params, *batch.inputs)
    for k, v in grads.items():
        assert v.shape == (4, *params[k].shape) and torch.isfinite(v).all(), k


def _state(method) -> dict[str, torch.Tensor]:
    """Everything that should move only in after_step: teachers, queues, centers."""
    out = {n: p.detach().clone() for n, p in method.named_parameters() if not p.requires_grad}
    out.update({n: b.clone() for n, b in method.named_buffers()
                if n.split(".")[-1] in ("queue", "queue_ptr", "center")})
    return out


@pytest.mark.parametrize("name", METHODS)
def test_momentum_queue_and_center_move_only_in_after_step(name):
    method = build(name).train()
    g = torch.Generator().manual_seed(0)
    start = _state(method)
    expected = {"moco": {"queue", "queue_ptr", "teacher"}, "byol": {"teacher"},
                "dino": {"center", "teacher"}, "mae": set()}[name]
    assert {n.split(".")[0] for n in start} == expected
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.5)
    loss = method.loss(make_synthetic(16, SIZE, seed=4).images, g)
    opt.zero_grad()
    loss.backward()
    opt.step()
    for n, v in _state(method).items():
        torch.testing.assert_close(v, start[n], msg=f"{n} moved before after_step")
    method.after_step(0.5)
    for n, v in _state(method).items():
        assert not torch.equal(v, start[n]), f"{n} did not move in after_step"
    if name == "moco":
        assert int(method.queue_ptr) == 16


def test_dp_exactness_flags():
    """Which methods' DP epsilon is a guarantee (tests/defences/test_dp_sgd.py shows why)."""
    from leakprobe.training.ssl.base import METHODS as REGISTRY

    list_methods()
    for name in ("simclr", "moco"):
        assert REGISTRY[name].dp_per_image_exact is False
        assert REGISTRY[name].dp_caveat.startswith(("SimCLR:", "MoCo:"))
    for name in ("byol", "dino", "mae"):
        assert REGISTRY[name].dp_per_image_exact is True and REGISTRY[name].dp_caveat is None


def test_dino_exports_the_teacher_backbone():
    method = build("dino")
    assert method.export_backbone() is method.teacher[0]
    student = build("dino", export="student")
    assert student.export_backbone() is student.backbone


def test_dino_local_crops_honour_the_crop_scale():
    """SCSR narrows crop_scale: the local crops must stay inside it."""
    method = build("dino", n_local=2)
    method.augmentation = SSLAugmentation(size=SIZE, crop_scale=(0.5, 1.0))
    local = method.local_augmentation()
    assert local.size == SIZE // 2
    assert 0.5 <= local.crop_scale[0] <= local.crop_scale[1] <= 1.0
    batch = method.prepare(torch.rand(2, 3, SIZE, SIZE), torch.Generator().manual_seed(0))
    assert batch.inputs[1].shape == (2, 2, 3, SIZE // 2, SIZE // 2)


def test_mae_masks_are_random_per_image_and_seeded():
    method = build("mae")
    images = torch.rand(4, 3, SIZE, SIZE)
    a = method.prepare(images, torch.Generator().manual_seed(0))
    b = method.prepare(images, torch.Generator().manual_seed(0))
    _, keep, restore = a.inputs
    assert keep.shape == (4, 4)  # 16 patches at 16 px, 25% visible
    assert torch.equal(keep, b.inputs[1])
    assert len({tuple(k.sort().values.tolist()) for k in keep}) > 1
    mask = a.extras["mask"]
    assert mask.sum(1).eq(12).all()
    assert mask.gather(1, keep).eq(0).all()  # visible patches are not scored


@pytest.mark.parametrize(
    "name, kwargs, match",
    [("moco", {"bogus": 1}, "bad options"), ("byol", {"temperature": 0.1}, "bad options"),
     ("dino", {"nlocal": 2}, "bad options"), ("mae", {"proj_dim": 8}, "bad options"),
     ("moco", {"temperature": 0.0}, "temperature"), ("byol", {"momentum": 1.5}, "momentum"),
     ("dino", {"export": "both"}, "export"), ("dino", {"n_local": -1}, "n_local"),
     ("mae", {"mask_ratio": 1.0}, "mask_ratio")],
)
def test_bad_options_are_refused(name, kwargs, match):
    with pytest.raises(LeakprobeError, match=match):
        build(name, **kwargs)


def test_mae_refuses_a_resnet():
    with pytest.raises(LeakprobeError, match="ViT"):
        create_method("mae", create_model("resnet-tiny"), SSLAugmentation(size=SIZE))


@pytest.mark.parametrize("name", ["moco", "dino"])
def test_resume_restores_teacher_queue_and_center(name, tmp_path):
    """An interrupted run resumed from its checkpoint ends where a straight run ends."""
    from leakprobe.training.trainer import Trainer

    images = make_synthetic(32, SIZE, seed=5).images
    config = TrainConfig(epochs=3, batch_size=16, lr=2e-3, seed=0, device="cpu")

    def run(stop_at, resume, folder):
        method = build(name)
        trainer = Trainer(method, config, folder, callbacks=[lambda e, m: e == stop_at])
        trainer.fit(images, method.loss, resume=resume)
        return method

    run(1, False, tmp_path / "a")
    resumed = run(3, True, tmp_path / "a")
    straight = run(3, False, tmp_path / "b")
    for (n, a), b in zip(resumed.state_dict().items(), straight.state_dict().values(),
                         strict=True):
        torch.testing.assert_close(a, b, msg=n)


@pytest.mark.parametrize("name", METHODS)
def test_trains_under_dp_sgd(name):
    """The DP engine runs each method per image (BatchNorm swapped for GroupNorm)."""
    from leakprobe.training.dp import DPConfig, batchnorm_modules

    arch, akw = ARCH[name]
    recipe = EncoderRecipe(name, arch, akw, (0.08, 1.0), KWARGS[name])
    config = TrainConfig(epochs=2, batch_size=16, lr=1e-3, seed=0, device="cpu",
                         dp=DPConfig(noise_multiplier=1.0))
    backbone, history = train_ssl_encoder(make_synthetic(32, SIZE, seed=6).images, recipe,
                                          config)
    assert len(history) == 2 and all(math.isfinite(h) for h in history)
    assert not batchnorm_modules(backbone)
