"""DP-SGD as a defence: the recipe change, and clipping on a real SSL method."""

import pytest
import torch

from leakprobe.data.synthetic import make_synthetic
from leakprobe.defenses.dp_sgd import dp_train_config
from leakprobe.defenses.sweep import plan_settings
from leakprobe.errors import LeakprobeError
from leakprobe.training.encoder import EncoderRecipe, _ssl_trainer, dp_recipe
from leakprobe.training.trainer import TrainConfig


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
