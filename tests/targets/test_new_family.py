"""A new model family is a target class, two registrations and its attacks.

The worked example of docs/ARCHITECTURE.md ("Adding a target family"): a toy depth-estimator
family, written entirely here, audited through the generic ``audit_model`` with no edit to
any orchestrator. Its attack is above chance on a memorising target and at chance on a null
one; the report has the family's kind, the permutation test and the blind floor.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from leakprobe.attacks.membership import MembershipAttack
from leakprobe.attacks.registry import FAMILIES as ATTACK_FAMILIES
from leakprobe.attacks.registry import AttackFamily, register_attack, register_attack_family
from leakprobe.data.images import ImageSet
from leakprobe.targets.base import TargetBase
from leakprobe.targets.families import FAMILIES, Family
from leakprobe.workflows.audit import audit_model


class DepthTarget(TargetBase):
    """Targets of the toy family answer ``estimate(images) -> (B, 1, H, W)``."""

    kind = "depth"

    def __init__(self, module: nn.Module, *, batch_size: int = 16) -> None:
        self.module = module
        self.device = torch.device("cpu")
        super().__init__(module, name="toy-depth", input_size=16, batch_size=batch_size)

    def check_output(self, out: object, n: int) -> torch.Tensor:
        return self._check_tensor(out, n, 4, "(B,1,H,W) depth maps")

    def estimate(self, images: torch.Tensor) -> torch.Tensor:
        return self._batched_tensor(self.module, images)


class MemorisingDepth(nn.Module):
    """Deeper (larger) depth on the images it was 'trained' on, noise elsewhere."""

    def __init__(self, members: torch.Tensor | None, seed: int = 0) -> None:
        super().__init__()
        self.keys = None if members is None else members.flatten(1)
        self.seed = seed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = torch.Generator().manual_seed(int(x.sum().item() * 1e3) % 2**31)
        depth = torch.rand(x.shape[0], 1, *x.shape[2:], generator=g)
        if self.keys is not None:
            dist = torch.cdist(x.flatten(1), self.keys, compute_mode="donot_use_mm_for_euclid_dist")
            hit = dist.min(1).values < 1e-4
            depth = depth + 0.5 * hit.float()[:, None, None, None]
        return depth


@pytest.fixture()
def depth_family(monkeypatch):
    """Register the toy family (a target family and an attack family), then remove it."""
    monkeypatch.setitem(FAMILIES, "depth", Family(
        name="depth", what="a depth estimator", method="estimate",
        target_path=f"{__name__}:DepthTarget", loader_path=f"{__name__}:DepthTarget",
        client_path=f"{__name__}:DepthTarget", service_path=f"{__name__}:DepthTarget",
        default_attacks="all", report_kind="depth-membership"))
    register_attack_family(AttackFamily("depth", "membership inference on depth estimators",
                                        (), all=("depth-mean",)))

    @register_attack("depth-mean", family="depth", summary="mean predicted depth; 1 query")
    class DepthMean(MembershipAttack):
        target_kind = "depth"
        needs_fit = False

        def __init__(self, seed: int = 0) -> None:
            self.seed = seed

        def queries_per_image(self, target) -> int:
            return 1

        def features(self, target, images):
            return target.estimate(images).mean((1, 2, 3)).double().numpy()[:, None]

        def score_features(self, features):
            return features[:, 0]

    yield
    from leakprobe.attacks import registry

    del ATTACK_FAMILIES["depth"], registry._ENTRIES["depth"]


def _sets(n: int = 40) -> tuple[ImageSet, ImageSet]:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2 * n, 3, 16, 16, generator=g)
    ids = [f"img{i}" for i in range(2 * n)]
    return ImageSet(images[:n], ids[:n], source="toy"), ImageSet(images[n:], ids[n:],
                                                                  source="toy")


def test_a_new_family_is_audited_through_its_registrations(depth_family, tmp_path):
    members, nonmembers = _sets()
    target = DepthTarget(MemorisingDepth(members.images))
    report = audit_model(target, members, nonmembers, family="depth", permutations=19,
                         out_dir=tmp_path)
    assert report["kind"] == "depth-membership"
    by_attack = {r["attack"]: r["metrics"] for r in report["results"]}
    assert set(by_attack) == {"depth-mean", "blind"}  # the family's all + the blind floor
    assert by_attack["depth-mean"]["auc"] > 0.95 and by_attack["depth-mean"]["p_value"] < 0.01
    assert json.loads((tmp_path / "report.json").read_text())["kind"] == "depth-membership"
    assert (tmp_path / "report.html").exists()
    assert target.queries == len(members) + len(nonmembers)  # one query per image


def test_a_new_family_sits_at_chance_on_a_null_target(depth_family):
    members, nonmembers = _sets()
    report = audit_model(DepthTarget(MemorisingDepth(None)), members, nonmembers,
                         family="depth", permutations=0)
    auc = {r["attack"]: r["metrics"]["auc"] for r in report["results"]}["depth-mean"]
    assert abs(auc - 0.5) < 0.2


def test_audit_model_dispatches_builtin_families_and_refuses_unknown_ones():
    from leakprobe.errors import LeakprobeError

    members, nonmembers = _sets()
    with pytest.raises(LeakprobeError, match="unknown model family"):
        audit_model(object(), members, nonmembers, family="lidar")
    with pytest.raises(LeakprobeError, match="is not an encoder"):
        audit_model(object(), members, nonmembers, family="encoder",
                    attacks="baseline-norm", permutations=0)
