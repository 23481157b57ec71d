"""DP-SGD as a defence: the recipe change, clipping on real SSL methods, and what epsilon
means for each method (the sensitivity of one step's clipped sum, checked numerically)."""

import json

import pytest
import torch

from leakprobe.data.synthetic import make_synthetic
from leakprobe.defences.dp_sgd import dp_train_config
from leakprobe.errors import LeakprobeError
from leakprobe.training.dp import DPSGD, DPConfig, _accountant_epsilon
from leakprobe.training.encoder import EncoderRecipe, _ssl_trainer, build_ssl_method, dp_recipe
from leakprobe.training.ssl.base import SSLBatch
from leakprobe.training.trainer import TrainConfig
from leakprobe.workflows.defend import plan_settings


def test_dp_config_and_settings():
    base = TrainConfig(epochs=2, amp="auto")
    cfg = dp_train_config(base, noise_multiplier=1.5, max_grad_norm=0.5)
    assert cfg.dp.noise_multiplier == 1.5 and cfg.dp.max_grad_norm == 0.5 and not cfg.amp
    assert base.dp is None
    with pytest.raises(LeakprobeError, match="exactly one"):
        dp_train_config(base)
    with pytest.raises(LeakprobeError, match="exactly one"):
        dp_train_config(base, noise_multiplier=1.0, target_epsilon=3.0)
    settings = plan_settings("dp", [None, 0.5, 2], EncoderRecipe(), base)
    assert [s.name for s in settings] == ["no_dp", "dp_noise_0.5", "dp_noise_2"]
    assert settings[0].config.dp is None and settings[2].config.dp.noise_multiplier == 2
    eps = plan_settings("dp-epsilon", [8], EncoderRecipe(), base)[0]
    assert eps.config.dp.target_epsilon == 8 and eps.config.dp.noise_multiplier is None
    with pytest.raises(LeakprobeError, match="unknown defence"):
        plan_settings("dropout", [1], EncoderRecipe(), base)


def test_dp_recipe_swaps_batchnorm_only_where_present():
    assert dp_recipe(EncoderRecipe(arch="resnet-tiny")).arch_kwargs == {"norm": "group"}
    assert dp_recipe(EncoderRecipe(arch="vit-tiny")).arch_kwargs == {}
    explicit = EncoderRecipe(arch="resnet-tiny", arch_kwargs={"norm": "batch"})
    images = make_synthetic(16, 16, 0).images
    with pytest.raises(LeakprobeError, match="GroupNorm"):
        _ssl_trainer(images, explicit, TrainConfig(epochs=1, dp=dp_train_config(
            TrainConfig(), noise_multiplier=1.0).dp), None, None)


@pytest.mark.parametrize("method", ["simclr", "byol"])
def test_simclr_and_byol_steps_are_clipped_per_image(method):
    from leakprobe.training.ssl.base import list_methods

    if method not in list_methods():
        pytest.skip(f"{method} not available")
    images = make_synthetic(16, 16, 0).images
    clip = 0.01  # far below the gradient norms: every image is clipped
    config = dp_train_config(TrainConfig(epochs=1, batch_size=16, device="cpu"),
                             noise_multiplier=0.0, max_grad_norm=clip)
    _, m, trainer = _ssl_trainer(images, EncoderRecipe(method, "resnet-tiny"), config, None,
                                 None)
    trainer.fit(images, m.loss)
    engine = trainer.dp_engine
    assert engine.steps == 1 and engine.last_norms.shape == (16,)
    assert float(engine.last_norms.min()) > 10 * clip
    # noise 0: the update direction is the clipped mean, of norm <= C
    grads = [p.grad for p in m.parameters() if p.grad is not None]
    total = torch.sqrt(sum((g ** 2).sum() for g in grads))
    assert 0 < float(total) <= clip + 1e-6


# -- what the epsilon means: the sensitivity of one step's clipped sum, numerically ---------

SIZE, B, CLIP = 16, 6, 0.01  # CLIP far below every per-image norm: every term is clipped
TINY = {"simclr": ("resnet-tiny", {}, {"proj_dim": 16, "hidden_dim": 32}),
        "moco": ("resnet-tiny", {}, {"proj_dim": 16, "hidden_dim": 32, "queue_size": 8}),
        "byol": ("resnet-tiny", {}, {"proj_dim": 16, "hidden_dim": 32}),
        "dino": ("resnet-tiny", {}, {"out_dim": 32, "hidden_dim": 32, "proj_dim": 16}),
        "mae": ("vit-tiny", {"depth": 1}, {"decoder_dim": 32, "decoder_depth": 1})}


def _engine(name: str, noise: float = 0.0):
    """A DP-ready method (the recipe ``train`` builds under DP), its engine and a batch."""
    torch.manual_seed(0)
    arch, akw, mkw = TINY[name]
    recipe = dp_recipe(EncoderRecipe(name, arch, akw, (0.08, 1.0), mkw), SIZE)
    method = build_ssl_method(recipe, SIZE, dp=True)
    engine = DPSGD(method, DPConfig(noise_multiplier=noise, max_grad_norm=CLIP), 60, B, 1)
    batch = method.prepare(make_synthetic(B, SIZE, 0).images, torch.Generator().manual_seed(0))
    return method, engine, batch


