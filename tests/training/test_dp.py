"""DP-SGD engine: per-image clipping against a manual loop, noise, accounting, BatchNorm."""

import json
import math

import pytest
import torch
from torch import nn

from leakprobe.augment import SSLAugmentation
from leakprobe.errors import LeakprobeError
from leakprobe.models import create_model
from leakprobe.training.dp import (
    DPSGD,
    DPConfig,
    batchnorm_modules,
    check_dp_compatible,
    replace_batchnorm,
)
from leakprobe.training.ssl.base import SSLBatch, SSLMethod, create_method
from leakprobe.training.trainer import TrainConfig, Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class ToyMethod(SSLMethod):
    """Per-image regression toward a fixed target with an in-batch mean term (images meet)."""

    def __init__(self) -> None:
        super().__init__(nn.Linear(6, 3), SSLAugmentation(8))
        self.head = nn.Linear(3, 2)
        self.frozen = nn.Linear(2, 2).requires_grad_(False)

    def prepare(self, images, generator):
        return SSLBatch((images.flatten(1)[:, :6],))

    def student(self, x):
        return (self.frozen(self.head(torch.tanh(self.backbone(x)))),)

    def objective(self, outputs, batch):
        z = outputs[0]
        return ((z - 1.0) ** 2).sum(1).mean() + 0.3 * z.mean(0).pow(2).sum()


def _manual_clipped(method, images, clip):
    """Per-image gradients by a Python loop over images, clipped: the reference."""
    batch = method.prepare(images, torch.Generator())
    outs = tuple(o.detach().requires_grad_(True) for o in method.student(*batch.inputs))
    b = images.shape[0]
    grads_out = [g * b for g in torch.autograd.grad(method.objective(outs, batch), outs)]
    params = [p for p in method.parameters() if p.requires_grad]
    per_image, norms = [], []
    for i in range(b):
        out_i = method.student(*(x[i:i + 1] for x in batch.inputs))
        contrib = sum((o * g[i:i + 1]).sum() for o, g in zip(out_i, grads_out, strict=True))
        g_i = torch.autograd.grad(contrib, params)
        norm = torch.sqrt(sum((g ** 2).sum() for g in g_i))
        norms.append(norm)
        factor = min(1.0, clip / (float(norm) + 1e-6))
        per_image.append([g * factor for g in g_i])
    summed = [torch.stack(parts).sum(0) for parts in zip(*per_image, strict=True)]
    return summed, torch.stack(norms)


def test_per_image_clipping_matches_a_manual_loop():
    torch.manual_seed(0)
    method = ToyMethod()
    images = torch.randn(10, 1, 2, 4) * 3
    clip = 0.5
    engine = DPSGD(method, DPConfig(noise_multiplier=0.0, max_grad_norm=clip, chunk_size=3),
                   n_train=100, batch_size=10, epochs=1)
    ref, ref_norms = _manual_clipped(method, images, clip)
    batch = method.prepare(images, torch.Generator())
    outs = tuple(o.detach().requires_grad_(True) for o in method.student(*batch.inputs))
    grads_out = tuple(g * 10 for g in torch.autograd.grad(method.objective(outs, batch), outs))
    per = engine.per_image_grads(batch.inputs, grads_out)
    assert set(per) == {"backbone.weight", "backbone.bias", "head.weight", "head.bias"}
    norms = torch.stack([g.flatten(1).norm(dim=1) for g in per.values()], 1).norm(dim=1)
    torch.testing.assert_close(norms, ref_norms)
    assert (norms > clip).sum() >= 5  # clipping is really exercised
    summed, _ = engine.clipped_sum(batch.inputs, grads_out)
    trainable = [n for n, p in method.named_parameters() if p.requires_grad]
    for name, r in zip(trainable, ref, strict=True):
        torch.testing.assert_close(summed[name], r)
    # every clipped term has norm <= C, so the sum has norm <= B * C
    total = torch.sqrt(sum((s ** 2).sum() for s in summed.values()))
    assert total <= 10 * clip + 1e-5
    # the per-image gradients add up to the ordinary batch gradient (times B)
    method.zero_grad()
    method.loss(images, torch.Generator()).backward()
    for name in trainable:
        grad = dict(method.named_parameters())[name].grad
        torch.testing.assert_close(per[name].sum(0) / 10, grad)


def test_no_noise_gives_exactly_the_clipped_mean_and_noise_is_seeded():
    torch.manual_seed(0)
    method = ToyMethod()
    images = torch.randn(8, 1, 2, 4) * 3
    ref, _ = _manual_clipped(method, images, 0.2)
    engine = DPSGD(method, DPConfig(noise_multiplier=0.0, max_grad_norm=0.2), 80, 8, 1)
    engine.step(images, torch.Generator().manual_seed(0))
    params = [p for p in method.parameters() if p.requires_grad]
    for p, r in zip(params, ref, strict=True):
        torch.testing.assert_close(p.grad, r / 8)
    assert method.frozen.weight.grad is None

    def noisy(seed):
        eng = DPSGD(method, DPConfig(noise_multiplier=2.0, max_grad_norm=0.2), 80, 8, 1)
        eng.step(images, torch.Generator().manual_seed(seed))
        return [p.grad.clone() for p in params]

    a, b, c = noisy(1), noisy(1), noisy(2)
    for x, y, z in zip(a, b, c, strict=True):
        torch.testing.assert_close(x, y)
        assert not torch.allclose(x, z)
    # noise std per coordinate is sigma * C / B = 0.05
    diff = torch.cat([(x - r / 8).flatten() for x, r in zip(a, ref, strict=True)])
    assert 0.03 < float(diff.std()) < 0.07


