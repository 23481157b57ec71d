"""--amp: the capability probe decides ``auto``; a model that fails under autocast trains in fp32.

The machine running the tests may or may not have native bf16, so every test forces the
probe's answer (monkeypatching ``_cpu_native_bf16``) and simulates the failure seen on CPUs
without it: oneDNN's LSTM raising under bf16 autocast.
"""

from __future__ import annotations

import json

import pytest
import torch

from cli_runner import run_cli
from leakprobe import precision
from leakprobe.cli.options import QueryPrecision
from leakprobe.errors import LeakprobeError
from leakprobe.training.trainer import TrainConfig, Trainer

LSTM_ERROR = ("could not create a primitive descriptor for the LSTM forward propagation "
              "primitive")

# shares the session fixture of these files: built once, on one xdist worker
pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.xdist_group("memorising-target")]


@pytest.fixture
def no_native_bf16(monkeypatch):
    """This CPU 'has no native bf16', and nn.LSTM fails under CPU autocast as it does there."""
    monkeypatch.setattr(precision, "_cpu_native_bf16", lambda: False)
    forward = torch.nn.LSTM.forward

    def failing_forward(self, *args, **kwargs):
        if torch.is_autocast_enabled("cpu"):
            raise RuntimeError(LSTM_ERROR)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.LSTM, "forward", failing_forward)

    import leakprobe.training.captioning as captioning

    real_export = captioning.export_torchscript

    def export(model, path):  # TorchScript compiles LSTM.forward: give it the real one
        torch.nn.LSTM.forward = forward
        try:
            return real_export(model, path)
        finally:
            torch.nn.LSTM.forward = failing_forward

    monkeypatch.setattr(captioning, "export_torchscript", export)


def test_auto_follows_the_probe(monkeypatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "_cpu_native_bf16", lambda: True)
    assert precision.resolve_amp("auto", cpu) is True
    monkeypatch.setattr(precision, "_cpu_native_bf16", lambda: False)
    assert precision.resolve_amp("auto", cpu) is False
    assert precision.resolve_amp("on", cpu) is True and precision.resolve_amp("off", cpu) is False
    assert precision.resolve_amp(True, cpu) is True  # the API's bools still work
    assert precision.native_bf16(torch.device("meta")) is False


def test_bad_amp_is_one_line() -> None:
    with pytest.raises(LeakprobeError, match="--amp must be one of auto, on, off"):
        TrainConfig(amp="fast")


def _lstm_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.LSTM(4, 8, batch_first=True)


def _lstm_loss(model):
    def loss(x, g):
        out, _ = model(x + 0.01 * torch.randn(x.shape, generator=g))
        return out.float().pow(2).mean()
    return loss


def test_autocast_failure_falls_back_to_fp32_once(no_native_bf16, monkeypatch) -> None:
    """amp on, the LSTM fails under autocast: one line, fp32 from then on, same result as fp32."""
    lines: list[str] = []
    monkeypatch.setattr("leakprobe.training.trainer.log", lines.append)
    data = torch.rand(16, 5, 4)
    on = Trainer(model_on := _lstm_model(), TrainConfig(epochs=2, batch_size=8, amp="on"))
    history_on = on.fit(data, _lstm_loss(model_on))
    off = Trainer(model_off := _lstm_model(), TrainConfig(epochs=2, batch_size=8, amp="off"))
    history_off = off.fit(data, _lstm_loss(model_off))
    falls = [line for line in lines if "autocast failed" in line]
    assert len(falls) == 1 and "training in fp32" in falls[0] and LSTM_ERROR[:20] in falls[0]
    assert on.precision == "fp32" and on.config.extra["precision"] == "fp32"
    assert history_on == pytest.approx(history_off)  # the failed step was redone exactly


def test_train_captioner_cli_without_native_bf16(no_native_bf16, tmp_path) -> None:
    """The crash of the issue: `train captioner` on a CPU without native bf16, default --amp."""
    out = tmp_path / "cap"
    code, _, err = run_cli("train", "captioner", "--data", "synthetic:40", "--members", "20",
                           "--epochs", "1", "--device", "cpu", "--out", str(out))
    assert code == 0, err
    assert json.loads((out / "model.json").read_text())["train"]["extra"]["precision"] == "fp32"
    code, _, err = run_cli("train", "captioner", "--data", "synthetic:40", "--members", "20",
                           "--epochs", "1", "--device", "cpu", "--amp", "on",
                           "--out", str(tmp_path / "cap_on"))
    assert code == 0, err  # forced on: falls back instead of crashing
    meta = json.loads((tmp_path / "cap_on" / "model.json").read_text())
    assert meta["train"]["amp"] == "on" and meta["train"]["extra"]["precision"] == "fp32"
    code, _, err = run_cli("train", "captioner", "--data", "synthetic:40", "--members", "20",
                           "--epochs", "1", "--amp", "bf16", "--out", str(tmp_path / "bad"))
    assert code == 2 and "--amp must be one of auto, on, off" in err
    assert not (tmp_path / "bad").exists()


