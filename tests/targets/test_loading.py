"""`leakprobe.targets.loading.load_encoder`: entry points, safetensors, pickles and budgets."""

from __future__ import annotations

import textwrap
import uuid

import pytest
import torch
from safetensors.torch import save_file

from leakprobe.errors import BudgetExceededError, LeakprobeError
from leakprobe.models import create_model
from leakprobe.targets.encoder import ModuleEncoder, ObjectEncoder
from leakprobe.targets.loading import load_encoder

MODULE_FACTORY = """
import torch
from torch import nn


class Net(nn.Module):
    input_size = 32

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 3, 2, 1)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))

    def tokens(self, x):
        return self.conv(x).flatten(2).transpose(1, 2)


def build():
    return Net()
"""

OBJECT_FACTORY = """
import torch

CALLS = []


class Service:
    input_size = 32

    def embed(self, images):
        # a remote-style model that only accepts its own input size
        if tuple(images.shape[-2:]) != (32, 32):
            raise ValueError("only 32x32 please")
        CALLS.append(tuple(images.shape))
        return torch.cat([images.mean(dim=(2, 3)), images.std(dim=(2, 3))], dim=1)


def make():
    return Service()


def make_int():
    return 42
"""


def images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def module_name(tmp_path, monkeypatch) -> str:
    name = f"lp_user_models_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(MODULE_FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


@pytest.fixture
def object_file(tmp_path):
    path = tmp_path / "service_model.py"
    path.write_text(OBJECT_FACTORY)
    return path


def test_module_entry_point_returning_an_nn_module(module_name):
    target = load_encoder(f"{module_name}:build", device="cpu")
    assert isinstance(target, ModuleEncoder) and not isinstance(target, ObjectEncoder)
    assert target.input_size == 32
    assert target.embed_dim == 6
    x = images(3)
    emb = target.embed(x)
    assert emb.shape == (3, 6) and emb.dtype == torch.float32
    assert target.has_tokens
    assert target.tokens(x).shape == (3, 16 * 16, 6)
    assert target.queries == 6  # 3 embedded + 3 tokenised; the load-time probe is free
    # the same computation as the user's own module
    import importlib

    ref = importlib.import_module(module_name).build().eval()
    with torch.inference_mode():
        torch.testing.assert_close(emb, ref(x))


def test_file_entry_point_returning_an_object_with_embed(object_file):
    target = load_encoder(f"{object_file}:make", device="cpu", batch_size=2)
    assert isinstance(target, ObjectEncoder)
    assert target.input_size == 32
    assert target.embed_dim == 6
    assert not target.has_tokens
    calls = target.obj.embed.__globals__["CALLS"]
    calls.clear()

    x = images(5)
    emb = target.embed(x)
    assert emb.shape == (5, 6)
    torch.testing.assert_close(emb[:, :3], x.mean(dim=(2, 3)))
    assert calls == [(2, 3, 32, 32), (2, 3, 32, 32), (1, 3, 32, 32)]  # batched by 2
    assert target.queries == 5

    assert target.tokens(x) is None
    assert target.queries == 5  # no tokens, no query

    # a model that only takes its own size gets other sizes resized to it
    calls.clear()
    assert target.embed(images(2, size=16)).shape == (2, 6)
    assert calls == [(2, 3, 32, 32)]
    assert target.queries == 7


def test_factory_returning_neither_module_nor_embed(object_file):
    with pytest.raises(LeakprobeError, match="neither"):
        load_encoder(f"{object_file}:make_int", device="cpu")


def test_entry_point_errors(tmp_path, object_file):
    with pytest.raises(LeakprobeError, match="does not exist"):
        load_encoder(f"{tmp_path / 'nothere.py'}:make", device="cpu")
    with pytest.raises(LeakprobeError, match="no callable 'nosuch'"):
        load_encoder(f"{object_file}:nosuch", device="cpu")
    with pytest.raises(LeakprobeError, match="cannot import"):
        load_encoder("leakprobe_no_such_package.models:build", device="cpu")


def test_entry_point_file_with_syntax_error_is_a_leakprobe_error(tmp_path):
    bad = tmp_path / "broken_model.py"
    bad.write_text(textwrap.dedent("""
        def build(:
            pass
    """))
    with pytest.raises(LeakprobeError, match="broken_model"):
        load_encoder(f"{bad}:build", device="cpu")


def _resnet_tiny_state() -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(0)
    model = create_model("resnet-tiny").eval()
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    return model, state


def test_safetensors_without_recorded_arch(tmp_path):
    model, state = _resnet_tiny_state()
    path = tmp_path / "weights.safetensors"
    save_file(state, str(path))  # no metadata: leakprobe cannot know the architecture

    with pytest.raises(LeakprobeError, match="pass --arch"):
        load_encoder(str(path), device="cpu")

    target = load_encoder(str(path), arch="resnet-tiny", device="cpu")
    x = images(4)
    with torch.inference_mode():
        want = model(x)
    torch.testing.assert_close(target.embed(x), want, rtol=1e-5, atol=1e-5)
    assert target.has_tokens

    with pytest.raises(LeakprobeError, match="do not fit"):
        load_encoder(str(path), arch="resnet18-cifar", device="cpu")


