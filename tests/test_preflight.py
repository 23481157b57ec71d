"""Pre-flight checks of the Python API: nothing is trained, queried or written first."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

import leakprobe.training.captioning
from leakprobe.data.captions import make_synthetic_captioned
from leakprobe.data.synthetic import make_synthetic
from leakprobe.errors import LeakprobeError
from leakprobe.preflight import check_out_dir, remaining_queries
from leakprobe.targets.encoder import ModuleEncoder
from leakprobe.workflows.audit import audit_captioner, audit_encoder, audit_image2image
from leakprobe.workflows.steal import steal_encoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3))


def forbid(*_args, **_kwargs):
    raise AssertionError("expensive work started before the pre-flight checks")


@pytest.fixture
def sets():
    data = make_synthetic(60, 32, seed=4)
    return data.subset(range(30)), data.subset(range(30, 60))


def test_out_dir_checks_create_nothing(tmp_path):
    assert check_out_dir(None) is None
    assert check_out_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert not (tmp_path / "a").exists()
    (tmp_path / "f").write_text("x")
    with pytest.raises(LeakprobeError, match="an existing file, not a folder"):
        check_out_dir(tmp_path / "f")
    with pytest.raises(LeakprobeError, match="is a file"):
        check_out_dir(tmp_path / "f" / "sub")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes everywhere")
def test_out_dir_under_an_unwritable_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(LeakprobeError, match="not writable"):
            check_out_dir(locked / "out")
    finally:
        locked.chmod(0o700)


def test_remaining_queries_of_local_and_unlimited_targets():
    target = ModuleEncoder(Tiny(), device="cpu", budget=10)
    assert remaining_queries(target) == 10
    target.embed(torch.rand(4, 3, 32, 32))
    assert remaining_queries(target) == 6
    assert remaining_queries(ModuleEncoder(Tiny(), device="cpu")) is None


def test_encoder_audit_over_budget_fails_before_the_first_query(sets, tmp_path):
    target = ModuleEncoder(Tiny(), device="cpu", budget=500)
    with pytest.raises(LeakprobeError) as info:
        audit_encoder(target, *sets, attacks="partcrop-pooled,encodermi-vector",  # no tokens
                      out_dir=tmp_path / "r", num_parts=16, n_views=16)
    # 60 images x (partcrop-pooled 17 + encodermi-vector 16 + blind 0)
    assert str(info.value) == (
        "this audit needs 1980 queries (60 images x 33 per image: partcrop-pooled 17, "
        "encodermi-vector 16); the target's budget allows 500: lower --n-views/--num-parts, "
        "use fewer attacks or images")
    assert target.queries == 0 and not (tmp_path / "r").exists()


def test_encoder_audit_out_dir_a_file_fails_before_the_first_query(sets, tmp_path):
    target = ModuleEncoder(Tiny(), device="cpu")
    (tmp_path / "r").write_text("")
    with pytest.raises(LeakprobeError, match="an existing file"):
        audit_encoder(target, *sets, attacks="baseline-norm", out_dir=tmp_path / "r")
    assert target.queries == 0


def test_audits_refuse_a_target_of_the_wrong_kind(sets, monkeypatch):
    target = ModuleEncoder(Tiny(), device="cpu")
    monkeypatch.setattr(leakprobe.training.captioning, "train_captioner", forbid)
    captioned = make_synthetic_captioned(60, 32, seed=1)
    shadow = make_synthetic_captioned(40, 32, seed=2)
    with pytest.raises(LeakprobeError, match=r"is not a captioner: it has no caption\(images\)"):
        audit_captioner(target, captioned.subset(range(30)), captioned.subset(range(30, 60)),
                        shadow_data=shadow, attacks="m4i-metric")
    with pytest.raises(LeakprobeError, match=r"is not an image-to-image model"):
        audit_image2image(target, *sets, attacks="reconstruction")
    assert target.queries == 0


def test_captioner_audit_checks_everything_before_training(monkeypatch):
    monkeypatch.setattr(leakprobe.training.captioning, "train_captioner", forbid)

    class Parrot:
        input_size = 32
        queries = 0

        def caption(self, images):
            raise AssertionError("queried")

    captioned = make_synthetic_captioned(60, 32, seed=1)
    members, nonmembers = captioned.subset(range(30)), captioned.subset(range(30, 60))
    shadow = make_synthetic_captioned(40, 32, seed=2)
    with pytest.raises(LeakprobeError, match="members and non-members overlap"):
        audit_captioner(Parrot(), members, members, shadow_data=shadow, attacks="m4i-metric")
    with pytest.raises(LeakprobeError, match="unknown captioning attack"):
        audit_captioner(Parrot(), members, nonmembers, shadow_data=shadow, attacks="m4i-nope")
    with pytest.raises(LeakprobeError, match="--classifier must be svm, logreg or mlp"):
        audit_captioner(Parrot(), members, nonmembers, shadow_data=shadow, attacks="m4i-metric",
                        classifier="rf")
    with pytest.raises(LeakprobeError, match="epochs must be >= 1"):
        audit_captioner(Parrot(), members, nonmembers, shadow_data=shadow, attacks="m4i-metric",
                        shadow_epochs=0)
    with pytest.raises(LeakprobeError, match="the shadow data shares 30 images with the "
                                             "target's members"):
        audit_captioner(Parrot(), members, nonmembers, shadow_data=members, attacks="m4i-metric")


def test_stealing_over_budget_fails_before_the_first_query(tmp_path):
    data = make_synthetic(100, 32, seed=1)
    probe = make_synthetic(40, 32, seed=2)
    target = ModuleEncoder(Tiny(), device="cpu", budget=150)
    with pytest.raises(LeakprobeError) as info:
        steal_encoder(target, data, budgets="40,80", methods="contsteal,mse", epochs=1,
                      device="cpu", out_dir=tmp_path / "s", probe_train=probe.subset(range(20)),
                      probe_test=probe.subset(range(20, 40)))
    assert str(info.value).startswith(
        "stealing needs 200 queries (80 for contsteal views, 1 per image, 80 for the clean "
        "image, 40 probe images); the target's budget allows 150: ")
    assert target.queries == 0 and not (tmp_path / "s").exists()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"methods": "contsteal,nosuch"}, "unknown stealing method 'nosuch'"),
    ({"budgets": "2,80", "methods": "contsteal-fresh,mse"},
     "budget 2 buys fewer than 2 images at 2 views per image"),
    ({"budgets": "15,80", "methods": "rda"},
     "budget 15 buys fewer than 2 images at 10 views per image"),
    ({"budgets": "400", "methods": "mse"}, "the budget needs 400 query images"),
])
def test_stealing_options_fail_before_any_query(kwargs, message):
    data = make_synthetic(100, 32, seed=1)
    probe = make_synthetic(40, 32, seed=2)
    target = ModuleEncoder(Tiny(), device="cpu")
    args = {"budgets": "40,80", "methods": "contsteal,mse", **kwargs}
    with pytest.raises(LeakprobeError, match=message):
        steal_encoder(target, data, epochs=1, device="cpu", probe_train=probe.subset(range(20)),
                      probe_test=probe.subset(range(20, 40)), **args)
    assert target.queries == 0


def test_a_resumed_steal_counts_only_the_queries_still_to_pay(tmp_path):
    data = make_synthetic(20, 32, seed=1)
    probe = make_synthetic(20, 32, seed=2)
    kwargs = {"budgets": "8", "methods": "mse", "epochs": 1, "device": "cpu",
              "out_dir": tmp_path / "s", "probe_train": probe.subset(range(10)),
              "probe_test": probe.subset(range(10, 20))}
    first = ModuleEncoder(Tiny(), device="cpu", budget=28)  # 8 stream + 20 probe queries
    steal_encoder(first, data, **kwargs)
    assert first.queries == 28
    again = ModuleEncoder(Tiny(), device="cpu", budget=0)  # everything is on disk
    steal_encoder(again, data, **kwargs)
    assert again.queries == 0