def test_shadow_captioner_audit_cli_without_native_bf16(no_native_bf16, tmp_path) -> None:
    """`audit captioner` trains its shadow captioner in fp32 here and records it."""
    target = tmp_path / "target"
    code, _, err = run_cli("train", "captioner", "--data", "synthetic:80", "--members", "40",
                           "--epochs", "1", "--device", "cpu", "--out", str(target))
    assert code == 0, err
    out = tmp_path / "audit"
    code, _, err = run_cli("audit", "captioner", "--model", str(target),
                           "--members", str(target / "members.json"),
                           "--nonmembers", str(target / "nonmembers.json"),
                           "--shadow-data", "synthetic:80:5", "--shadow-epochs", "1",
                           "--extractor-epochs", "1", "--attacks", "m4i-metric",
                           "--device", "cpu", "--out", str(out))
    assert code == 0, err
    ctx = json.loads((out / "report.json").read_text())["context"]
    assert ctx["precision"] == {"queries": "fp32", "shadow_training": "fp32"}


def test_demo_captioner_stage_without_native_bf16(no_native_bf16, tmp_path) -> None:
    """The demo's captioner stage (target and shadow captioners) runs with --amp auto."""
    from leakprobe.workflows.demo import _demo_captioner

    paths = _demo_captioner(tmp_path, 0, "cpu", "auto", epochs=1, extractor_epochs=1)
    report = json.loads(paths[0].read_text())
    assert report["context"]["precision"]["shadow_training"] == "fp32"
    meta = json.loads((tmp_path / "target" / "model.json").read_text())
    assert meta["train"]["extra"]["precision"] == "fp32"


# ---- --query-precision: the queries to an audited target ------------------------------------


def test_query_precision_auto_follows_the_probe(monkeypatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "_cpu_native_bf16", lambda: True)
    assert precision.resolve_query_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(precision, "_cpu_native_bf16", lambda: False)
    assert precision.resolve_query_precision("auto", cpu) == "fp32"
    assert precision.resolve_query_precision("bf16", cpu) == "bf16"  # forced: emulated
    assert precision.resolve_query_precision("fp32", cpu) == "fp32"
    assert precision.resolve_query_precision("auto", torch.device("meta")) == "fp32"
    with pytest.raises(LeakprobeError, match=r"^--query-precision must be one of auto, fp32, "
                                             r"bf16, got 'fp16'$"):
        precision.resolve_query_precision("fp16", cpu)


def _tiny_encoder() -> torch.nn.Module:
    from leakprobe.models import create_model

    torch.manual_seed(0)
    return create_model("resnet-tiny", input_size=16)


def test_bf16_queries_answer_float32_close_to_fp32() -> None:
    """bf16 autocast (emulated on a CPU without native bf16: fine for a tiny model)."""
    from leakprobe.targets.encoder import ModuleEncoder

    model = _tiny_encoder()
    x = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    fp32 = ModuleEncoder(model, device="cpu")  # the class default stays fp32
    bf16 = ModuleEncoder(model, device="cpu", query_precision="bf16")
    assert fp32.query_precision == "fp32" and bf16.query_precision == "bf16"
    a, b = fp32.embed(x), bf16.embed(x)
    assert b.dtype == torch.float32 and b.shape == a.shape
    assert ((b - a).norm(dim=1) / a.norm(dim=1)).max() < 0.03  # measured 0.003 at 32 px
    ta, tb = fp32.tokens(x), bf16.tokens(x)
    assert tb is not None and ta is not None and tb.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(ta, tb, dim=-1).min() > 0.99
    assert bf16.queries == 12


