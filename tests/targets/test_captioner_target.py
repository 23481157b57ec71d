"""Captioner targets: query counting, budgets, output checks and `load_captioner`'s forms."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import textwrap
import types
import uuid

import pytest
import torch

from leakprobe.errors import BudgetExceededError, LeakprobeError
from leakprobe.models import captioner as _captioner  # noqa: F401  (registers cnn-lstm)
from leakprobe.models import create_model
from leakprobe.models.serialization import export_torchscript, save_weights
from leakprobe.targets.captioner import (
    CallableCaptioner,
    Captioner,
    ModuleCaptioner,
    ids_to_tokens,
    load_captioner,
)

WORDS = ["a", "red", "blue", "circle", "square", "small", "large", "at", "the", "top"]
ARCH = {"embed_dim": 16, "hidden": 32, "width": 4, "max_len": 6, "input_size": 16}

OBJECT_FACTORY = """
import torch

CALLS = []


class Service:
    input_size = 16

    def caption(self, images):
        CALLS.append(tuple(images.shape))
        return ["bright" if float(x.mean()) > 0.5 else "dark" for x in images]


def make():
    return Service()


def make_int():
    return 42


def broken():
    raise RuntimeError("no weights here")
"""


class StandInTokenizer:
    """Word-level tokenizer with the interface of ``leakprobe.data.captions.Tokenizer``."""

    SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")

    def __init__(self, vocab: list[str]) -> None:
        self.itos = list(vocab)

    @classmethod
    def fit(cls, captions: list[str], min_count: int = 1) -> StandInTokenizer:
        return cls([*cls.SPECIALS, *sorted({w for c in captions for w in c.lower().split()})])

    def encode(self, text: str, max_len: int) -> list[int]:
        ids = [self.itos.index(w) if w in self.itos else 3 for w in text.lower().split()]
        return [1, *ids[: max_len - 2], 2]

    def decode(self, ids: list[int]) -> str:
        out = []
        for i in ids:
            if i == 2:
                break
            if i > 3:
                out.append(self.itos[i])
        return " ".join(out)

    def to_dict(self) -> dict:
        return {"kind": "word", "vocab": list(self.itos)}

    @classmethod
    def from_dict(cls, d: dict) -> StandInTokenizer:
        return cls(d["vocab"])

    def __len__(self) -> int:
        return len(self.itos)


@pytest.fixture
def tokenizer(monkeypatch):
    """A tokenizer over WORDS: the real one when ``leakprobe.data.captions`` exists."""
    if importlib.util.find_spec("leakprobe.data.captions") is not None:
        tok_cls = importlib.import_module("leakprobe.data.captions").Tokenizer
    else:
        fake = types.ModuleType("leakprobe.data.captions")
        fake.Tokenizer = tok_cls = StandInTokenizer
        monkeypatch.setitem(sys.modules, "leakprobe.data.captions", fake)
    return tok_cls.fit([" ".join(WORDS)])


@pytest.fixture
def model(tokenizer):
    torch.manual_seed(0)
    return create_model("cnn-lstm", vocab_size=len(tokenizer), **ARCH).eval()


@pytest.fixture
def trained_folder(tmp_path, model, tokenizer):
    """A folder laid out like ``train_target_captioner``'s output (untrained weights)."""
    out = tmp_path / "cap"
    kwargs = {"vocab_size": len(tokenizer), **ARCH}
    save_weights(model, out / "captioner.safetensors", "cnn-lstm", kwargs)
    export_torchscript(model, out / "captioner.torchscript.pt")
    (out / "tokenizer.json").write_text(json.dumps(tokenizer.to_dict()))
    (out / "model.json").write_text(json.dumps({"kind": "captioner", "arch": "cnn-lstm"}))
    return out


@pytest.fixture
def object_file(tmp_path):
    path = tmp_path / f"caption_service_{uuid.uuid4().hex[:8]}.py"
    path.write_text(OBJECT_FACTORY)
    return path


