"""DP-SGD engine: per-image clipping against a manual loop, Poisson sampling, private noise,
accounting and the epsilon record, BatchNorm."""

import json
import math
import shutil

import pytest
import torch
from torch import nn

from leakprobe.augment import SSLAugmentation
from leakprobe.errors import LeakprobeError
from leakprobe.models import create_model
from leakprobe.models.heads import mlp_head
from leakprobe.training.dp import (
    DPSGD,
    DPConfig,
    batchnorm_modules,
    check_dp_compatible,
    noise_for_epsilon,
    poisson_sample,
    replace_batchnorm,
)
from leakprobe.training.dp_record import LEGACY_CAVEAT, dp_epsilon, epsilon_text
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


class ExactToy(ToyMethod):
    """ToyMethod without the in-batch term: each image's loss depends on that image alone."""

    dp_per_image_exact = True

    def objective(self, outputs, batch):
        return ((outputs[0] - 1.0) ** 2).sum(1).mean()


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


def test_no_noise_gives_exactly_the_clipped_sum_over_b_and_noise_is_not_reproducible():
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
    # a Poisson batch of 5 images is still divided by the expected batch size 8
    ref5, _ = _manual_clipped(method, images[:5], 0.2)
    engine.step(images[:5], torch.Generator().manual_seed(0))
    for p, r in zip(params, ref5, strict=True):
        torch.testing.assert_close(p.grad, r / 8)

    def noisy(seed):
        eng = DPSGD(method, DPConfig(noise_multiplier=2.0, max_grad_norm=0.2), 80, 8, 1)
        eng.step(images, torch.Generator().manual_seed(seed))
        return [p.grad.clone() for p in params]

    # the same training seed does not give the same noise: it comes from OS entropy
    a, b = noisy(1), noisy(1)
    for x, y in zip(a, b, strict=True):
        assert not torch.allclose(x, y)
    # noise std per coordinate is sigma * C / B = 0.05
    diff = torch.cat([(x - r / 8).flatten() for x, r in zip(a, ref, strict=True)])
    assert 0.03 < float(diff.std()) < 0.07


def test_an_empty_poisson_batch_is_a_noise_only_step():
    torch.manual_seed(0)
    method = ToyMethod()
    engine = DPSGD(method, DPConfig(noise_multiplier=1.0, max_grad_norm=0.5), 80, 8, 1)
    assert engine.step(torch.zeros(0, 1, 2, 4), torch.Generator()) is None
    grads = {n: p.grad for n, p in method.named_parameters() if p.requires_grad}
    assert set(grads) == {"backbone.weight", "backbone.bias", "head.weight", "head.bias"}
    noise = torch.cat([g.flatten() for g in grads.values()])
    assert float(noise.abs().min()) > 0  # pure noise, sigma C / B = 0.0625 per coordinate
    assert 0.03 < float(noise.std()) < 0.1
    assert engine.steps == 1 and engine.last_norms.numel() == 0


def test_poisson_sampling_takes_each_image_with_probability_q():
    g = torch.Generator().manual_seed(0)
    sizes, hits = [], torch.zeros(200)
    for _ in range(400):
        idx = poisson_sample(200, 0.1, g)
        assert torch.equal(idx, idx.unique())  # no image twice in a batch
        sizes.append(len(idx))
        hits[idx] += 1
    assert abs(sum(sizes) / len(sizes) - 20) < 1  # expected batch size q N = 20
    assert min(sizes) < 14 and max(sizes) > 26  # variable: binomial(200, 0.1)
    assert float((hits / 400 - 0.1).abs().max()) < 0.06
    assert len(poisson_sample(30, 1.0, g)) == 30


def test_trainer_uses_poisson_batches_under_dp(monkeypatch):
    sizes = []
    real_step = DPSGD.step

    def step(self, images, generator):
        sizes.append(images.shape[0])
        return real_step(self, images, generator)

    monkeypatch.setattr(DPSGD, "step", step)
    torch.manual_seed(0)
    method = ToyMethod()
    config = TrainConfig(epochs=5, batch_size=10, device="cpu",
                         dp=DPConfig(noise_multiplier=1.0))
    trainer = Trainer(method, config)
    trainer.fit(torch.randn(60, 1, 2, 4), method.loss)
    assert len(sizes) == 30 and trainer.dp_engine.steps == 30  # N // B steps per epoch
    assert len(set(sizes)) > 3 and 7 < sum(sizes) / len(sizes) < 13
    summary = trainer.dp_engine.summary()
    assert summary["sampling"] == "poisson" and summary["sample_rate"] == 10 / 60
    assert summary["expected_batch_size"] == 10


def test_epsilon_grows_with_steps_and_target_epsilon_is_met():
    method = ToyMethod()
    engine = DPSGD(method, DPConfig(noise_multiplier=1.0, delta=1e-5), 1000, 50, 10)
    eps = [engine.epsilon(s) for s in (0, 1, 10, 100, 200)]
    assert eps[0] == 0.0
    assert all(a < b for a, b in zip(eps[:-1], eps[1:], strict=True))
    assert 3 < eps[-1] < 8  # RDP, q=0.05, sigma=1, 200 steps: about 5.4
    target = DPSGD(method, DPConfig(noise_multiplier=None, target_epsilon=2.0), 1000, 50, 10)
    assert target.noise_multiplier > 0.5 and target.sample_rate == 0.05  # the Poisson rate
    assert target.noise_multiplier == noise_for_epsilon(2.0, 1e-5, 0.05, 200)
    assert target.epsilon(target.total_steps) == pytest.approx(2.0, abs=0.05)
    prv = DPSGD(method, DPConfig(noise_multiplier=1.0, accountant="prv"), 1000, 50, 10)
    assert prv.epsilon(200) == pytest.approx(eps[-1], rel=0.25)
    free = DPSGD(method, DPConfig(noise_multiplier=0.0), 1000, 50, 10)
    assert math.isinf(free.epsilon(5)) and free.summary(5)["epsilon"] is None