def test_auto_query_precision_of_a_target(monkeypatch) -> None:
    from leakprobe.targets.encoder import ModuleEncoder

    model = _tiny_encoder()
    monkeypatch.setattr(precision, "_cpu_native_bf16", lambda: True)
    assert ModuleEncoder(model, device="cpu", query_precision="auto").query_precision == "bf16"
    monkeypatch.setattr(precision, "_cpu_native_bf16", lambda: False)
    assert ModuleEncoder(model, device="cpu", query_precision="auto").query_precision == "fp32"
    with pytest.raises(LeakprobeError, match="--query-precision must be one of"):
        ModuleEncoder(model, device="cpu", query_precision="half")


class _NoBf16(torch.nn.Module):
    """Fails under CPU autocast, as oneDNN's LSTM does on CPUs without native bf16."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_autocast_enabled("cpu"):
            raise RuntimeError(LSTM_ERROR)
        return x.mean(dim=(2, 3))


def test_a_model_failing_in_bf16_is_queried_in_fp32(monkeypatch) -> None:
    from leakprobe.targets.encoder import ModuleEncoder

    lines: list[str] = []
    monkeypatch.setattr("leakprobe.targets.base.log", lines.append)
    target = ModuleEncoder(_NoBf16(), input_size=8, device="cpu", query_precision="bf16")
    assert target.query_precision == "fp32"
    assert len(lines) == 1 and "fails under bf16 autocast" in lines[0] and "in fp32" in lines[0]
    assert target.embed(torch.rand(3, 3, 8, 8)).shape == (3, 3)


def test_bf16_and_fp32_audits_agree_within_the_tolerance(memorising_target) -> None:
    """The stated tolerance of --query-precision, on the suite's memorising resnet-tiny.

    benchmarks/precision.py --queries measured the demo-like target's AUCs in bf16 against
    fp32 (partcrop, encodermi, lpla, baselines; seeds 0 and 1): they moved by 0.0073 at most
    (partcrop), against the stated QUERY_AUC_TOLERANCE of 0.02.
    """
    from leakprobe.attacks.membership import create_attack
    from leakprobe.evaluation.audit import run_audit
    from leakprobe.evaluation.metrics import auc
    from leakprobe.targets.encoder import ModuleEncoder

    t = memorising_target
    aucs = {}
    for name in ("fp32", "bf16"):
        target = ModuleEncoder(t["target"].module, device="cpu", query_precision=name)
        attacks = [create_attack("partcrop", num_parts=32), create_attack("encodermi-threshold"),
                   create_attack("lpla-p2"), create_attack("baseline-norm")]
        results = run_audit(attacks, target, t["members"], t["nonmembers"], repeats=1)
        aucs[name] = {r.attack: auc(r.scores, r.is_member) for r in results}
    assert aucs["fp32"]["encodermi-threshold"] >= 0.8  # leakage to find: a meaningful test
    for attack, value in aucs["fp32"].items():
        assert abs(aucs["bf16"][attack] - value) <= precision.QUERY_AUC_TOLERANCE, (attack, aucs)


def test_a_bad_query_precision_is_one_line_and_exit_2(monkeypatch) -> None:
    """The option type the commands declare: checked while the command line is parsed."""
    from leakprobe.cli.app import app

    seen: list[str] = []

    def probe_command(query_precision: QueryPrecision = "auto") -> None:
        seen.append(query_precision)

    monkeypatch.setattr(app, "registered_commands", list(app.registered_commands))
    app.command("query-precision-probe")(probe_command)
    code, _, err = run_cli("query-precision-probe", "--query-precision", "fp16")
    assert code == 2 and not seen
    assert err.strip().splitlines() == [
        "error: --query-precision must be one of auto, fp32, bf16, got 'fp16'"]
    code, _, err = run_cli("query-precision-probe", "--query-precision", "bf16")
    assert code == 0 and seen == ["bf16"], err


# ---- batch_size="auto": chosen by the model and the device ----------------------------------


def test_batch_for_memory_is_a_capped_power_of_two() -> None:
    from leakprobe.targets.batching import batch_for_memory

    mb = 1 << 20
    assert batch_for_memory(10 * mb, 1024 * mb) == 32  # half of 1 GiB / 10 MiB = 51 -> 32
    assert batch_for_memory(0.01 * mb, 1024 * mb) == 256  # capped
    assert batch_for_memory(10 * mb, 1024 * mb, cap=16) == 16
    assert batch_for_memory(4096 * mb, 1024 * mb) == 1  # never below one image


def test_cuda_batch_from_a_memory_probe(monkeypatch) -> None:
    """The CUDA rule without a GPU: one image costs 10 MiB above a fixed 300 MiB."""
    from leakprobe.targets import batching

    mb = 1 << 20
    state = {"peak": 0}
    fake = {
        "synchronize": lambda device=None: None,
        "memory_allocated": lambda device=None: 100 * mb,
        "reset_peak_memory_stats": lambda device=None: None,
        "max_memory_allocated": lambda device=None: state["peak"],
        "mem_get_info": lambda device=None: (900 * mb, 16384 * mb),
        "memory_reserved": lambda device=None: 200 * mb,  # 100 MiB cached, unused
    }
    for name, fn in fake.items():
        monkeypatch.setattr(torch.cuda, name, fn)
    monkeypatch.setattr(batching, "_images", lambda n, side, device: torch.zeros(n, 3, 2, 2))

    def call(x: torch.Tensor) -> None:
        state["peak"] = 100 * mb + 300 * mb + x.shape[0] * 10 * mb

    n = batching.auto_batch_size(call, input_size=224, device=torch.device("cuda"))
    assert n == 32  # (900 + 100) MiB free, half of it / 10 MiB = 50 -> 32


def test_cpu_batch_is_32_within_the_memory(monkeypatch) -> None:
    """32 images (measured near the best of resnet-tiny and ViT-S/16), halved while one
    call's layer outputs would take more than a quarter of the available memory."""
    from leakprobe.models import create_model
    from leakprobe.targets import batching

    cpu = torch.device("cpu")
    model = create_model("resnet-tiny", input_size=16).eval()

    def call(x):
        with torch.inference_mode():
            return model(x)

    per_image = batching.layer_output_bytes(model, call, 16, cpu)
    assert per_image is not None and per_image > 16 * 16 * 3 * 4  # more than its input
    monkeypatch.setattr(batching, "available_memory", lambda: 1 << 40)
    assert batching.auto_batch_size(call, input_size=16, device=cpu, module=model) == 32
    monkeypatch.setattr(batching, "available_memory", lambda: int(4 * per_image * 5))
    assert batching.auto_batch_size(call, input_size=16, device=cpu, module=model) == 4
    # no module to count (TorchScript, a Python object): 32 as measured
    assert batching.auto_batch_size(call, input_size=16, device=cpu) == 32