def images(n: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_module_captioner_counts_batches_and_enforces_the_budget(model, tokenizer):
    target = ModuleCaptioner(model, tokenizer, device="cpu", batch_size=3, budget=10)
    assert isinstance(target, Captioner) and target.input_size == 16 and target.queries == 0
    caps = target.caption(images(7))
    assert len(caps) == 7 and all(isinstance(c, str) for c in caps)
    assert all(w in WORDS for c in caps for w in c.split())
    assert target.queries == 7
    with torch.no_grad():
        ids = model.generate(images(7))
    assert caps == [tokenizer.decode(ids_to_tokens(r)) for r in ids.tolist()]
    assert len(target.caption(images(3, size=24))) == 3  # other sizes are resized
    assert target.queries == 10
    with pytest.raises(BudgetExceededError, match="budget"):
        target.caption(images(1))
    assert target.queries == 10


def test_budget_is_checked_before_querying(model, tokenizer):
    target = ModuleCaptioner(model, tokenizer, device="cpu", budget=6)
    target.caption(images(4))
    with pytest.raises(BudgetExceededError):
        target.caption(images(3))
    assert target.queries == 4
    target.caption(images(2))
    assert target.queries == 6


def test_ids_to_tokens_cuts_at_eos():
    assert ids_to_tokens([1, 5, 6, 2, 7, 0]) == [5, 6]
    assert ids_to_tokens([5, 0, 3, 6]) == [5, 3, 6]


def test_module_captioner_checks_model_and_tokenizer(model, tokenizer):
    with pytest.raises(LeakprobeError, match="token ids but its tokenizer"):
        ModuleCaptioner(create_model("cnn-lstm", vocab_size=len(tokenizer) + 1, **ARCH),
                        tokenizer, device="cpu")
    with pytest.raises(LeakprobeError, match="no generate"):
        ModuleCaptioner(torch.nn.Linear(2, 2), tokenizer, device="cpu")

    class FloatIds(torch.nn.Module):
        def generate(self, x: torch.Tensor) -> torch.Tensor:
            return torch.zeros(x.shape[0], 4)

    with pytest.raises(LeakprobeError, match="integer token ids"):
        ModuleCaptioner(FloatIds(), tokenizer, device="cpu")
    with pytest.raises(LeakprobeError, match=r"\(B,3,H,W\)"):
        ModuleCaptioner(model, tokenizer, device="cpu").caption(torch.rand(2, 1, 16, 16))


class _Echo:
    input_size = 8

    def __init__(self, answer=None) -> None:
        self.answer = answer
        self.shapes: list[tuple] = []

    def caption(self, images):
        self.shapes.append(tuple(images.shape))
        if self.answer is not None:
            return self.answer(images)
        return [f"image {i}" for i in range(images.shape[0])]


def test_callable_captioner_batches_resizes_and_counts():
    obj = _Echo()
    target = CallableCaptioner(obj, batch_size=4, budget=12)
    assert isinstance(target, Captioner) and target.input_size == 8
    assert target.caption(images(10, size=16)) == [f"image {i}" for i in (0, 1, 2, 3) * 2 + (0, 1)]
    assert obj.shapes == [(4, 3, 8, 8), (4, 3, 8, 8), (2, 3, 8, 8)]
    assert target.queries == 10
    with pytest.raises(BudgetExceededError):
        target.caption(images(3))
    assert len(obj.shapes) == 3


@pytest.mark.parametrize(
    "answer",
    [
        lambda x: "one string",
        lambda x: ["too", "few"][: x.shape[0] - 1],
        lambda x: ["ok"] * (x.shape[0] + 1),
        lambda x: [1] * x.shape[0],
        lambda x: [b"bytes"] * x.shape[0],
        lambda x: tuple(["ok"] * x.shape[0]),
        lambda x: None,
        lambda x: torch.zeros(x.shape[0]),
    ],
    ids=["str", "short", "long", "ints", "bytes", "tuple", "none", "tensor"],
)
def test_callable_captioner_rejects_wrong_return_types(answer):
    target = CallableCaptioner(_Echo(answer))
    with pytest.raises(LeakprobeError, match="must return a list of 3 strings"):
        target.caption(images(3))


def test_callable_captioner_wraps_failures():
    def boom(images):
        raise ValueError("remote model is down")

    with pytest.raises(LeakprobeError, match="remote model is down"):
        CallableCaptioner(_Echo(boom)).caption(images(2))
    with pytest.raises(LeakprobeError, match="no caption"):
        CallableCaptioner(object())
    with pytest.raises(LeakprobeError, match="batch size"):
        CallableCaptioner(_Echo(), batch_size=0)


def test_load_captioner_folder_and_torchscript_agree(trained_folder, model, tokenizer):
    direct = ModuleCaptioner(model, tokenizer, device="cpu").caption(images(5))
    folder = load_captioner(str(trained_folder), device="cpu", batch_size=2)
    script = load_captioner(str(trained_folder / "captioner.torchscript.pt"), device="cpu")
    assert isinstance(folder, ModuleCaptioner) and isinstance(script, ModuleCaptioner)
    assert folder.input_size == script.input_size == 16
    assert folder.caption(images(5)) == script.caption(images(5)) == direct
    assert folder.queries == 5
    limited = load_captioner(str(trained_folder), device="cpu", budget=2)
    with pytest.raises(BudgetExceededError):
        limited.caption(images(3))


def test_load_captioner_folder_errors(trained_folder, tmp_path):
    (trained_folder / "tokenizer.json").unlink()
    with pytest.raises(LeakprobeError, match="tokenizer"):
        load_captioner(str(trained_folder), device="cpu")
    with pytest.raises(LeakprobeError, match="tokenizer"):
        load_captioner(str(trained_folder / "captioner.torchscript.pt"), device="cpu")
    other = tmp_path / "enc"
    other.mkdir()
    (other / "model.json").write_text(json.dumps({"kind": "encoder"}))
    with pytest.raises(LeakprobeError, match="not a captioner"):
        load_captioner(str(other), device="cpu")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LeakprobeError, match="captioner.safetensors"):
        load_captioner(str(empty), device="cpu")
    with pytest.raises(LeakprobeError, match="no such"):
        load_captioner(str(tmp_path / "missing.pt"), device="cpu")


