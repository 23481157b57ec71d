"""A small CNN-LSTM image captioner (Show-and-Tell style) that takes images in [0, 1].

The CNN encoder (a conv block and three stride-2 conv blocks with BatchNorm, global average
pool, linear, ReLU) maps an image to an ``embed_dim`` feature ``f``. ``f`` conditions the
LSTM decoder twice: it sets the **initial state** (``h0 = tanh(W_h f)``, ``c0 = W_c f``) and
is **concatenated to the word embedding at every step** (without the latter, a decoder
trained on several references per image learns to memorise captions from their prefixes and
ignores the image). The decoder starts from ``<bos>``.

Token ids follow :mod:`leakprobe.data.captions`: ``<pad>`` = 0, ``<bos>`` = 1, ``<eos>`` = 2,
``<unk>`` = 3.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from leakprobe.errors import LeakprobeError
from leakprobe.models.registry import register_model
from leakprobe.models.resnet import make_norm

PAD_ID = 0
BOS_ID = 1
EOS_ID = 2
UNK_ID = 3


class CNNLSTMCaptioner(nn.Module):
    """CNN encoder + LSTM decoder (see the module docstring).

    Args:
        vocab_size: number of token ids (specials included).
        embed_dim: image feature and word embedding size (the LSTM reads both).
        hidden: LSTM hidden size.
        width: channels of the first conv block (doubled at each of the three stride-2 blocks,
            capped at 8x).
        input_size: the square side the model is trained at (informative: any size works).
        max_len: most tokens :meth:`generate` emits per image (``<eos>`` included).
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 128,
        hidden: int = 256,
        width: int = 16,
        input_size: int = 32,
        max_len: int = 20,
    ) -> None:
        super().__init__()
        if vocab_size <= EOS_ID:
            raise LeakprobeError(f"vocab_size must exceed the special ids, got {vocab_size}")
        if max_len < 1:
            raise LeakprobeError(f"max_len must be >= 1, got {max_len}")
        self.vocab_size = int(vocab_size)
        self.embed_dim = int(embed_dim)
        self.hidden = int(hidden)
        self.input_size = int(input_size)
        self.max_len = int(max_len)
        self.pad_id, self.bos_id, self.eos_id = PAD_ID, BOS_ID, EOS_ID  # TorchScript sees these
        self.register_buffer("mean", torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.25, 0.25, 0.25]).view(1, 3, 1, 1))
        self.mean: torch.Tensor  # the buffers' types (not class annotations: TorchScript
        self.std: torch.Tensor  # reads those, and cannot parse them as strings)
        layers: list[nn.Module] = [
            nn.Conv2d(3, width, 3, 1, 1, bias=False), make_norm("batch", width), nn.ReLU()
        ]
        c_in = width
        for i in range(3):
            c_out = width * min(2 ** (i + 1), 8)
            layers += [nn.Conv2d(c_in, c_out, 3, 2, 1, bias=False), make_norm("batch", c_out),
                       nn.ReLU()]
            c_in = c_out
        self.cnn = nn.Sequential(*layers)
        self.project = nn.Linear(c_in, embed_dim)
        self.init_h = nn.Linear(embed_dim, hidden)
        self.init_c = nn.Linear(embed_dim, hidden)
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD_ID)
        self.lstm = nn.LSTM(2 * embed_dim, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab_size)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, embed_dim) image features (non-negative)."""
        x = (images - self.mean) / self.std
        return F.relu(self.project(self.cnn(x).mean(dim=(2, 3))))

    def initial_state(self, feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The LSTM's (h0, c0), each (1, B, hidden), from (B, embed_dim) image features."""
        return torch.tanh(self.init_h(feature)).unsqueeze(0), self.init_c(feature).unsqueeze(0)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: (B, 3, H, W), (B, T) ids -> (B, T, V) logits.

        ``logits[:, t]`` scores the token that follows ``tokens[:, t]``; pass a caption
        without its last token (``seq[:, :-1]``, starting with ``<bos>``) and compare with
        ``seq[:, 1:]``.
        """
        f = self.encode(images)
        words = self.embed(tokens)
        x = torch.cat([words, f.unsqueeze(1).expand(-1, words.shape[1], -1)], dim=2)
        out, _ = self.lstm(x, self.initial_state(f))
        return self.head(out)

    @torch.jit.export
    def generate(self, images: torch.Tensor) -> torch.Tensor:
        """Greedy decoding: (B, 3, H, W) -> (B, max_len) int64 ids.

        ``<pad>`` and ``<bos>`` are never chosen. A row holds the generated tokens, ends with
        ``<eos>`` when one came within ``max_len`` steps, and is ``<pad>`` after it; decoding
        stops once every row has its ``<eos>``.
        """
        b = images.shape[0]
        f = self.encode(images)
        h, c = self.initial_state(f)
        token = torch.full((b,), self.bos_id, dtype=torch.long, device=images.device)
        out = torch.full((b, self.max_len), self.pad_id, dtype=torch.long, device=images.device)
        done = torch.zeros(b, dtype=torch.bool, device=images.device)
        for t in range(self.max_len):
            x = torch.cat([self.embed(token), f], dim=1).unsqueeze(1)
            step, (h, c) = self.lstm(x, (h, c))
            logits = self.head(step[:, 0])
            logits[:, self.pad_id] = float("-inf")
            logits[:, self.bos_id] = float("-inf")
            nxt = torch.where(done, torch.full_like(token, self.pad_id), logits.argmax(dim=-1))
            out[:, t] = nxt
            done = done | (nxt == self.eos_id)
            if bool(done.all()):
                break
            token = nxt
        return out


@register_model("cnn-lstm")
def cnn_lstm(**kw) -> CNNLSTMCaptioner:
    """A small CNN-LSTM captioner (``vocab_size`` required; CPU-sized defaults)."""
    if "vocab_size" not in kw:
        raise TypeError("cnn-lstm needs vocab_size")
    return CNNLSTMCaptioner(**kw)
