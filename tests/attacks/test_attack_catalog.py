"""The static table ``leakprobe attacks`` prints equals what the registry and the query plan
say, so the listing (which imports no attack) cannot drift from the attacks."""

from __future__ import annotations

import pytest

from leakprobe.attacks.catalog import (
    ALIAS_QUERIES,
    ATTACKS,
    KNOWLEDGE,
    _source,
    attacks_of,
    live_catalog,
)
from leakprobe.attacks.registry import FAMILIES

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def live():
    return live_catalog()


def test_the_table_equals_the_registry_and_the_query_plan(live):
    rows, costs = live
    fix = "regenerate with: python -m leakprobe.attacks.catalog"
    assert [(a.family, a.name) for a in ATTACKS] == [(a.family, a.name) for a in rows], fix
    for table, computed in zip(ATTACKS, rows, strict=True):
        assert table == computed, f"{table.name}: {fix}\n{_source((computed,), costs)}"
    assert costs == ALIAS_QUERIES, fix


def test_the_table_says_what_newcomers_need():
    by_name = {a.name: a for a in ATTACKS if a.family == "encoder"}
    assert by_name["partcrop"].queries == 129 and by_name["partcrop"].tokens
    assert by_name["lira-encodermi"].base == "encodermi-threshold"
    assert by_name["lira-encodermi"].knowledge == ("reference",)
    assert by_name["baseline-norm"].knowledge == KNOWLEDGE
    assert by_name["infonce"].extra > 0  # its bank of views, once per audit
    assert [a.queries for a in attacks_of("stealing") if a.name == "rda"] == [10]
    assert {a.family for a in ATTACKS} == set(FAMILIES)
    assert ALIAS_QUERIES["encoder"]["all"] < sum(
        by_name[n].queries for n in by_name if "all" in by_name[n].aliases)  # views shared


def test_the_table_is_read_without_torch():
    import subprocess
    import sys

    code = ("import sys, leakprobe.attacks.catalog, leakprobe.models.catalog\n"
            "print(sorted(m for m in ('torch', 'numpy', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout.strip()
    assert out == "[]"