def test_missing_safetensors_and_unknown_arch(tmp_path):
    with pytest.raises(LeakprobeError, match="not found"):
        load_encoder(str(tmp_path / "nothere.safetensors"), arch="resnet-tiny", device="cpu")
    _, state = _resnet_tiny_state()
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    with pytest.raises(LeakprobeError, match="unknown architecture"):
        load_encoder(str(path), arch="no-such-arch", device="cpu")


@pytest.mark.parametrize("what", ["state_dict", "module"])
def test_pickled_checkpoints_are_refused(tmp_path, what):
    model, state = _resnet_tiny_state()
    path = tmp_path / "checkpoint.pt"
    torch.save(state if what == "state_dict" else model, path)
    with pytest.raises(LeakprobeError, match="never unpickles"):
        load_encoder(str(path), device="cpu")


def test_budget_is_enforced(module_name):
    target = load_encoder(f"{module_name}:build", device="cpu", budget=5)
    assert target.queries == 0  # loading does not spend the budget
    with pytest.raises(BudgetExceededError, match="budget"):
        target.embed(images(6))
    assert target.queries == 0  # a refused request is not charged
    target.embed(images(3))
    target.embed(images(2))
    assert target.queries == 5
    with pytest.raises(BudgetExceededError):
        target.embed(images(1))
    with pytest.raises(BudgetExceededError):
        target.tokens(images(1))


def test_safetensors_of_another_arch_lists_the_keys_and_the_way_out(tmp_path):
    _, state = _resnet_tiny_state()
    state = dict(state, extra_head=torch.zeros(3))  # weights no registered architecture fits
    path = tmp_path / "weights.safetensors"
    save_file(state, str(path))
    with pytest.raises(LeakprobeError) as info:
        load_encoder(str(path), arch="vit-tiny", device="cpu")
    message = str(info.value)
    assert "\n" not in message
    assert "missing keys (" in message and "unexpected keys (" in message
    missing = message.split("missing keys (", 1)[1].split(")", 1)[0]
    assert 1 <= missing.count(",") + 1 <= 6 and "more" in missing  # the first 5, then a count
    assert "for your own architecture use --model file.py:factory" in message


WRONG_TYPES = """
import torch


class Net(torch.nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3))


def the_class():
    return Net


def nothing():
    Net()
"""


@pytest.mark.parametrize(("factory", "message"), [
    ("the_class", "returned the class Net, not an instance"),
    ("nothing", "returned None (did the factory forget to return?)"),
])
def test_entry_point_of_the_wrong_type_names_it_and_the_type(tmp_path, factory, message):
    from leakprobe.targets.loading import load_translator

    path = tmp_path / "wrong_types.py"
    path.write_text(WRONG_TYPES)
    spec = f"{path}:{factory}"
    for load in (load_encoder, load_translator):
        with pytest.raises(LeakprobeError) as info:
            load(spec, device="cpu")
        assert str(info.value).startswith(f"{spec}: ") and message in str(info.value)


@pytest.mark.parametrize("device", ["gpu", "mps"])
def test_a_bad_device_is_named_before_the_model_is_read(tmp_path, device):
    from leakprobe.targets.captioner import load_captioner
    from leakprobe.targets.loading import load_translator

    missing = str(tmp_path / "missing.pt")
    for load in (load_encoder, load_translator, load_captioner):
        with pytest.raises(LeakprobeError, match=f"^--device {device}: "):
            load(missing, device=device)


def test_a_folder_that_is_no_model_says_what_it_holds_and_what_fits(tmp_path):
    """Issue 25: a Hugging Face folder without config.json is told so, not that it lacks a
    train folder's encoder.safetensors."""
    from leakprobe.errors import LeakprobeError
    from leakprobe.targets.loading import load_model_module

    hf = tmp_path / "dinov2"
    hf.mkdir()
    (hf / "model.safetensors").write_bytes(b"")
    (hf / "preprocessor_config.json").write_text("{}")
    with pytest.raises(LeakprobeError) as e:
        load_model_module(str(hf))
    assert "looks like a Hugging Face folder (model.safetensors) without config.json" in \
        str(e.value) and f"hf:{hf}" in str(e.value)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    with pytest.raises(LeakprobeError) as e:
        load_model_module(str(other))
    assert "not a model folder (it holds notes.txt)" in str(e.value)
    assert "encoder.safetensors" in str(e.value) and "hf:DIR" in str(e.value)


def test_weights_of_another_architecture_name_the_one_they_fit(tmp_path):
    """Issue 25: an architecture mismatch names the registered architecture the file fits."""
    from leakprobe.models import create_model
    from leakprobe.targets.loading import load_safetensors_module

    model = create_model("resnet-tiny")
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    with pytest.raises(LeakprobeError) as e:
        load_safetensors_module(path, "resnet18-cifar")
    assert "weights do not fit architecture 'resnet18-cifar'" in str(e.value)
    assert str(e.value).endswith("they fit --arch resnet-tiny")
    with pytest.raises(LeakprobeError) as e:
        create_model("resnet18-cifr")
    assert str(e.value).endswith("(did you mean 'resnet18-cifar'?)")