@pytest.mark.parametrize("what", ["state_dict", "module"])
def test_pickled_checkpoints_are_refused(tmp_path, model, tokenizer, what):
    path = tmp_path / "captioner.pt"
    torch.save(model.state_dict() if what == "state_dict" else model, path)
    (tmp_path / "tokenizer.json").write_text(json.dumps(tokenizer.to_dict()))
    with pytest.raises(LeakprobeError, match="never unpickles"):
        load_captioner(str(path), device="cpu")


def test_load_captioner_file_entry_point(object_file):
    target = load_captioner(f"{object_file}:make", batch_size=2)
    assert isinstance(target, CallableCaptioner) and target.input_size == 16
    x = torch.cat([torch.zeros(2, 3, 32, 32), torch.ones(1, 3, 32, 32)])
    assert target.caption(x) == ["dark", "dark", "bright"]
    assert target.queries == 3
    calls = sys.modules[f"leakprobe_user_{object_file.stem}"].CALLS
    assert calls == [(2, 3, 16, 16), (1, 3, 16, 16)]


def test_load_captioner_module_entry_point(object_file, monkeypatch):
    monkeypatch.syspath_prepend(str(object_file.parent))
    target = load_captioner(f"{object_file.stem}:make")
    assert target.caption(torch.ones(1, 3, 16, 16)) == ["bright"]


def test_entry_point_errors(object_file, tmp_path):
    with pytest.raises(LeakprobeError, match="no caption"):
        load_captioner(f"{object_file}:make_int")
    with pytest.raises(LeakprobeError, match="factory failed"):
        load_captioner(f"{object_file}:broken")
    with pytest.raises(LeakprobeError, match="no callable"):
        load_captioner(f"{object_file}:nothere")
    with pytest.raises(LeakprobeError, match="does not exist"):
        load_captioner(f"{tmp_path / 'nothere.py'}:make")
    with pytest.raises(LeakprobeError, match="cannot import"):
        load_captioner("leakprobe_no_such_package_xyz:make")
    bad = tmp_path / "broken_captioner.py"
    bad.write_text(textwrap.dedent("""
        def make(:
            pass
    """))
    with pytest.raises(LeakprobeError, match="cannot import"):
        load_captioner(f"{bad}:make")