def test_epsilon_grows_with_steps_and_target_epsilon_is_met():
    method = ToyMethod()
    engine = DPSGD(method, DPConfig(noise_multiplier=1.0, delta=1e-5), 1000, 50, 10)
    eps = [engine.epsilon(s) for s in (0, 1, 10, 100, 200)]
    assert eps[0] == 0.0
    assert all(a < b for a, b in zip(eps[:-1], eps[1:], strict=True))
    assert 3 < eps[-1] < 8  # RDP, q=0.05, sigma=1, 200 steps: about 5.4
    target = DPSGD(method, DPConfig(noise_multiplier=None, target_epsilon=2.0), 1000, 50, 10)
    assert target.noise_multiplier > 0.5
    assert target.epsilon(target.total_steps) == pytest.approx(2.0, abs=0.05)
    prv = DPSGD(method, DPConfig(noise_multiplier=1.0, accountant="prv"), 1000, 50, 10)
    assert prv.epsilon(200) == pytest.approx(eps[-1], rel=0.25)
    free = DPSGD(method, DPConfig(noise_multiplier=0.0), 1000, 50, 10)
    assert math.isinf(free.epsilon(5)) and free.summary(5)["epsilon"] is None


def test_trainer_counts_steps_and_resume_keeps_the_accountant(tmp_path):
    data = torch.randn(40, 1, 2, 4)

    def run(stop_at, resume):
        torch.manual_seed(0)
        method = ToyMethod()
        config = TrainConfig(epochs=4, batch_size=16, device="cpu",
                             dp=DPConfig(noise_multiplier=1.0))
        trainer = Trainer(method, config, tmp_path,
                          callbacks=[lambda epoch, m: epoch == stop_at])
        trainer.fit(data, method.loss, resume=resume)
        return method, trainer.dp_engine

    _, first = run(2, False)
    assert first.steps == 4  # 40 // 16 = 2 steps per epoch
    resumed, eng = run(4, True)
    assert eng.steps == 8 and eng.sample_rate == 0.4
    for p in tmp_path.iterdir():
        p.unlink()
    straight, eng2 = run(4, False)
    assert eng2.epsilon() == eng.epsilon()
    torch.testing.assert_close(resumed.head.weight, straight.head.weight)


def test_batchnorm_is_rejected_with_the_fix_and_replaced():
    backbone = create_model("resnet-tiny", input_size=16)
    method = create_method("simclr", backbone, SSLAugmentation(16), proj_dim=8)
    with pytest.raises(LeakprobeError, match="BatchNorm.*GroupNorm"):
        DPSGD(method, DPConfig(), 10, 5, 1)
    with pytest.raises(LeakprobeError, match="prepare/student/objective"):
        DPSGD(nn.Linear(2, 2), DPConfig(), 10, 5, 1)
    assert batchnorm_modules(method)
    replace_batchnorm(method)
    assert not batchnorm_modules(method)
    check_dp_compatible(method)
    norms = [m for m in method.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and all(m.num_channels % m.num_groups == 0 for m in norms)
    for bad in ({"max_grad_norm": 0}, {"delta": 1.5}, {"accountant": "moments"},
                {"noise_multiplier": None}, {"noise_multiplier": -1}):
        with pytest.raises(LeakprobeError):
            DPConfig(**bad)


def test_dp_training_exports_a_groupnorm_encoder_that_reloads(tmp_path):
    from leakprobe.data.splits import make_split
    from leakprobe.data.synthetic import make_synthetic
    from leakprobe.targets.loading import load_encoder
    from leakprobe.training.encoder import EncoderRecipe, train_target_encoder

    data = make_synthetic(48, 16, 0)
    split = make_split(data, 24, seed=0)
    config = TrainConfig(epochs=2, batch_size=12, device="cpu",
                         dp=DPConfig(noise_multiplier=1.0, max_grad_norm=1.0),
                         snapshot_epochs=(1,))
    recipe = EncoderRecipe("simclr", "resnet-tiny", {}, (0.08, 1.0), {"proj_dim": 16})
    paths = train_target_encoder(split, recipe, config, tmp_path)
    meta = json.loads(paths["model"].read_text())
    assert meta["arch_kwargs"]["norm"] == "group"
    dp = meta["dp"]
    assert set(dp) >= {"epsilon", "delta", "noise_multiplier", "max_grad_norm", "steps",
                       "sample_rate", "accountant", "clipping_unit"}
    assert dp["steps"] == 4 and dp["sample_rate"] == 0.5 and dp["epsilon"] > 0
    snap = json.loads((paths["snapshots"][1] / "model.json").read_text())
    assert snap["dp"]["steps"] == 2 and snap["dp"]["epsilon"] < dp["epsilon"]
    for key in ("weights", "torchscript"):
        target = load_encoder(str(paths[key]), device="cpu")
        assert target.embed(data.images[:3]).shape == (3, 128)
    a = load_encoder(str(paths["weights"]), device="cpu").embed(data.images[:3])
    b = load_encoder(str(paths["torchscript"]), device="cpu").embed(data.images[:3])
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
