"""Fail fast: every check that can fail runs before any training or query.

Each test makes the expensive step (shadow training, the target's forward pass, a query)
raise if it is reached, so a check that runs too late shows up as a traceback (exit 1)
instead of the expected one-line ``error:`` with exit status 2.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from cli_runner import run_cli as cli

sys.path.insert(0, str(Path(__file__).parents[1] / "serve"))
from serve_helpers import running  # noqa: E402

MEMBERS, NONMEMBERS, SHADOW = "synthetic:30:1", "synthetic:30:2", "synthetic:40:5"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class TinyEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3))


CAPTIONER = """
class Parrot:
    input_size = 32

    def caption(self, images):
        return ["a red circle"] * images.shape[0]


def build():
    return Parrot()


class Net:
    pass


def the_class():
    return Net
"""


class Expensive(AssertionError):
    """Raised by a step the pre-flight checks must come before."""


def forbid(*_args, **_kwargs):
    raise Expensive("expensive work started before the pre-flight checks")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("preflight")
    torch.manual_seed(0)
    torch.jit.script(TinyEncoder()).save(str(root / "tiny.pt"))
    (root / "captioner_entry.py").write_text(textwrap.dedent(CAPTIONER))
    (root / "a_file").write_text("keep me")
    return {"root": str(root), "encoder": str(root / "tiny.pt"),
            "captioner": f"{root / 'captioner_entry.py'}:build",
            "class": f"{root / 'captioner_entry.py'}:the_class",
            "file": str(root / "a_file")}


@pytest.fixture
def no_work(monkeypatch):
    """Training, shadow training and every query raise: a check must come first."""
    import leakprobe.targets.captioner
    import leakprobe.targets.encoder
    import leakprobe.training.captioning
    import leakprobe.workflows.audit
    import leakprobe.workflows.defend

    monkeypatch.setattr(leakprobe.training.captioning, "train_captioner", forbid)
    monkeypatch.setattr(leakprobe.workflows.audit, "train_shadow", forbid)
    monkeypatch.setattr(leakprobe.workflows.defend, "_train", forbid)
    monkeypatch.setattr(leakprobe.targets.encoder.ModuleEncoder, "embed", forbid)
    monkeypatch.setattr(leakprobe.targets.encoder.ModuleEncoder, "tokens", forbid)
    monkeypatch.setattr(leakprobe.targets.captioner.CallableCaptioner, "caption", forbid)


def one_line_error(code: int, err: str, *parts: str) -> None:
    assert code == 2, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    for part in parts:
        assert part in err, err


def audit_encoder(files, out, *extra, members=MEMBERS, nonmembers=NONMEMBERS):
    return cli("audit", "encoder", "--model", files["encoder"], "--members", members,
               "--nonmembers", nonmembers, "--out", str(out), "--device", "cpu", *extra)


def audit_captioner(files, out, *extra, members=MEMBERS, nonmembers=NONMEMBERS,
                    shadow=SHADOW, model=None):
    return cli("audit", "captioner", "--model", model or files["captioner"], "--members",
               members, "--nonmembers", nonmembers, "--shadow-data", shadow, "--out",
               str(out), "--shadow-epochs", "1", "--extractor-epochs", "1", "--device", "cpu",
               *extra)


# --------------------------------------------------------------------------------------------
# the captioner audit trains nothing before its checks


def test_captioner_wrong_attack_name_does_not_train_the_shadow(files, tmp_path, no_work):
    code, _, err = audit_captioner(files, tmp_path / "r", "--attacks", "m4i-metric,m4i-nope")
    one_line_error(code, err, "unknown captioning attack 'm4i-nope'", "m4i-feature")
    assert not (tmp_path / "r").exists()


def test_captioner_identical_members_and_nonmembers_do_not_train(files, tmp_path, no_work):
    code, _, err = audit_captioner(files, tmp_path / "r", nonmembers=MEMBERS)
    one_line_error(code, err, "members and non-members overlap: 30")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("members", "nonmembers", "message"), [
    (SHADOW, NONMEMBERS, "the shadow data shares 40 images with the target's members ("),
    (MEMBERS, SHADOW, "the shadow data shares 40 images with the target's non-members ("),
])
def test_shadow_overlap_names_the_sets(files, tmp_path, no_work, members, nonmembers, message):
    code, _, err = audit_captioner(files, tmp_path / "r", members=members,
                                   nonmembers=nonmembers)
    one_line_error(code, err, message)
    assert "members and non-members" not in err


def test_encoder_shadow_overlap_names_the_sets_before_training(files, tmp_path, no_work):
    code, _, err = audit_encoder(files, tmp_path / "r", "--knowledge", "shadow",
                                 "--shadow-data", NONMEMBERS, "--attacks", "baseline-norm")
    one_line_error(code, err, "the shadow data shares 30 images with the target's non-members")


def test_captioner_budget_too_small_fails_before_the_first_query(files, tmp_path, no_work):
    code, _, err = audit_captioner(files, tmp_path / "r", "--budget", "50")
    # 60 images x (m4i-metric 1 + m4i-feature 1 + blind 0)
    one_line_error(code, err, "this audit needs 120 queries", "budget allows 50",
                   "use fewer attacks or images")
    assert not (tmp_path / "r").exists()


def test_captioner_entry_point_returning_a_class(files, tmp_path, no_work):
    code, _, err = audit_captioner(files, tmp_path / "r", model=files["class"])
    one_line_error(code, err, files["class"], "returned the class Net, not an instance")


# --------------------------------------------------------------------------------------------
# the encoder audit


@pytest.mark.parametrize("extra", [
    ["--attacks", "partcrop,nosuchattack"],
    ["--attacks", "partcrop,nosuchattack", "--knowledge", "shadow", "--shadow-data", SHADOW],
])
def test_encoder_wrong_attack_name_fails_before_loading_or_training(files, tmp_path, no_work,
                                                                    monkeypatch, extra):
    import leakprobe.targets.loading

    monkeypatch.setattr(leakprobe.targets.loading, "load_model_module", forbid)
    code, _, err = audit_encoder(files, tmp_path / "r", *extra)
    one_line_error(code, err, "unknown attack 'nosuchattack'")


def test_encoder_identical_sets_with_shadow_knowledge_do_not_train(files, tmp_path, no_work):
    code, _, err = audit_encoder(files, tmp_path / "r", "--knowledge", "shadow",
                                 "--shadow-data", SHADOW, nonmembers=MEMBERS)
    one_line_error(code, err, "members and non-members overlap")


def test_encoder_folds_fail_before_the_first_query(files, tmp_path, no_work):
    code, _, err = audit_encoder(files, tmp_path / "r", "--attacks", "encodermi-vector",
                                 "--folds", "1")
    one_line_error(code, err, "--folds must be >= 2")


@pytest.mark.parametrize("command", ["encoder", "captioner"])
def test_out_an_existing_file_fails_before_any_query(files, no_work, command):
    run = audit_encoder if command == "encoder" else audit_captioner
    code, _, err = run(files, files["file"])
    one_line_error(code, err, f"--out {files['file']}: an existing file, not a folder")
    assert Path(files["file"]).read_text() == "keep me"


def test_out_under_a_file_fails_before_any_query(files, no_work):
    out = Path(files["file"]) / "report"
    code, _, err = audit_encoder(files, out)
    one_line_error(code, err, f"{files['file']} is a file")


@pytest.mark.parametrize("device", ["gpu", "mps", "cuda:x"])
@pytest.mark.parametrize("command", [
    ["audit", "encoder", "--members", MEMBERS, "--nonmembers", NONMEMBERS],
    ["audit", "captioner", "--members", MEMBERS, "--nonmembers", NONMEMBERS,
     "--shadow-data", SHADOW],
    ["audit", "image2image", "--members", "m", "--nonmembers", "n"],
    ["steal", "encoder", "--query-data", MEMBERS],
    ["serve", "encoder"],
    ["serve", "captioner"],
])
def test_bad_device_names_the_device_not_the_model(tmp_path, command, device):
    model = str(tmp_path / "no-such-model.pt")
    out = [] if command[0] == "serve" else ["--out", str(tmp_path / "r")]
    code, _, err = cli(*command, "--model", model, *out, "--device", device)
    one_line_error(code, err, f"--device {device}: ", "use auto, cpu, cuda or cuda:N")
    assert "no-such-model" not in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("command", [
    ["train", "encoder", "--epochs", "1"],
    ["train", "captioner", "--epochs", "1"],
    ["demo", "--epochs", "1", "--members", "24", "--no-families"],
])
def test_train_commands_check_device_and_out_first(tmp_path, monkeypatch, command):
    import leakprobe.data.loaders

    monkeypatch.setattr(leakprobe.data.loaders, "load_dataset", forbid)
    code, _, err = cli(*command, "--device", "gpu", "--out", str(tmp_path / "r"))
    one_line_error(code, err, "--device gpu: unknown device")
    (tmp_path / "f").write_text("")
    code, _, err = cli(*command, "--device", "cpu", "--out", str(tmp_path / "f"))
    one_line_error(code, err, "an existing file, not a folder")


def test_defence_wrong_attack_name_trains_nothing(tmp_path, no_work):
    code, _, err = cli("defend", "encoder", "--defence", "scsr", "--data", "synthetic:60",
                       "--members", "30", "--attacks", "partcrop,nosuchattack",
                       "--device", "cpu", "--out", str(tmp_path / "d"))
    one_line_error(code, err, "unknown attack 'nosuchattack'")
    assert not (tmp_path / "d").exists()


# --------------------------------------------------------------------------------------------
# budgets of an HTTP target, and stealing


def test_server_budget_too_small_fails_before_the_first_query(tmp_path):
    from leakprobe.serving.server import EncoderService, ServeConfig, create_app
    from leakprobe.targets.encoder import ModuleEncoder

    torch.manual_seed(0)
    service = EncoderService(ModuleEncoder(TinyEncoder(), device="cpu"),
                             ServeConfig(max_queries=500))
    with running(create_app(service)) as url:
        code, _, err = cli("audit", "encoder", "--model", url, "--members", MEMBERS,
                           "--nonmembers", NONMEMBERS, "--attacks",
                           "partcrop-pooled,encodermi-threshold", "--num-parts", "16",
                           "--out", str(tmp_path / "r"))  # TinyEncoder exposes no tokens
    # 60 images x (partcrop-pooled 17 + encodermi-threshold 10)
    one_line_error(code, err, "this audit needs 1620 queries", "budget allows 500",
                   "lower --n-views/--num-parts")
    assert service.queries_used == 0
    assert not (tmp_path / "r").exists()


def test_steal_wrong_method_queries_nothing(files, tmp_path, monkeypatch):
    import leakprobe.targets.loading

    monkeypatch.setattr(leakprobe.targets.loading, "load_model_module", forbid)
    code, _, err = cli("steal", "encoder", "--model", files["encoder"], "--query-data",
                       MEMBERS, "--method", "contsteal,nosuch", "--out", str(tmp_path / "s"))
    one_line_error(code, err, "unknown stealing method 'nosuch'")
    assert not (tmp_path / "s").exists()


def test_steal_bad_defence_or_budget_queries_nothing(files, tmp_path, no_work):
    def steal(*extra):
        return cli("steal", "encoder", "--model", files["encoder"], "--query-data", MEMBERS,
                   "--out", str(tmp_path / "s"), "--device", "cpu", *extra)

    code, _, err = steal("--method", "contsteal", "--target-defence", "nois:0.1")
    one_line_error(code, err, "nois:0.1", "noise:STD")
    # rda buys 10 views per image: a budget of 15 buys one image
    code, _, err = steal("--method", "mse,rda", "--budget", "15")
    one_line_error(code, err, "budget 15 buys fewer than 2 images at 10 views per image")
    code, _, err = steal("--method", "all", "--budget", "40", "--views-per-image", "0")
    one_line_error(code, err, "--views-per-image must be >= 1")
    assert not (tmp_path / "s").exists()


def test_steal_refuses_a_defence_on_a_served_target_before_any_query(tmp_path):
    from leakprobe.serving.server import EncoderService, ServeConfig, create_app
    from leakprobe.targets.encoder import ModuleEncoder

    torch.manual_seed(0)
    service = EncoderService(ModuleEncoder(TinyEncoder(), device="cpu"), ServeConfig())
    with running(create_app(service)) as url:
        code, _, err = cli("steal", "encoder", "--model", url, "--query-data", MEMBERS,
                           "--target-defence", "noise:0.05", "--budget", "40",
                           "--out", str(tmp_path / "s"))
    one_line_error(code, err, "served over HTTP", "its server applies its own defences")
    assert service.queries_used == 0
    assert not (tmp_path / "s").exists()
