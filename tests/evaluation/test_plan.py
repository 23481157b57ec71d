"""The audit's query plan: each distinct query paid once, same numbers, resumable, shardable."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from leakprobe.data.images import ImageSet
from leakprobe.errors import BudgetExceededError, LeakprobeError
from leakprobe.evaluation.audit import AuditQueries, check_audit_plan, run_audit
from leakprobe.evaluation.plan import CleanQuery, PartQuery, ViewQuery, build_plan
from leakprobe.targets.encoder import ModuleEncoder
from leakprobe.workflows.audit import audit_encoder, build_attacks

N = 24  # per side


class SmallEncoder(nn.Module):
    """A CNN with tokens in its embedding space (PartCrop's path), random weights."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(),
                                  nn.Conv2d(8, 16, 3, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3))

    @torch.jit.export
    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).flatten(2).transpose(1, 2)


def sets(seed: int = 0) -> tuple[ImageSet, ImageSet]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2 * N, 3, 32, 32, generator=g)
    return (ImageSet(x[:N], [f"m{i}" for i in range(N)], source="members"),
            ImageSet(x[N:], [f"n{i}" for i in range(N)], source="nonmembers"))


def encoder(budget: int | None = None) -> ModuleEncoder:
    torch.manual_seed(0)
    return ModuleEncoder(SmallEncoder(), input_size=32, device="cpu", batch_size=64,
                         budget=budget)


ALL = "all,sslmem"


def test_the_plan_shares_equal_requests_and_counts_them_once():
    target = encoder()
    attacks = build_attacks(ALL, 0, target=target, num_parts=8)
    plan = build_plan(attacks, target, 2 * N)
    by_kind = {type(r.request): r for r in plan.requests}
    assert set(by_kind) == {PartQuery, ViewQuery, CleanQuery}
    shared = {tuple(r.attacks) for r in plan.requests}
    assert ("encodermi-vector", "encodermi-set", "encodermi-threshold") in shared
    assert ("lpla-p1", "lpla-p2", "lpla-pinf") in shared
    clean = next(r for r in plan.requests if isinstance(r.request, CleanQuery))
    assert {"lpla-p1", "baseline-norm", "baseline-consistency"} <= set(clean.attacks)
    # partcrop 9 (8 parts + tokens), encodermi 10, lpla 3 views, consistency 4 views,
    # sslmem 8 views, the clean image 1
    assert plan.queries_per_image == 9 + 10 + 3 + 4 + 8 + 1
    unshared = 9 + 3 * 10 + 3 * 4 + 1 + 5 + 8
    assert plan.unshared_queries == unshared * 2 * N
    assert plan.total_queries == (9 + 10 + 3 + 4 + 8 + 1) * 2 * N


def test_shared_features_equal_each_attack_alone_and_queries_are_paid_once():
    members, nonmembers = sets()
    target = encoder()
    attacks = build_attacks(ALL, 0, target=target, num_parts=8)
    shared = AuditQueries(attacks, target, members, nonmembers, order=0)
    together = {a.name: shared.features_in_input_order(a) for a in attacks}
    assert target.queries == shared.plan.total_queries  # every distinct query once
    for attack in attacks:
        alone_target = encoder()
        alone = AuditQueries([attack], alone_target, members, nonmembers, order=0)
        np.testing.assert_array_equal(together[attack.name],
                                      alone.features_in_input_order(attack),
                                      err_msg=attack.name)
        assert alone_target.queries == attack.queries_per_image(alone_target) * 2 * N


def test_the_budget_check_counts_the_plan():
    members, nonmembers = sets()
    attacks = build_attacks("encodermi,lpla", 0)
    need = (10 + 3 + 1) * 2 * N
    assert check_audit_plan(attacks, encoder(), members, nonmembers) == need
    with pytest.raises((LeakprobeError, BudgetExceededError), match=f"needs {need} queries"):
        check_audit_plan(attacks, encoder(budget=need - 1), members, nonmembers)
    results = run_audit(attacks + build_attacks("", 0)[-1:], encoder(budget=need), members,
                        nonmembers, permutations=0)
    assert {r.attack for r in results} >= {"encodermi-set", "lpla-p2", "blind"}


class Interrupting(ModuleEncoder):
    """Raises KeyboardInterrupt once ``stop_after`` queries are answered (a user's Ctrl-C)."""

    stop_after = 10**9

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        if self.queries >= self.stop_after:
            raise KeyboardInterrupt
        return super().embed(images)


def interrupting(stop_after: int) -> Interrupting:
    torch.manual_seed(0)
    t = Interrupting(SmallEncoder(), input_size=32, device="cpu", batch_size=64)
    t.stop_after = stop_after
    return t


