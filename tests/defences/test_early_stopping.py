"""Early stopping: one run, encoders saved at the chosen epochs, each loadable and distinct."""

import json

import pytest
import torch

from leakprobe.data.splits import make_split
from leakprobe.data.synthetic import make_synthetic
from leakprobe.defences.early_stopping import early_stopping_config
from leakprobe.errors import LeakprobeError
from leakprobe.targets.loading import load_encoder
from leakprobe.training.encoder import EncoderRecipe, train_target_encoder
from leakprobe.training.trainer import TrainConfig
from leakprobe.workflows.defend import plan_settings


def test_snapshots_are_saved_loadable_and_differ(tmp_path):
    data = make_synthetic(48, 16, 0)
    split = make_split(data, 24, seed=0)
    config = early_stopping_config(TrainConfig(batch_size=12, device="cpu"), [3, 1])
    assert config.epochs == 3 and config.snapshot_epochs == (1, 3)
    recipe = EncoderRecipe("simclr", "resnet-tiny", {}, (0.08, 1.0), {"proj_dim": 16})
    paths = train_target_encoder(split, recipe, config, tmp_path)
    assert sorted(paths["snapshots"]) == [1, 3]
    embeddings = {}
    for epoch, folder in paths["snapshots"].items():
        assert folder == tmp_path / "snapshots" / f"epoch_{epoch:04d}"
        for name in ("encoder.safetensors", "encoder.torchscript.pt", "model.json",
                     "split.json"):
            assert (folder / name).is_file()
        meta = json.loads((folder / "model.json").read_text())
        assert meta["epoch"] == epoch and len(meta["loss_history"]) == epoch
        assert meta["recipe"]["crop_scale"] == [0.08, 1.0] and "utility" not in meta
        embeddings[epoch] = load_encoder(str(folder / "encoder.safetensors"),
                                         device="cpu").embed(data.images[:4])
        scripted = load_encoder(str(folder / "encoder.torchscript.pt"), device="cpu")
        torch.testing.assert_close(scripted.embed(data.images[:4]), embeddings[epoch],
                                   atol=1e-4, rtol=1e-4)
    assert (embeddings[1] - embeddings[3]).abs().max() > 1e-3
    final = load_encoder(str(paths["weights"]), device="cpu").embed(data.images[:4])
    torch.testing.assert_close(final, embeddings[3])
    # resuming a finished run keeps the snapshots
    again = train_target_encoder(split, recipe, config, tmp_path, resume=True)
    assert sorted(again["snapshots"]) == [1, 3]


def test_epoch_validation():
    base = TrainConfig(epochs=5)
    for bad in ([], [0, 2], [1.5], [None]):
        with pytest.raises(LeakprobeError):
            early_stopping_config(base, bad)
    with pytest.raises(LeakprobeError, match="snapshot epochs"):
        TrainConfig(epochs=5, snapshot_epochs=(2, 6))
    settings = plan_settings("early-stopping", [20, 5, 10], EncoderRecipe(), base)
    assert [s.setting["epoch"] for s in settings] == [5, 10, 20]
    assert {s.config.epochs for s in settings} == {20}


def test_a_kill_before_the_checkpoint_still_leaves_every_snapshot(tmp_path, monkeypatch):
    """Snapshots are written before the epoch's checkpoint, so a resume never skips one."""
    from leakprobe.training.trainer import Trainer

    split = make_split(make_synthetic(40, 16, seed=0), 20, seed=0)
    config = TrainConfig(epochs=2, batch_size=10, device="cpu", snapshot_epochs=(1, 2))
    real_save = Trainer._save_checkpoint

    def die_at_epoch_1(self, optimizer, schedule, g, epoch):
        if epoch == 1:
            raise KeyboardInterrupt("killed")
        real_save(self, optimizer, schedule, g, epoch)

    monkeypatch.setattr(Trainer, "_save_checkpoint", die_at_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        train_target_encoder(split, EncoderRecipe(arch="resnet-tiny"), config, tmp_path)
    assert (tmp_path / "snapshots" / "epoch_0001" / "encoder.safetensors").is_file()
    monkeypatch.setattr(Trainer, "_save_checkpoint", real_save)
    paths = train_target_encoder(split, EncoderRecipe(arch="resnet-tiny"), config, tmp_path,
                                 resume=True)
    assert sorted(paths["snapshots"]) == [1, 2]
