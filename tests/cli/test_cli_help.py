"""What a person reads in the terminal: every command's `--help`, the result tables."""

from __future__ import annotations

import re

import numpy as np
import typer

from cli_runner import run_cli as cli
from leakprobe.cli import options as o

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


# --------------------------------------------------------------------------------------------
# every input's forms, one example each, in the Inputs panel at the top

def _model_inputs() -> dict[tuple[str, ...], tuple]:
    """Command -> the model forms its help must list."""
    return {
        ("audit", "encoder"): o.model_forms("encoder"),
        ("audit", "ownership"): o.model_forms("encoder"),
        ("audit", "run"): o.model_forms("encoder"),
        ("steal", "encoder"): o.model_forms("encoder"),
        ("serve", "encoder"): o.model_forms("encoder", url=False),
        ("audit", "image2image"): o.model_forms("image2image"),
        ("serve", "image2image"): o.model_forms("image2image", url=False),
        ("audit", "captioner"): o.model_forms("captioner"),
        ("serve", "captioner"): o.model_forms("captioner", url=False),
        ("audit", "image-text"): o.model_forms("image-text"),
        ("serve", "image-text"): o.model_forms("image-text", url=False),
    }


def _data_inputs() -> dict[tuple[str, ...], tuple]:
    """Command -> the data forms its help must list."""
    return {
        ("audit", "encoder"): o.SPLIT_FORMS,
        ("audit", "ownership"): o.SPLIT_FORMS,
        ("audit", "run"): o.SPLIT_FORMS,
        ("audit", "image2image"): o.PAIRED_FORMS,
        ("audit", "captioner"): o.CAPTION_FORMS,
        ("steal", "encoder"): o.DATA_FORMS,
        ("train", "encoder"): o.DATA_FORMS,
        ("train", "image2image"): o.DATA_FORMS,
        ("train", "captioner"): o.CAPTION_FORMS,
        ("audit", "image-text"): o.CAPTION_FORMS,
        ("train", "image-text"): o.CAPTION_FORMS,
        ("defend", "encoder"): o.DATA_FORMS,
        ("study",): o.DATA_FORMS,
    }


#: Commands that read no model and no data set (groups, listings, the demo, report).
NO_MODEL_OR_DATA = {(), ("train",), ("audit",), ("serve",), ("steal",), ("defend",),
                    ("report",), ("models",), ("attacks",), ("demo",)}


def test_every_command_is_checked_for_its_input_forms():
    checked = set(_model_inputs()) | set(_data_inputs()) | NO_MODEL_OR_DATA
    assert set(_command_paths()) <= checked, set(_command_paths()) - checked


def test_every_help_lists_each_model_and_data_form_it_accepts(monkeypatch):
    models, data = _model_inputs(), _data_inputs()
    for path in sorted(set(models) | set(data)):
        text = _flat(_help(path, 250, monkeypatch))
        for form in (*models.get(path, ()), *data.get(path, ())):
            assert form.example in text, (path, form.example)


def test_the_model_forms_a_newcomer_asked_for_are_listed(monkeypatch):
    for path in (("audit", "encoder"), ("steal", "encoder"), ("audit", "ownership")):
        text = _flat(_help(path, 120, monkeypatch))
        for shown in (".pth --arch", ".pth.tar", "hf:", "http://", ".safetensors",
                      "file.py:factory", "package.module:factory", "TorchScript",
                      "the hf extra"):
            assert shown in text, (path, shown)
    serve = _flat(_help(("serve", "encoder"), 120, monkeypatch))
    assert ".pth --arch" in serve and "hf:" in serve
    assert "a model served by" not in serve  # serve needs a local model
    arch = _flat(_help(("audit", "encoder"), 120, monkeypatch))
    assert "--arch NAME Registered architecture of the weights" in arch
    assert ".pth, .pth.tar or .pt state dict" in arch  # not ".safetensors only"
    for data in ("fashion-mnist", "digits", "synthetic:", "idx:", "cifar10:", "split.json"):
        assert data in arch, data
    captions = _flat(_help(("audit", "captioner"), 120, monkeypatch))
    assert "COCO captions JSON" in captions


def _panels(text: str) -> list[tuple[str, str]]:
    """(title, body) of each panel of a rendered help, in order."""
    out: list[tuple[str, str]] = []
    for line in text.splitlines():
        found = re.match(r"╭─ (.*?) ─", line)
        if found:
            out.append((found.group(1), ""))
        elif out and line.startswith("│"):
            out[-1] = (out[-1][0], out[-1][1] + line + "\n")
    return out


def test_required_options_and_out_sit_in_the_inputs_panel_at_the_top(monkeypatch):
    from typer.core import TyperOption

    from leakprobe.cli import app
    from leakprobe.cli.options import INPUTS_PANEL

    root = typer.main.get_command(app)
    for path in _command_paths():
        cmd = root
        for name in path:
            cmd = cmd.commands[name]
        options = [p for p in cmd.params if isinstance(p, TyperOption)]
        required = [p.opts[0] for p in options if p.required]
        misplaced = [p.opts[0] for p in options
                     if (p.required or p.opts[0] == "--out") and p.rich_help_panel != INPUTS_PANEL]
        assert not misplaced, (path, misplaced)
        if not (required or any(p.opts[0] == "--out" for p in options)):
            continue
        for columns in (80, 120):
            panels = [t for t in _panels(_help(path, columns, monkeypatch)) if t[0] != "Arguments"]
            assert panels[0][0] == INPUTS_PANEL, (path, [t for t, _ in panels])
            assert "Options" not in [t for t, _ in panels], path  # --help joins a named panel
            first = panels[0][1]
            for option in (*required, "--out"):
                if any(p.opts[0] == option for p in options):
                    assert option in first, (path, option)


def test_audit_encoder_help_opens_with_its_inputs(monkeypatch):
    text = _help(("audit", "encoder"), 100, monkeypatch)
    titles = [t for t, _ in _panels(text)]
    assert titles[:2] == ["Inputs", "Model loading and queries"], titles
    inputs = _panels(text)[0][1]
    assert [o for o in ("--model", "--members", "--nonmembers", "--out") if f"* {o} " in
            re.sub(r"\s+", " ", inputs)] == ["--model", "--members", "--nonmembers", "--out"]
    assert "--help" in _panels(text)[-1][1]


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
    report = _membership_report(["partcrop", long_name, "blind"])
    _print_summary(report, None)
    verdict, *lines = capsys.readouterr().out.splitlines()
    assert verdict == report["summary"]  # the verdict first, then the table
    # every attack of this report, the blind one too, scores members higher
    assert verdict.startswith("Inconclusive: the member and non-member images can be told "
                              "apart without the model")
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

