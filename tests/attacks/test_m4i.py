"""M4I captioner audit: runs end to end under the shadow setting and refuses overlaps."""

from __future__ import annotations

import pytest

from leakprobe.audits import audit_captioner
from leakprobe.data.captions import Tokenizer, make_synthetic_captioned
from leakprobe.data.splits import make_split
from leakprobe.errors import LeakprobeError
from leakprobe.targets.captioner import ModuleCaptioner
from leakprobe.training.captioning import train_captioner
from leakprobe.training.trainer import TrainConfig


@pytest.fixture(scope="module")
def captioned():
    data = make_synthetic_captioned(80, 32, seed=0)
    split = make_split(data, 40, seed=0)
    refs = split.members.extras["captions"]
    tok = Tokenizer.fit([c for cs in refs for c in cs])
    config = TrainConfig(epochs=20, batch_size=20, lr=2e-3, amp=True, seed=0, device="cpu")
    model, _ = train_captioner(split.members, tok, config)
    return ModuleCaptioner(model, tok, device="cpu"), split


def test_captioner_audit_runs_under_the_shadow_setting(captioned, tmp_path):
    target, split = captioned
    shadow = make_synthetic_captioned(60, 32, seed=7)
    report = audit_captioner(target, split.members.subset(range(20, 40)),
                             split.nonmembers.subset(range(20, 40)), shadow, seed=0,
                             out_dir=tmp_path, shadow_epochs=5)
    assert report["kind"] == "captioner-membership" and report["knowledge"] == "shadow"
    assert [r["attack"] for r in report["results"]] == ["m4i-metric", "m4i-feature", "blind"]
    assert (tmp_path / "report.html").exists()


def test_shadow_data_overlapping_the_target_is_refused(captioned):
    target, split = captioned
    with pytest.raises(LeakprobeError, match="shadow data overlaps"):
        audit_captioner(target, split.members, split.nonmembers, split.members,
                        shadow_epochs=1)
