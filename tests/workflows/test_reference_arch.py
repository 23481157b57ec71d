"""Reference encoders of the target's own architecture (``--reference-arch file.py:factory``)
and from given weights (``--reference-init``): what trains, what is cached, what is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from leakprobe.data.synthetic import make_synthetic
from leakprobe.errors import LeakprobeError
from leakprobe.models import create_model
from leakprobe.training.encoder import EncoderRecipe, save_encoder
from leakprobe.training.trainer import TrainConfig
from leakprobe.workflows import references as refs_mod

NETS = '''
import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, width=8, dim=12):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.fc = nn.Linear(width, dim)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def tiny():
    return TinyNet()


def not_a_module():
    return 3


def feature_map():
    return nn.Conv2d(3, 4, 3)


def wrong_dim():
    net = TinyNet()
    net.embed_dim = 5
    return net
'''


@pytest.fixture
def nets(tmp_path: Path) -> Path:
    path = tmp_path / "nets.py"
    path.write_text(NETS)
    return path


@pytest.fixture(scope="module")
def population():
    return make_synthetic(40, 16, seed=3)


def _config(lr: float = 1e-3) -> TrainConfig:
    return TrainConfig(epochs=1, batch_size=16, lr=lr, amp="off", seed=0, device="cpu")


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in module.named_parameters()}


def test_a_factory_trains_references_of_its_architecture(nets, population, tmp_path,
                                                         one_torch_thread) -> None:
    spec = f"{nets}:tiny"
    refs = refs_mod.train_references(population, count=2, recipe=EncoderRecipe("simclr", spec),
                                     config=_config(), out_dir=tmp_path / "refs",
                                     n_population=8)
    module = refs.encoders[0].module
    assert type(module).__name__ == "TinyNet"
    assert {k: tuple(v.shape) for k, v in module.state_dict().items()} == {
        "conv.weight": (8, 3, 3, 3), "conv.bias": (8,), "fc.weight": (12, 8), "fc.bias": (12,)}
    assert refs.encoders[0].embed_dim == 12
    folders = sorted((tmp_path / "refs").glob("reference-*"))
    assert len(folders) == 2
    meta = json.loads((folders[0] / "model.json").read_text())
    assert meta["arch"] == f"{nets.resolve()}:tiny" and meta["input_size"] == 16
    assert not (folders[0] / "encoder.torchscript.pt").exists()  # safetensors only
    recipe = refs.description["recipe"]
    assert recipe["arch"] == spec and recipe["init"] is None
    # a factory a file records runs only when the user names it
    from leakprobe.targets.families import load_target

    with pytest.raises(LeakprobeError, match="weights of the factory architecture .*pass "
                                             "--arch"):
        load_target(str(folders[0] / "encoder.safetensors"), family="encoder", device="cpu")
    # cached; a changed factory file retrains
    again = refs_mod.train_references(population, count=2, recipe=EncoderRecipe("simclr", spec),
                                      config=_config(), out_dir=tmp_path / "refs",
                                      n_population=8)
    assert again.description["trained_now"] == 0
    nets.write_text(NETS.replace("dim=12", "dim=6"))
    changed = refs_mod.train_references(population, count=1,
                                        recipe=EncoderRecipe("simclr", spec), config=_config(),
                                        out_dir=tmp_path / "refs", n_population=8)
    assert changed.description["trained_now"] == 1 and changed.encoders[0].embed_dim == 6


def test_references_start_from_the_init_weights(population, tmp_path,
                                                one_torch_thread) -> None:
    torch.manual_seed(11)
    start = create_model("resnet-tiny", input_size=16)
    save_encoder(start, EncoderRecipe(), tmp_path / "pretrained", {})  # a train folder
    init = _params(start)
    recipe = EncoderRecipe("simclr", "resnet-tiny", init=str(tmp_path / "pretrained"))
    # lr 1e-12: one epoch of fine-tuning moves no weight visibly, so the references must
    # hold the init weights themselves (not a fresh random init)
    refs = refs_mod.train_references(population, count=1, recipe=recipe,
                                     config=_config(lr=1e-12), out_dir=tmp_path / "refs",
                                     n_population=8)
    trained = _params(refs.encoders[0].module)
    assert trained.keys() == init.keys()
    assert all(torch.allclose(trained[k], init[k], atol=1e-6) for k in init)
    assert refs.description["recipe"]["init"] == str(tmp_path / "pretrained")
    scratch = refs_mod.train_references(population, count=1, config=_config(lr=1e-12),
                                        out_dir=tmp_path / "refs", n_population=8)
    fresh = _params(scratch.encoders[0].module)
    assert not all(torch.allclose(fresh[k], init[k], atol=1e-6) for k in init)
    # other init weights: another cache key, so the reference retrains
    folders = {p.name for p in (tmp_path / "refs").glob("reference-*")}
    with torch.no_grad():
        next(start.parameters()).add_(1.0)
    save_encoder(start, EncoderRecipe(), tmp_path / "pretrained", {})
    refs_mod.train_references(population, count=1, recipe=recipe, config=_config(lr=1e-12),
                              out_dir=tmp_path / "refs", n_population=8)
    assert len({p.name for p in (tmp_path / "refs").glob("reference-*")} - folders) == 1


def test_a_factory_with_its_own_init_weights(nets, population, tmp_path,
                                             one_torch_thread) -> None:
    from leakprobe.targets.loading import load_entry_point

    torch.manual_seed(5)
    start = load_entry_point(f"{nets}:tiny")
    save_file({k: v.contiguous() for k, v in start.state_dict().items()},
              str(tmp_path / "init.safetensors"))
    recipe = EncoderRecipe("simclr", f"{nets}:tiny", init=str(tmp_path / "init.safetensors"))
    refs = refs_mod.train_references(population, count=1, recipe=recipe,
                                     config=_config(lr=1e-12), out_dir=tmp_path / "refs",
                                     n_population=8)
    trained, init = _params(refs.encoders[0].module), _params(start)
    assert all(torch.allclose(trained[k], init[k], atol=1e-6) for k in init)


@pytest.mark.parametrize(("arch", "init", "message"), [
    ("missing.py:tiny", None, "--reference-arch missing.py:tiny: file missing.py does not "
                              "exist"),
    ("{nets}:nope", None, "has no callable 'nope'"),
    ("{nets}:not_a_module", None, "the factory returned int, not an nn.Module"),
    ("{nets}:feature_map", None, r"maps a \(2, 3, 16, 16\) batch to \(2, 4, 14, 14\); a "
                                 r"backbone returns \(2, D\) embeddings"),
    ("{nets}:wrong_dim", None, "declares embed_dim 5 but returns 12-dimensional"),
    ("{nets}:tiny", "{resnet}", "--reference-init .*: weights do not fit --reference-arch "
                                ".*nets.py:tiny: .*missing keys .*; they fit "
                                "--reference-arch resnet-tiny"),
    ("resnet-tiny", "{tiny}", "weights do not fit --reference-arch resnet-tiny"),
    ("resnet-tiny", "{missing}", "--reference-init .*missing.safetensors: file not found"),
])
def test_bad_factories_and_init_weights_fail_before_training(
        nets, population, tmp_path, arch, init, message) -> None:
    torch.manual_seed(0)
    save_file(create_model("resnet-tiny", input_size=16).state_dict(),
              str(tmp_path / "resnet.safetensors"))
    save_file(_tiny_state(nets), str(tmp_path / "tiny.safetensors"))
    names = {"nets": nets, "resnet": tmp_path / "resnet.safetensors",
             "tiny": tmp_path / "tiny.safetensors", "missing": tmp_path / "missing.safetensors"}
    recipe = EncoderRecipe("simclr", arch.format(**names),
                           init=init.format(**names) if init else None)
    called = []
    with pytest.raises(LeakprobeError, match=message):
        refs_mod.train_references(population, count=2, recipe=recipe, config=_config(),
                                  out_dir=tmp_path / "refs", n_population=8,
                                  train_fn=lambda *a: called.append(a))
    assert not called and not (tmp_path / "refs").exists()


def _tiny_state(nets: Path) -> dict[str, torch.Tensor]:
    from leakprobe.targets.loading import load_entry_point

    return {k: v.contiguous() for k, v in load_entry_point(f"{nets}:tiny").state_dict().items()}
