"""What a person reads in the terminal: every command's `--help`, the result tables."""

from __future__ import annotations

import re

import numpy as np
import typer

from cli_runner import run_cli as cli

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _command_paths() -> list[tuple[str, ...]]:
    from leakprobe.cli import app

    def walk(cmd, path):
        yield path
        for name, sub in sorted(getattr(cmd, "commands", {}).items()):
            yield from walk(sub, (*path, name))

    return list(walk(typer.main.get_command(app), ()))


def _help(path: tuple[str, ...], columns: int, monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", str(columns))
    code, out, err = cli(*path, "--help")
    assert code == 0, (path, err)
    return ANSI.sub("", out)


def _flat(text: str) -> str:
    """Help text without the box drawing, wrapped lines joined."""
    lines = [ln.strip().strip("│╭╮╰╯─").strip() for ln in text.splitlines()]
    return re.sub(r"\s+", " ", " ".join(lines))


def test_every_help_is_clean_at_80_and_200_columns(monkeypatch):
    paths = _command_paths()
    assert ("audit", "image2image") in paths and ("steal", "encoder") in paths
    assert len(paths) > 15
    for columns in (80, 200):
        for path in paths:
            text = _help(path, columns, monkeypatch)
            assert "<bool>" not in text, (path, columns, text)
            assert "…" not in text, (path, columns, text)  # nothing cut by the table
            assert "--help" in text


def test_flags_show_no_value_type(monkeypatch):
    text = _help(("train", "encoder"), 200, monkeypatch)
    line = next(ln for ln in text.splitlines() if "--dp " in ln)
    assert "Train with DP-SGD" in line and "<" not in line
    line = next(ln for ln in text.splitlines() if "--resume" in ln)
    assert "--no-resume" in line and "<" not in line


def test_the_image2image_attacks_default_is_shown_in_full(monkeypatch):
    for columns in (80, 200):
        text = _flat(_help(("audit", "image2image"), columns, monkeypatch))
        assert "default: reconstruction, predictability, membership-error" in text


def _membership_report(names: list[str]) -> dict:
    from leakprobe.report.schema import AttackResult, build_report

    rng = np.random.default_rng(0)
    member = np.r_[np.ones(20, bool), np.zeros(20, bool)]
    results = [AttackResult(attack=n, params={}, scores=rng.normal(size=40) + member,
                            is_member=member, ids=[str(i) for i in range(40)], folds=None,
                            queries=40, seconds=0.1)
               for n in names]
    return build_report("encoder-membership", "known-subset", 0, results, n_bootstrap=20)


def _columns_aligned(lines: list[str]) -> None:
    """Fixed-width rows: every line as long as the header, numbers ending where it ends."""
    assert len({len(ln) for ln in lines}) == 1, "\n".join(lines)


def test_the_summary_table_fits_long_attack_names(capsys):
    from leakprobe.cli.app import _print_summary

    long_name = "encodermi-cosine-with-a-very-long-suffix-x"
    _print_summary(_membership_report(["partcrop", long_name, "blind"]), None)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and lines[2].startswith(long_name + " ")
    _columns_aligned(lines)
    auc_end = lines[0].index("AUC") + 3
    assert all(ln[auc_end - 1].isdigit() for ln in lines[1:])
    # 20 non-members cannot resolve 1% FPR: the TPR column says n/a
    tpr_end = lines[0].index("TPR@1%") + 6
    assert all(ln[tpr_end - 3:tpr_end] == "n/a" for ln in lines[1:])


def test_the_stealing_table_fits_long_method_names_and_warns(monkeypatch, tmp_path):
    import leakprobe.data.splits as splits
    import leakprobe.targets.loading as loading
    import leakprobe.workflows.steal as stealing

    report = {"target_probe_accuracy": 0.338, "random_init_probe_accuracy": 0.375,
              "probe_informative": False,
              "warnings": ["the target's linear probe (0.338) ... cannot judge theft"],
              "results": [{"method": m, "budget": 40, "queries_used": 40,
                           "metrics": {"surrogate_probe_accuracy": 0.3, "agreement": 0.5,
                                       "procrustes_cosine": 0.1}}
                          for m in ("mse", "contsteal-with-a-longer-name")]}
    monkeypatch.setattr(loading, "load_encoder", lambda *a, **k: type(
        "T", (), {"input_size": 32})())
    monkeypatch.setattr(splits, "load_images", lambda *a, **k: None)
    monkeypatch.setattr(stealing, "steal_encoder", lambda *a, **k: report)
    code, out, err = cli("steal", "encoder", "--model", "m.pt", "--query-data", "q",
                         "--out", str(tmp_path))
    assert code == 0, err
    lines = out.splitlines()
    assert "(probe not informative)" in lines[0]
    _columns_aligned(lines[1:4])
    assert lines[3].startswith("contsteal-with-a-longer-name ")
    assert "warning: the target's linear probe (0.338)" in err

