"""The docs cannot drift from the code: every command in them is checked, and said to be run.

* Every code block in README.md and docs/ that holds a command (shell or Python) carries a
  title saying whether a test runs it (``title="run by tests/..."``, the file named must exist)
  or not (``title="not run"``), so a reader knows which examples are executed.
* Every ``leakprobe ...`` command in any block, run or not, parses against the real CLI: the
  sub-command exists and every option is one the command has.
* The API reference page names every export of ``leakprobe``.
* The README stays the front door (at most about 200 lines) and its "audit your own model"
  block is run here, exactly as written, on a small TorchScript encoder and two image folders.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", *ROOT.joinpath("docs").rglob("*.md")])
FENCE = re.compile(r"^```(?P<lang>\S*)(?P<info>[^\n]*)\n(?P<body>.*?)^```", re.M | re.S)
COMMAND = re.compile(r"^\s*(\$ )?(\.venv/bin/)?(leakprobe|make|python|curl|pip|bash|LEAKPROBE_)",
                     re.M)
TITLE = re.compile(r'title="(?P<title>[^"]*)"')


def _blocks() -> list[tuple[Path, str, str, str]]:
    """``(file, language, title, body)`` of every fenced block that holds a command."""
    found = []
    for path in DOCS:
        for m in FENCE.finditer(path.read_text()):
            lang, body = m["lang"], m["body"]
            if lang == "python" or (lang in ("bash", "sh", "console", "shell", "")
                                    and COMMAND.search(body)):
                title = TITLE.search(m["info"])
                found.append((path, lang, title["title"] if title else "", body))
    return found


def _leakprobe_commands(body: str) -> list[list[str]]:
    """The argument lists of the ``leakprobe`` commands of a shell block (continuation lines
    joined, comments dropped)."""
    joined = re.sub(r"\\\n\s*", " ", body)
    commands = []
    for line in joined.splitlines():
        line = re.sub(r"^\s*(\$ )?", "", line)
        line = re.sub(r"^([A-Z_]+=\S+ )+", "", line)  # LEAKPROBE_X=1 leakprobe ...
        if not re.match(r"(\.venv/bin/)?leakprobe\b", line):
            continue
        words = shlex.split(line, comments=True)
        commands.append(words[1:])
    return commands


def test_every_command_block_says_whether_it_is_run() -> None:
    untitled = [f"{p.relative_to(ROOT)}: {b.strip().splitlines()[0][:60]}"
                for p, _, title, b in _blocks()
                if "run by" not in title and "not run" not in title]
    assert not untitled, ('blocks without title="run by ..." / "not run":\n'
                          + "\n".join(untitled))
    for path, _, title, _ in _blocks():
        m = re.search(r"run by (\S+)", title)
        if m and "not run" not in title:
            named = ROOT / m[1].lstrip("(").rstrip(").,;")
            assert named.exists(), f"{path}: {title} names no file"


def _parse(words: list[str]) -> None:
    import typer
    from typer._click import core

    from leakprobe.cli.app import app

    cmd = typer.main.get_command(app)
    ctx = core.Context(cmd, info_name="leakprobe", resilient_parsing=True)
    args = list(words)
    while hasattr(cmd, "list_commands"):
        while args and args[0].startswith("--"):  # options of the group itself
            args = args[2:] if args[0] in ("--memory-cap", "--data-workers") else args[1:]
        if not args or args[0] in ("--help",):
            return
        sub = cmd.get_command(ctx, args[0])
        assert sub is not None, f"no command {args[0]!r} in `leakprobe {' '.join(words)}`"
        ctx = core.Context(sub, info_name=args[0], parent=ctx, resilient_parsing=True)
        cmd, args = sub, args[1:]
    known = {o for p in cmd.get_params(ctx) for o in (*p.opts, *p.secondary_opts)}
    for word in args:
        if word.startswith("--"):
            name = word.split("=", 1)[0]
            assert name in known, f"`leakprobe {' '.join(words)}`: no option {name}"
    cmd.parse_args(ctx, args)


def test_every_leakprobe_command_in_the_docs_parses() -> None:
    commands = [(p, words) for p, lang, _, body in _blocks() if lang != "python"
                for words in _leakprobe_commands(body)]
    assert len(commands) > 30, "the docs lost their commands?"
    for path, words in commands:
        try:
            _parse(words)
        except Exception as e:  # name the page and the command
            raise AssertionError(f"{path.relative_to(ROOT)}: `leakprobe {' '.join(words)}`: "
                                 f"{e}") from e


def test_the_api_reference_names_every_export() -> None:
    from leakprobe import _EXPORTS

    page = (ROOT / "docs" / "reference" / "api.md").read_text()
    missing = [n for n, module in _EXPORTS.items() if f"::: {module}.{n}\n" not in page]
    assert not missing, f"docs/reference/api.md lacks {missing}"


def test_readme_is_the_front_door() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 210, f"README.md has {len(lines)} lines; move sections to docs/"
    assert lines[2:6] and "make demo" in "\n".join(lines[:8]) and "make test" in "\n".join(
        lines[:8]), "the README opens with the two set-up commands"


RUN_HERE = "run by tests/docs/test_docs_commands.py"


def _front_door_block(what: str = "") -> str:
    """The README's block titled as run by this file (``what``: the title's words after it,
    e.g. ``(image-text)``; empty: the audit of one's own model)."""
    for path, _, title, body in _blocks():
        if path.name == "README.md" and title.strip() == f"{RUN_HERE} {what}".strip():
            return body
    raise AssertionError(f"README.md has no block titled {RUN_HERE} {what}")


