import pytest
import torch
from torch import nn

from leakprobe.errors import BudgetExceededError, LeakprobeError
from leakprobe.models import create_model
from leakprobe.targets.encoder import ModuleEncoder


class FixedSize(nn.Module):
    """Accepts 32x32 only, like many user models."""

    def forward(self, x):
        if x.shape[-1] != 32:
            raise RuntimeError("expected 32x32")
        return x.flatten(1)[:, :10]


def test_queries_are_counted_and_budget_enforced():
    enc = ModuleEncoder(create_model("resnet-tiny"), budget=10, device="cpu")
    enc.embed(torch.rand(6, 3, 32, 32))
    assert enc.queries == 6
    with pytest.raises(BudgetExceededError):
        enc.embed(torch.rand(5, 3, 32, 32))


def test_fixed_size_models_get_resized_inputs():
    enc = ModuleEncoder(FixedSize(), input_size=32, device="cpu")
    assert not enc.flexible_size
    assert enc.embed(torch.rand(3, 3, 16, 16)).shape == (3, 10)
    assert enc.tokens(torch.rand(3, 3, 32, 32)) is None


def test_wrong_output_shape_is_a_clear_error():
    class Bad(nn.Module):
        def forward(self, x):
            return x  # 4-D, not (B, D)

    with pytest.raises(LeakprobeError, match=r"\(B,D\)"):
        ModuleEncoder(Bad(), device="cpu")


def test_nan_embeddings_are_refused():
    class NaNs(nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 4), float("nan"))

    with pytest.raises(LeakprobeError, match="NaN"):
        ModuleEncoder(NaNs(), device="cpu")


def test_tokens_of_a_cnn_are_its_last_feature_map():
    enc = ModuleEncoder(create_model("resnet-tiny"), device="cpu")
    tok = enc.tokens(torch.rand(2, 3, 32, 32))
    assert tok.shape == (2, 16, enc.embed_dim)


# ---- query precision, batch_size="auto" and the memory format through the loaders ----------


class FlattensWithView(nn.Module):
    """Two convolutions, then ``.view``: fails on a channels-last map."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return self.b(self.a(x)).view(x.shape[0], -1)


def test_cnns_get_channels_last_queries_with_the_same_answers():
    torch.manual_seed(0)
    model = create_model("resnet-tiny")
    x = torch.rand(5, 3, 32, 32)
    enc = ModuleEncoder(model, device="cpu")
    assert enc.channels_last
    with torch.inference_mode():
        plain = model(x)
    assert torch.allclose(enc.embed(x), plain, atol=1e-5, rtol=1e-4)  # float rounding only


def test_models_that_cannot_take_channels_last_keep_the_default_layout():
    enc = ModuleEncoder(FlattensWithView(), device="cpu", input_size=8)
    assert not enc.channels_last and enc.embed(torch.rand(3, 3, 8, 8)).shape == (3, 256)
    vit = ModuleEncoder(create_model("vit-tiny"), device="cpu")
    assert not vit.channels_last  # one convolution (the patch embedding): nothing to gain


def test_a_failing_channels_last_query_falls_back_to_the_default_layout():
    class LateView(FlattensWithView):
        calls = 0

        def forward(self, x):
            self.calls += 1
            y = self.b(self.a(x))
            return (y.view(x.shape[0], -1) if self.calls > 3 else y.reshape(x.shape[0], -1))

    enc = ModuleEncoder(LateView(), device="cpu", input_size=8)
    assert enc.channels_last  # the probes passed
    assert enc.embed(torch.rand(2, 3, 8, 8)).shape == (2, 256)
    assert not enc.channels_last and enc.queries == 2


def test_loaders_take_query_precision_and_auto_batches(tmp_path, monkeypatch):
    from leakprobe import precision
    from leakprobe.models.serialization import save_weights
    from leakprobe.targets.families import FAMILIES, Family, load_target

    path = save_weights(create_model("resnet-tiny", input_size=16), tmp_path / "e.safetensors",
                        "resnet-tiny", {"input_size": 16})
    monkeypatch.setattr(precision, "_cpu_native_bf16", lambda: False)
    enc = load_target(str(path), family="encoder", device="cpu", batch_size="auto")
    assert enc.query_precision == "fp32" and enc.batch_size_auto  # auto: no native bf16 here
    enc = load_target(str(path), family="encoder", device="cpu", query_precision="bf16")
    assert enc.query_precision == "bf16" and enc.batch_size == 256
    with pytest.raises(LeakprobeError, match="--query-precision must be one of"):
        load_target(str(path), family="encoder", device="cpu", query_precision="int8")

    def old_loader(spec, *, device, budget, image_size):  # a family added before the option
        return ModuleEncoder(create_model("resnet-tiny", input_size=16), device=device)

    monkeypatch.setitem(FAMILIES, "legacy", Family(
        name="legacy", what="a legacy model", method="embed",
        target_path="leakprobe.targets.encoder:Encoder", loader_path=f"{__name__}:_LOADER",
        client_path="", service_path="", default_attacks="all", report_kind="legacy"))
    monkeypatch.setitem(globals(), "_LOADER", old_loader)
    assert load_target("x", family="legacy", device="cpu").query_precision == "fp32"
    with pytest.raises(LeakprobeError, match="the legacy family's loader takes no query"):
        load_target("x", family="legacy", device="cpu", query_precision="bf16")
