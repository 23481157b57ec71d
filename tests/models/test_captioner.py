"""The CNN-LSTM captioner: shapes, TorchScript export and greedy decoding that stops at <eos>."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from leakprobe.errors import LeakprobeError
from leakprobe.models import captioner as _captioner  # noqa: F401  (registers cnn-lstm)
from leakprobe.models import create_model
from leakprobe.models.captioner import BOS_ID, EOS_ID, PAD_ID, CNNLSTMCaptioner

TINY = {"embed_dim": 16, "hidden": 32, "width": 4}
WORD = 5


def images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_shapes_and_registry():
    torch.manual_seed(0)
    model = create_model("cnn-lstm", vocab_size=12, max_len=7, input_size=16, **TINY).eval()
    assert isinstance(model, CNNLSTMCaptioner)
    assert (model.vocab_size, model.max_len, model.input_size) == (12, 7, 16)
    tokens = torch.randint(0, 12, (3, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(images(3, 16), tokens)
        out = model.generate(images(3, 24))  # any input side works
    assert logits.shape == (3, 9, 12) and torch.isfinite(logits).all()
    assert out.shape == (3, 7) and out.dtype == torch.int64
    assert int(out.min()) >= 0 and int(out.max()) < 12
    with pytest.raises(LeakprobeError, match="vocab_size"):
        create_model("cnn-lstm", **TINY)
    with pytest.raises(LeakprobeError, match="vocab_size"):
        CNNLSTMCaptioner(2)


def test_the_image_conditions_the_logits():
    torch.manual_seed(0)
    model = CNNLSTMCaptioner(10, **TINY).eval()
    tokens = torch.tensor([[BOS_ID, 4, 5]]).expand(2, -1)
    with torch.no_grad():
        a = model(images(2, seed=0), tokens)
        b = model(images(2, seed=1), tokens)
    assert not torch.allclose(a, b)


def test_scriptable_and_identical_after_save(tmp_path):
    torch.manual_seed(0)
    model = CNNLSTMCaptioner(15, max_len=6, input_size=16, **TINY).eval()
    scripted = torch.jit.script(model)
    path = tmp_path / "captioner.pt"
    scripted.save(str(path))
    loaded = torch.jit.load(str(path))
    x = images(4, 16)
    tokens = torch.randint(0, 15, (4, 5), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(loaded.generate(x), model.generate(x))
        torch.testing.assert_close(loaded(x, tokens), model(x, tokens))
    assert (loaded.input_size, loaded.max_len, loaded.vocab_size) == (16, 6, 15)


class _ScriptedHead(nn.Module):
    """Emits WORD until step ``stop[i]`` for row i, then <eos>; counts its calls."""

    def __init__(self, stop: list[int], vocab: int) -> None:
        super().__init__()
        self.stop, self.vocab, self.calls = stop, vocab, 0

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(h.shape[0], self.vocab)
        for i, s in enumerate(self.stop):
            logits[i, EOS_ID if self.calls == s else WORD] = 10.0
            logits[i, PAD_ID] = logits[i, BOS_ID] = 100.0  # generate must never pick these
        self.calls += 1
        return logits


def test_generate_stops_each_sequence_at_eos_and_pads_after():
    torch.manual_seed(0)
    model = CNNLSTMCaptioner(8, max_len=10, **TINY).eval()
    model.head = _ScriptedHead([0, 2, 4], 8)
    with torch.no_grad():
        out = model.generate(images(3))
    expected = torch.tensor([
        [EOS_ID] + [PAD_ID] * 9,
        [WORD, WORD, EOS_ID] + [PAD_ID] * 7,
        [WORD] * 4 + [EOS_ID] + [PAD_ID] * 5,
    ])
    assert torch.equal(out, expected)
    assert model.head.calls == 5  # stopped once every row had its <eos>


def test_generate_without_eos_fills_max_len():
    torch.manual_seed(0)
    model = CNNLSTMCaptioner(8, max_len=4, **TINY).eval()
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
        model.head.bias[WORD] = 5.0
        out = model.generate(images(2))
    assert torch.equal(out, torch.full((2, 4), WORD))


def test_random_model_rows_are_well_formed():
    torch.manual_seed(3)
    model = CNNLSTMCaptioner(6, max_len=12, **TINY).eval()
    with torch.no_grad():
        out = model.generate(images(16))
    for row in out.tolist():
        assert BOS_ID not in row
        end = row.index(EOS_ID) if EOS_ID in row else len(row)
        assert PAD_ID not in row[:end] and all(t == PAD_ID for t in row[end + 1:])
