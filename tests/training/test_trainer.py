import pytest
import torch

from leakprobe.data.synthetic import make_synthetic
from leakprobe.training.encoder import EncoderRecipe, train_ssl_encoder
from leakprobe.training.trainer import TrainConfig, Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_simclr_loss_decreases():
    images = make_synthetic(64, 32, 0).images
    _, history = train_ssl_encoder(
        images, EncoderRecipe(arch="resnet-tiny"),
        TrainConfig(epochs=8, batch_size=32, lr=2e-3, device="cpu"),
    )
    assert history[-1] < history[0]


def test_resume_continues_from_the_checkpoint(tmp_path):
    data = torch.randn(32, 4)
    target = torch.randn(4, 1)

    def run(stop_at, resume):
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 1)
        trainer = Trainer(model, TrainConfig(epochs=4, batch_size=8, device="cpu"), tmp_path,
                          callbacks=[lambda epoch, m: epoch == stop_at])
        trainer.fit(data, lambda x, g: ((model(x) - x @ target) ** 2).mean(), resume=resume)
        return model, trainer.history

    run(2, resume=False)  # interrupted after epoch 2
    assert (tmp_path / "checkpoint.pt").exists()
    resumed, hist = run(4, resume=True)
    assert len(hist) == 4
    for p in tmp_path.iterdir():
        p.unlink()
    straight, hist2 = run(4, resume=False)
    torch.testing.assert_close(resumed.weight, straight.weight)


def test_dp_needs_an_ssl_method():
    from leakprobe.errors import LeakprobeError
    from leakprobe.training.dp import DPConfig

    model = torch.nn.Linear(4, 1)
    trainer = Trainer(model, TrainConfig(epochs=1, batch_size=8, device="cpu",
                                         dp=DPConfig(noise_multiplier=1.0)))
    with pytest.raises(LeakprobeError, match="prepare/student/objective"):
        trainer.fit(torch.randn(16, 4), lambda x, g: model(x).pow(2).mean())
