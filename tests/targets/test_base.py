"""`TargetBase`: probe -> batch -> check -> count, once for every family of target."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from leakprobe.errors import BudgetExceededError, LeakprobeError
from leakprobe.targets.base import TargetBase
from leakprobe.targets.captioner import CallableCaptioner, ModuleCaptioner
from leakprobe.targets.encoder import ModuleEncoder, ObjectEncoder
from leakprobe.targets.image2image import ModuleTranslator


class Means(TargetBase):
    """The smallest family: (B, 3) channel means, finite; records what the model saw."""

    kind = "means"
    probe_hint = " (try another size)"

    def __init__(self, fn=None, *, resizes: bool = False, **options) -> None:
        self.device = torch.device("cpu")
        self.seen: list[tuple] = []
        self.fn = fn or (lambda x: x.mean(dim=(2, 3)))
        self.resizes_queries = resizes
        super().__init__(self, **{"batch_size": 4, "input_size": 8, **options})
        self.check_output(self._probe_call(self._model), 2)

    def _model(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(tuple(x.shape))
        return self.fn(x)

    def check_output(self, out: object, n: int) -> torch.Tensor:
        return self._check_tensor(out, n, 2, "(B,3) means")

    def means(self, images: torch.Tensor) -> torch.Tensor:
        return self._batched_tensor(self._model, images)


def images(n: int, size: int = 8) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(n))


def test_queries_are_batched_counted_and_returned_in_order():
    target = Means(budget=20)
    assert target.seen == [(2, 3, 8, 8)] and target.queries == 0  # the probe is free
    x = images(10)
    out = target.means(x)
    assert target.seen[1:] == [(4, 3, 8, 8), (4, 3, 8, 8), (2, 3, 8, 8)]
    assert torch.equal(out, x.mean(dim=(2, 3))) and out.dtype == torch.float32
    assert target.queries == 10


def test_the_budget_is_charged_before_the_first_model_call():
    target = Means(budget=12)
    target.means(images(10))
    calls = len(target.seen)
    with pytest.raises(BudgetExceededError, match="10 of 12 used, 3 more requested"):
        target.means(images(3))
    assert len(target.seen) == calls and target.queries == 10
    target.means(images(2))
    assert target.queries == 12


def test_queries_are_checked_and_resized_only_when_the_family_asks():
    with pytest.raises(LeakprobeError, match=r"images must be \(B,3,H,W\)"):
        Means().means(torch.rand(2, 1, 8, 8))
    kept, resized = Means(), Means(resizes=True)
    kept.means(images(3, size=16))
    resized.means(images(3, size=16))
    assert kept.seen[-1] == (3, 3, 16, 16) and resized.seen[-1] == (3, 3, 8, 8)


def test_nan_answers_are_refused_at_the_probe_and_at_every_query():
    def nan(x):
        return torch.full((x.shape[0], 3), float("nan"))

    with pytest.raises(LeakprobeError, match=r"model Means returned NaN/inf values \(\(B,3\) m"):
        Means(nan)
    calls = {"n": 0}

    def nan_later(x):
        calls["n"] += 1
        return x.mean(dim=(2, 3)) if calls["n"] == 1 else nan(x)

    target = Means(nan_later)
    with pytest.raises(LeakprobeError, match="NaN/inf"):
        target.means(images(3))


def test_the_family_check_runs_on_every_chunk():
    def short(x):  # one row too few once the batch has more than 2 images
        return x.mean(dim=(2, 3))[: min(x.shape[0], 2)]

    target = Means(short)  # the probe batch (2 images) passes
    with pytest.raises(LeakprobeError, match=r"must return \(B,3\) means, got \(2, 3\)"):
        target.means(images(3))
    assert target.queries == 3  # paid before the model answered


def test_a_model_failing_the_probe_is_named_with_the_family_hint():
    def boom(x):
        raise RuntimeError("wrong size\nmore detail")

    with pytest.raises(LeakprobeError, match=r"^model Means rejects \(2,3,8,8\) inputs: "
                                             r"wrong size \(try another size\)$"):
        Means(boom)


def test_options_are_validated_once_for_every_family():
    with pytest.raises(LeakprobeError, match="batch size must be >= 1, got 0"):
        Means(batch_size=0)
    with pytest.raises(LeakprobeError, match="--image-size must be >= 1, got 0"):
        Means(input_size=0)
    assert Means(name="custom").name == "custom" and Means().name == "Means"


class NaNEmbeddings(nn.Module):
    def forward(self, x):
        return torch.full((x.shape[0], 4), float("nan"))


class NaNImages(nn.Module):
    def forward(self, x):
        return x * float("nan")


class FloatIds(nn.Module):
    def generate(self, x):
        return torch.zeros(x.shape[0], 4)


class Words:
    def decode(self, ids):
        return " ".join(map(str, ids))


@pytest.mark.parametrize(("build", "message"), [
    (lambda: ModuleEncoder(NaNEmbeddings(), device="cpu"),
     r"returned NaN/inf values \(\(B,D\) embeddings\)"),
    (lambda: ModuleEncoder(nn.Identity(), device="cpu"), r"must return \(B,D\) embeddings"),
    (lambda: ModuleTranslator(NaNImages(), device="cpu"), "returned NaN/inf outputs"),
    (lambda: ModuleTranslator(nn.Flatten(), device="cpu"), r"must return \(B,C,H,W\) images"),
    (lambda: ModuleCaptioner(FloatIds(), Words(), device="cpu"), "integer token ids"),
], ids=["encoder-nan", "encoder-shape", "image2image-nan", "image2image-shape",
        "captioner-ids"])
def test_each_family_refuses_its_bad_answers_at_the_probe(build, message):
    with pytest.raises(LeakprobeError, match=message):
        build()


class Ids(nn.Module):
    """Generates ids 5, 6, <eos> for every image."""

    input_size = 8

    def generate(self, x):
        return torch.tensor([[5, 6, 2]] * x.shape[0])


class Echo:
    input_size = 8

    def caption(self, images):
        return ["x"] * images.shape[0]


@pytest.mark.parametrize("build", [
    lambda: ModuleEncoder(nn.Flatten(), input_size=8, device="cpu", batch_size=4, budget=10),
    lambda: ObjectEncoder(type("O", (), {"embed": lambda self, x: x.flatten(1)})(),
                          input_size=8, batch_size=4, budget=10),
    lambda: ModuleTranslator(nn.Identity(), input_size=8, device="cpu", batch_size=4,
                             budget=10),
    lambda: ModuleCaptioner(Ids(), Words(), device="cpu", batch_size=4, budget=10),
    lambda: CallableCaptioner(Echo(), batch_size=4, budget=10),
], ids=["module-encoder", "object-encoder", "translator", "module-captioner",
        "callable-captioner"])
def test_every_family_counts_batches_and_budgets_through_the_base(build):
    target = build()
    assert isinstance(target, TargetBase) and target.queries == 0
    query = getattr(target, {"encoder": "embed", "image2image": "translate",
                             "captioner": "caption"}[target.kind])
    answer = query(images(6))
    assert len(answer) == 6 and target.queries == 6
    with pytest.raises(BudgetExceededError):
        query(images(5))
    assert target.queries == 6