def test_an_auto_batch_target_measures_its_model() -> None:
    from leakprobe.targets.encoder import ModuleEncoder

    target = ModuleEncoder(_tiny_encoder(), device="cpu", batch_size="auto")
    assert target.batch_size_auto and 1 <= target.batch_size <= 256
    assert target.batch_size & (target.batch_size - 1) == 0  # a power of two
    assert target.embed(torch.rand(5, 3, 16, 16)).shape[0] == 5 and target.queries == 5
    fixed = ModuleEncoder(_tiny_encoder(), device="cpu", batch_size="48")
    assert fixed.batch_size == 48 and not fixed.batch_size_auto
    with pytest.raises(LeakprobeError, match="batch size must be 'auto' or a positive integer"):
        ModuleEncoder(_tiny_encoder(), device="cpu", batch_size="big")


def test_the_batch_size_option_takes_auto_or_a_positive_int() -> None:
    from leakprobe.cli.options import parse_query_batch_size

    assert parse_query_batch_size("auto") == "auto" and parse_query_batch_size("64") == 64
    assert parse_query_batch_size(256) == 256  # the commands' int defaults pass through
    for bad in ("0", "-3", "many"):
        with pytest.raises(LeakprobeError, match="^--batch-size must be 'auto' or a positive"):
            parse_query_batch_size(bad)


def test_auto_batches_scale_with_the_query_images_area() -> None:
    """Half-size part crops go four times as many per call; larger images fewer."""
    from leakprobe.targets.encoder import ModuleEncoder

    calls: list[int] = []

    class Mean(torch.nn.Module):
        def forward(self, x):
            calls.append(x.shape[0])
            return x.mean(dim=(2, 3))

    target = ModuleEncoder(Mean(), input_size=16, device="cpu", batch_size="auto")
    assert target.batch_size == 32
    for side, per_call in ((16, 32), (8, 128), (4, 256), (32, 8)):
        calls.clear()
        target.embed(torch.rand(300, 3, side, side))
        assert calls[0] == per_call and sum(calls) == 300, (side, calls)
    fixed = ModuleEncoder(Mean(), input_size=16, device="cpu", batch_size=32)
    calls.clear()
    fixed.embed(torch.rand(100, 3, 8, 8))
    assert calls == [32, 32, 32, 4]  # a number given is kept as given