def _memorising_torchscript(path: Path, members) -> None:
    """A small TorchScript encoder that memorises ``members``: a random conv embedding whose
    norm grows near a stored member image (a clean member is recognised; an augmented view
    of it is not), saved with ``torch.jit.script`` as a user would."""
    import torch
    from torch import nn

    class Memoriser(nn.Module):
        def __init__(self, memory: torch.Tensor) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 32, 3, stride=2)
            self.register_buffer("memory", memory.flatten(1))

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.conv(images)).mean(dim=(2, 3))
            small = nn.functional.interpolate(images, size=(32, 32), mode="bilinear",
                                              align_corners=False).flatten(1)
            nearest = torch.cdist(small, self.memory).min(dim=1).values
            return h * (1.0 + 3.0 * torch.exp(-nearest / 2.0)).unsqueeze(1)

    torch.manual_seed(0)
    torch.jit.script(Memoriser(members).eval()).save(str(path))


def _write_images(folder: Path, images) -> None:
    from PIL import Image

    folder.mkdir(parents=True)
    for i, image in enumerate(images):
        pixels = (image.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
        Image.fromarray(pixels).save(folder / f"{i:03d}.png")


@pytest.mark.usefixtures("one_torch_thread")
def test_the_readme_audit_runs_as_written(tmp_path, monkeypatch) -> None:
    """The README's first audit, word for word, on a memorising encoder and two folders:
    it finds the leak and writes the report it describes."""
    import json

    import torch

    from cli_runner import run_cli

    gen = torch.Generator().manual_seed(0)
    images = torch.rand(80, 3, 32, 32, generator=gen)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LEAKPROBE_PERMUTATIONS", raising=False)  # the defaults, as written
    _write_images(tmp_path / "my_data" / "train", images[:40])
    _write_images(tmp_path / "my_data" / "heldout", images[40:])
    from leakprobe.data.loaders import load_image_folder

    stored = torch.as_tensor(load_image_folder(tmp_path / "my_data" / "train", 32,
                                               stream=False).pixels)  # as leakprobe reads
    _memorising_torchscript(tmp_path / "my_encoder.pt", stored)
    commands = _leakprobe_commands(_front_door_block())
    assert commands, "the README's run block has no leakprobe command"
    for words in commands:
        code, out, err = run_cli(*words)
        assert code == 0, err[-2000:]
    report = json.loads((tmp_path / "runs" / "my-audit" / "report.json").read_text())
    assert report["summary"].startswith("Leakage detected"), report["summary"]
    assert (tmp_path / "runs" / "my-audit" / "report.html").is_file()
    print(out)


@pytest.mark.usefixtures("one_torch_thread")
def test_the_readme_image_text_audit_runs_as_written(tmp_path, monkeypatch) -> None:
    """The README's image-text commands, word for word: train a small CLIP on built-in
    captioned data, audit it; the audit finds its members and the floor stays at chance."""
    import json

    from cli_runner import run_cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LEAKPROBE_PERMUTATIONS", raising=False)  # the defaults, as written
    commands = _leakprobe_commands(_front_door_block("(image-text)"))
    assert [w[:2] for w in commands] == [["train", "image-text"], ["audit", "image-text"]]
    for words in commands:
        code, out, err = run_cli(*words)
        assert code == 0, err[-2000:]
    report = json.loads((tmp_path / "runs" / "clip-audit" / "report.json").read_text())
    assert report["summary"].startswith("Leakage detected"), report["summary"]
    assert "the model-free floor does not beat chance" in report["summary"]
    print(out)
