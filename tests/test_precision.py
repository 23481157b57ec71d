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
from leakprobe.errors import LeakprobeError
from leakprobe.training.trainer import TrainConfig, Trainer

LSTM_ERROR = ("could not create a primitive descriptor for the LSTM forward propagation "
              "primitive")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


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