def test_a_killed_audit_resumes_without_paying_a_query_twice(tmp_path):
    members, nonmembers = sets()
    names = "encodermi,lpla,baseline"
    plan = build_plan(build_attacks(names, 0), encoder(), 2 * N)
    # the clean image (48), lpla's views (144) and consistency's (192) run before EncoderMI
    first = interrupting(2 * N * (1 + 3 + 4))
    out = tmp_path / "audit"
    with pytest.raises(KeyboardInterrupt):
        audit_encoder(first, members, nonmembers, attacks=names, out_dir=out, permutations=9)
    partial = json.loads((out / "report.json").read_text())
    assert partial["context"]["interrupted"] is True
    finished = {r["attack"] for r in partial["results"]}
    assert {"blind", "baseline-norm", "lpla-p1"} <= finished
    assert "encodermi-vector" in partial["context"]["unfinished_attacks"]
    second = interrupting(10**9)
    report = audit_encoder(second, members, nonmembers, attacks=names, out_dir=out,
                           permutations=9)
    assert first.queries + second.queries == plan.total_queries  # nothing paid twice
    assert second.queries == 10 * 2 * N  # only EncoderMI's views were left
    assert report["context"]["resumed_features"] >= 5
    fresh = audit_encoder(encoder(), members, nonmembers, attacks=names, out_dir=None,
                          permutations=9)
    for a, b in zip(report["results"], fresh["results"], strict=True):
        assert a["attack"] == b["attack"]
        assert a["metrics"] == b["metrics"], a["attack"]
    assert "interrupted" not in report["context"]
    assert report["context"]["total_queries"] == plan.total_queries


def test_a_changed_model_does_not_reuse_the_cache(tmp_path):
    members, nonmembers = sets()
    out = tmp_path / "audit"
    audit_encoder(encoder(), members, nonmembers, attacks="lpla-p2", out_dir=out,
                  permutations=0)
    torch.manual_seed(1)
    other = ModuleEncoder(SmallEncoder(), input_size=32, device="cpu", batch_size=64)
    report = audit_encoder(other, members, nonmembers, attacks="lpla-p2", out_dir=out,
                           permutations=0)
    assert report["context"]["resumed_features"] == 0
    assert other.queries == 4 * 2 * N


def test_interrupt_is_the_cli_exit_130(tmp_path, monkeypatch):
    import leakprobe.workflows.encoder_audit as workflow
    from cli_runner import run_cli

    def interrupted(spec):
        raise KeyboardInterrupt

    monkeypatch.setattr(workflow, "run_encoder_audit", interrupted)
    path = tmp_path / "m.pt"
    torch.jit.script(SmallEncoder()).save(str(path))
    code, _, _ = run_cli("audit", "encoder", "--model", str(path), "--members", "digits",
                         "--nonmembers", "digits", "--out", str(tmp_path / "o"))
    assert code == 130


def test_chunk_states_replay_the_draws_of_a_one_process_run():
    """A worker given a replayed generator state draws exactly the one-process views."""
    from leakprobe.evaluation.plan import stream_answers
    from leakprobe.evaluation.workers import answer_chunk, chunk_states, token_count

    members, _ = sets()
    target = encoder()
    x = members.images
    for attack in build_attacks("encodermi-set,partcrop", 0, target=target, num_parts=8)[:2]:
        request = attack.query_requests(target)[0]
        request = type(request)(**{**request.__dict__, "chunk": 5})  # several chunks
        one = list(stream_answers(target, x, request))
        states, reference = chunk_states(request, len(x), token_count(target))
        assert len(states) == len(one) == 5
        for (start, answer), state in zip(one, states, strict=True):
            stop = min(start + 5, len(x))
            got = answer_chunk(target, x, request, start, stop, state, reference)
            for field in ("views", "parts", "tokens", "reference"):
                a, b = getattr(answer, field), getattr(got, field)
                assert (a is None) == (b is None), field
                if a is not None:
                    assert torch.equal(a, b), (attack.name, field, start)


@pytest.mark.xdist_group("ray")  # one local Ray cluster at a time under pytest-xdist
def test_two_ray_workers_give_the_one_process_report(tmp_path):
    pytest.importorskip("ray")
    from leakprobe.evaluation.workers import RayWorkers
    from leakprobe.targets.families import load_target

    path = tmp_path / "encoder.pt"
    torch.manual_seed(0)
    torch.jit.script(SmallEncoder()).save(str(path))
    spec = {"spec": str(path), "family": "encoder", "image_size": 32, "batch_size": 64,
            "query_precision": "fp32"}
    members, nonmembers = sets()
    names = "partcrop,encodermi-set,lpla-p2"
    reports = []
    for workers in (None, RayWorkers(spec=spec, workers=2)):
        target = load_target(device="cpu", **spec)
        try:
            reports.append(audit_encoder(target, members, nonmembers, attacks=names,
                                         num_parts=8, permutations=9, workers=workers))
        finally:
            if workers is not None:
                workers.close()
    one, two = reports
    assert two["context"]["query_workers"]["workers"] == 2
    for a, b in zip(one["results"], two["results"], strict=True):
        assert a["attack"] == b["attack"]
        assert a["metrics"] == b["metrics"], a["attack"]


def test_calibrated_attacks_of_one_statistic_are_counted_once():
    from leakprobe.attacks.registry import create_attack

    target = encoder()
    lira = create_attack("lira-encodermi", family="encoder")
    rmia = create_attack("rmia-encodermi", family="encoder")
    sslmem = create_attack("lira-sslmem", family="encoder")
    plan = build_plan([lira, rmia, sslmem], target, 2 * N)
    assert plan.shared_with == {"rmia-encodermi": "lira-encodermi"}
    assert plan.queries_per_image == lira.queries_per_image(target) + 8
    assert "shared by rmia-encodermi" in "\n".join(plan.lines())