def _without(batch: SSLBatch, j: int) -> SSLBatch:
    """The neighbour batch without image j (add/remove neighbours, as Poisson sampling).

    The other images keep their augmentations, masks and teacher outputs: the coupling
    under which the sensitivity is measured (each image's randomness is its own).
    """
    keep = [i for i in range(B) if i != j]
    return SSLBatch(tuple(x[keep] for x in batch.inputs),
                    {k: v[keep] if v.dim() and v.shape[0] == B else v
                     for k, v in batch.extras.items()})


def _distance(a: dict, b: dict) -> float:
    return float(torch.sqrt(sum(((a[k] - b[k]) ** 2).sum() for k in a)))


@pytest.mark.parametrize("name", ["byol", "dino", "mae", "moco"])
def test_removing_one_image_moves_a_steps_clipped_sum_by_at_most_c(name):
    """For the exact methods (and MoCo within one step) the sensitivity is C."""
    _, engine, batch = _engine(name)
    full, norms, _ = engine.clipped_batch(batch)  # the engine's own step path, without noise
    assert float(norms.min()) > 10 * CLIP
    for j in range(B):
        d = _distance(full, engine.clipped_batch(_without(batch, j))[0])
        assert 0.99 * CLIP <= d <= CLIP + 1e-5, (j, d)
    record = engine.summary(10)
    if name == "moco":  # per image within a step, but see the queue test below
        assert record["epsilon"] is None and record["caveat"].startswith("MoCo:")
    else:
        assert record["exact_per_image"] and record["caveat"] is None
        assert record["epsilon"] == record["epsilon_nominal"] is None  # no noise
        assert _engine(name, noise=1.0)[1].summary(10)["epsilon"] > 0


def test_simclr_negatives_move_the_clipped_sum_by_more_than_c():
    """Why SimCLR's epsilon is only nominal: one image is a negative in every term."""
    _, engine, batch = _engine("simclr")
    full, _, _ = engine.clipped_batch(batch)
    worst = max(_distance(full, engine.clipped_batch(_without(batch, j))[0]) for j in range(B))
    assert worst > 1.2 * CLIP  # measured 1.41 C
    record = _engine("simclr", noise=1.0)[1].summary(10)
    assert not record["exact_per_image"] and record["epsilon"] is None
    assert record["epsilon_nominal"] > 0 and record["caveat"].startswith("SimCLR: each image")


def test_moco_queue_carries_one_image_into_every_term():
    """Why MoCo's epsilon is only nominal: an image's key, in the queue, moves every term of
    a later step (here one queue row becomes another image's key)."""
    _, engine, batch = _engine("moco")
    full, _, _ = engine.clipped_batch(batch)
    queue = batch.extras["queue"].clone()
    queue[0] = batch.extras["keys"][3, 0]
    moved = SSLBatch(batch.inputs, {**batch.extras, "queue": queue})
    assert _distance(full, engine.clipped_batch(moved)[0]) > 2 * CLIP  # measured 3.6 C


def test_dino_centre_is_frozen_under_dp():
    images = make_synthetic(12, SIZE, 1).images
    arch, akw, mkw = TINY["dino"]
    centres = {}
    for dp in (False, True):
        config = TrainConfig(epochs=1, batch_size=6, device="cpu", seed=0)
        if dp:
            config = dp_train_config(config, noise_multiplier=1.0, max_grad_norm=1.0)
        recipe = EncoderRecipe("dino", arch, akw, (0.08, 1.0), mkw)
        _, method, trainer = _ssl_trainer(images, recipe, config, None, None)
        trainer.fit(images, method.loss)
        centres[dp] = method.center
    assert float(centres[False].abs().max()) > 0  # the centre moves in plain training
    assert torch.equal(centres[True], torch.zeros_like(centres[True]))


def test_byol_model_json_records_a_guarantee(tmp_path):
    """BYOL end to end: ``model.json`` holds a guarantee, accounted at the Poisson rate."""
    from leakprobe.data.splits import make_split
    from leakprobe.training.encoder import train_target_encoder

    split = make_split(make_synthetic(48, SIZE, 0), 24, seed=0)
    config = dp_train_config(TrainConfig(epochs=1, batch_size=6, device="cpu"),
                             noise_multiplier=1.0)
    recipe = EncoderRecipe("byol", "resnet-tiny", {"width": 8}, (0.08, 1.0), TINY["byol"][2])
    paths = train_target_encoder(split, recipe, config, tmp_path)
    dp = json.loads(paths["model"].read_text())["dp"]
    assert dp["sample_rate"] == 0.25 and dp["steps"] == 4 and dp["sampling"] == "poisson"
    assert dp["exact_per_image"] and dp["caveat"] is None
    assert dp["epsilon"] == dp["epsilon_nominal"] == _accountant_epsilon("rdp", 1.0, 0.25, 4,
                                                                         1e-5)