def test_epsilon_is_a_guarantee_only_for_exact_methods():
    exact = DPSGD(ExactToy(), DPConfig(noise_multiplier=1.0), 1000, 50, 10).summary(200)
    assert exact["exact_per_image"] and exact["caveat"] is None
    assert exact["epsilon"] == exact["epsilon_nominal"] and 3 < exact["epsilon"] < 8
    assert epsilon_text(exact) == f"{exact['epsilon']:.3g}"
    loose = DPSGD(ToyMethod(), DPConfig(noise_multiplier=1.0), 1000, 50, 10).summary(200)
    assert not loose["exact_per_image"] and loose["epsilon"] is None
    assert loose["epsilon_nominal"] == exact["epsilon_nominal"]
    assert "ToyMethod" in loose["caveat"] and "not a guarantee" in loose["caveat"]
    nominal = f"{loose['epsilon_nominal']:.3g}"
    assert epsilon_text(loose) == f"none (nominal {nominal}: {loose['caveat']})"
    assert epsilon_text(loose, detail=False) == f"none (nominal {nominal}, not a guarantee)"
    free = DPSGD(ExactToy(), DPConfig(noise_multiplier=0.0), 1000, 50, 10).summary(5)
    assert free["epsilon"] is None and free["epsilon_nominal"] is None
    assert epsilon_text(free) == "inf (no noise)"
    # nothing in the record regenerates the noise
    assert "seed" not in json.dumps({k: v for k, v in exact.items() if k != "noise_seed"})
    # a record from before these keys: its epsilon is read as nominal
    old = dp_epsilon({"epsilon": 68.1, "delta": 1e-5, "exact_per_image": True})
    assert old == {"epsilon": None, "epsilon_nominal": 68.1, "caveat": LEGACY_CAVEAT}
    assert dp_epsilon(None) is None and epsilon_text(None) == "-"


def test_resume_under_dp_keeps_batches_and_accountant_but_draws_fresh_noise(tmp_path):
    data = torch.randn(40, 1, 2, 4)

    def run(folder, stop_at, resume, noise=1.0):
        torch.manual_seed(0)
        method = ToyMethod()
        config = TrainConfig(epochs=4, batch_size=16, device="cpu",
                             dp=DPConfig(noise_multiplier=noise))
        trainer = Trainer(method, config, folder, callbacks=[lambda epoch, m: epoch == stop_at])
        trainer.fit(data, method.loss, resume=resume)
        return method, trainer.dp_engine

    # noise 0: batches (Poisson masks) and augmentations follow the checkpointed generator,
    # so a resumed run is bit-identical to an uninterrupted one
    run(tmp_path / "q", 2, False, noise=0.0)
    resumed0, _ = run(tmp_path / "q", 4, True, noise=0.0)
    straight0, _ = run(tmp_path / "r", 4, False, noise=0.0)
    for a, b in zip(resumed0.parameters(), straight0.parameters(), strict=True):
        torch.testing.assert_close(a, b)

    _, first = run(tmp_path / "a", 2, False)
    assert first.steps == 4  # 40 // 16 = 2 steps per epoch
    state = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    assert set(state) == {"model", "optimizer", "schedule", "generator", "epoch", "history",
                          "config"}  # no noise generator state
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    resumed, eng = run(tmp_path / "a", 4, True)
    assert eng.steps == 8 and eng.sample_rate == 0.4
    again, _ = run(tmp_path / "b", 4, True)  # the same checkpoint resumed twice
    straight, eng2 = run(tmp_path / "c", 4, False)
    assert eng2.epsilon() == eng.epsilon() and eng2.summary() == eng.summary()
    # the noise after resume is fresh: not a function of anything recorded
    assert not torch.allclose(resumed.head.weight, again.head.weight)
    assert not torch.allclose(resumed.head.weight, straight.head.weight)


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
    # a head's BatchNorm1d sees (N, C) features: one group (a LayerNorm), not one channel per
    # group, which would output its bias alone, the same for every image
    head = replace_batchnorm(mlp_head(8, 32, 4))
    assert head[1].num_groups == 1
    out = head(torch.randn(3, 8))
    assert float((out[0] - out[1]).abs().max()) > 1e-3
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
    assert set(dp) >= {"epsilon", "epsilon_nominal", "caveat", "delta", "noise_multiplier",
                       "max_grad_norm", "steps", "sample_rate", "accountant", "clipping_unit",
                       "exact_per_image", "sampling"}
    assert dp["steps"] == 4 and dp["sample_rate"] == 0.5 and dp["sampling"] == "poisson"
    # SimCLR: in-batch negatives, so the accountant's number is nominal, not a guarantee
    assert dp["epsilon"] is None and dp["epsilon_nominal"] > 0 and not dp["exact_per_image"]
    assert dp["caveat"].startswith("SimCLR: each image is a negative")
    snap = json.loads((paths["snapshots"][1] / "model.json").read_text())
    assert snap["dp"]["steps"] == 2 and snap["dp"]["epsilon_nominal"] < dp["epsilon_nominal"]
    assert snap["dp"]["epsilon"] is None
    for key in ("weights", "torchscript"):
        target = load_encoder(str(paths[key]), device="cpu")
        assert target.embed(data.images[:3]).shape == (3, 128)
    a = load_encoder(str(paths["weights"]), device="cpu").embed(data.images[:3])
    b = load_encoder(str(paths["torchscript"]), device="cpu").embed(data.images[:3])
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
