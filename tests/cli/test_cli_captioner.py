"""`train captioner` / `audit captioner` / `serve captioner` as a user runs them; bad input."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time

import httpx
import pytest
import torch

from leakprobe.cli import main

ENV = {**os.environ, "LEAKPROBE_PROGRESS": "0", "LEAKPROBE_QUIET": "1", "OMP_NUM_THREADS": "1"}
FAST = ["--shadow-data", "synthetic:40:5", "--shadow-epochs", "1", "--extractor-epochs", "1",
        "--device", "cpu"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["leakprobe", *args])
    monkeypatch.setenv("LEAKPROBE_QUIET", "1")
    monkeypatch.setenv("LEAKPROBE_PROGRESS", "0")
    try:
        main()
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`train captioner` on 40 synthetic images (20 members), 2 epochs."""
    out = tmp_path_factory.mktemp("cap")
    mp = pytest.MonkeyPatch()
    mp.setattr(sys, "argv", ["leakprobe", "train", "captioner", "--data", "synthetic:40",
                             "--members", "20", "--epochs", "2", "--device", "cpu",
                             "--out", str(out)])
    mp.setenv("LEAKPROBE_QUIET", "1")
    try:
        main()
    except SystemExit as e:
        assert not e.code
    finally:
        mp.undo()
    return out


def audit_args(trained, members=None, *extra):
    return ["audit", "captioner", "--model", str(trained), "--members",
            str(members or trained / "members.json"), "--nonmembers",
            str(trained / "nonmembers.json"), *FAST, *extra]


def test_train_then_audit(trained, monkeypatch, capsys, tmp_path):
    assert json.loads((trained / "model.json").read_text())["kind"] == "captioner"
    code, out, err = cli(monkeypatch, capsys, *audit_args(trained), "--out", str(tmp_path / "r"))
    assert code == 0, err
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["kind"] == "captioner-membership" and report["knowledge"] == "shadow"
    assert [r["attack"] for r in report["results"]] == ["m4i-metric", "m4i-feature", "blind"]
    assert report["context"]["model"] == str(trained)
    assert "m4i-feature" in out


def test_file_names_resolve_against_images(trained, monkeypatch, capsys, tmp_path):
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.copy(trained / "members.json", moved / "members.json")
    code, _, err = cli(monkeypatch, capsys, *audit_args(trained, moved / "members.json"),
                       "--out", str(tmp_path / "r1"))
    assert code == 2 and "does not exist" in err  # file_names are relative to trained/
    code, _, err = cli(monkeypatch, capsys, *audit_args(trained, moved / "members.json"),
                       "--images", str(trained), "--out", str(tmp_path / "r2"))
    assert code == 0, err


def _edit(trained, tmp_path, how):
    doc = json.loads((trained / "members.json").read_text())
    if how == "missing image":
        doc["images"][0]["file_name"] = "images/gone.png"
    elif how == "no captions":
        first = doc["images"][0]["id"]
        doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] != first]
    elif how == "empty caption":
        doc["annotations"][0]["caption"] = "  "
    path = trained / f"members-{how.replace(' ', '-')}.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize(("how", "message"), [
    ("missing image", "gone.png"),
    ("no captions", "has no caption"),
    ("empty caption", "empty caption"),
])
def test_bad_caption_files_give_one_line_and_exit_2(trained, monkeypatch, capsys, tmp_path,
                                                     how, message):
    members = _edit(trained, tmp_path, how)
    code, _, err = cli(monkeypatch, capsys, *audit_args(trained, members),
                       "--out", str(tmp_path / "r"))
    assert code == 2 and err.startswith("error:") and message in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r" / "report.json").exists()


FACTORIES = """
import torch


class Ints:
    input_size = 32

    def caption(self, images):
        return [1] * images.shape[0]


class Short:
    def caption(self, images):
        return ["a red circle"]


def ints():
    return Ints()


def short():
    return Short()


def nothing():
    return object()
"""


@pytest.mark.parametrize(("factory", "message"), [
    ("ints", "must return a list of"),
    ("short", "must return a list of"),
    ("nothing", "no caption(images) method"),
])
def test_entry_point_of_the_wrong_type_gives_exit_2(trained, monkeypatch, capsys, tmp_path,
                                                    factory, message):
    file = tmp_path / f"factories_{factory}.py"
    file.write_text(textwrap.dedent(FACTORIES))
    args = audit_args(trained)
    args[args.index("--model") + 1] = f"{file}:{factory}"
    code, _, err = cli(monkeypatch, capsys, *args, "--out", str(tmp_path / "r"))
    assert code == 2 and err.startswith("error:") and message in err, err
    assert len(err.strip().splitlines()) == 1


class OutOfVocabulary(torch.nn.Module):
    """Emits token ids its tokenizer does not have."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @torch.jit.export
    def generate(self, images: torch.Tensor) -> torch.Tensor:
        return torch.full((images.shape[0], 4), 100000, dtype=torch.long)


def test_unknown_tokens(trained, monkeypatch, capsys, tmp_path):
    folder = tmp_path / "oov"
    folder.mkdir()
    torch.jit.script(OutOfVocabulary()).save(str(folder / "captioner.pt"))
    shutil.copy(trained / "tokenizer.json", folder / "tokenizer.json")
    args = audit_args(trained)
    args[args.index("--model") + 1] = str(folder / "captioner.pt")
    code, _, err = cli(monkeypatch, capsys, *args, "--out", str(tmp_path / "r"))
    assert code == 2 and "outside the vocabulary" in err
    # words the target's tokenizer never saw in a reference caption are just words
    doc = json.loads((trained / "members.json").read_text())
    doc["annotations"][0]["caption"] = "a zyzzyva beside a quokka"
    (trained / "members-unknown-words.json").write_text(json.dumps(doc))
    code, _, err = cli(monkeypatch, capsys, *audit_args(trained,
                                                         trained / "members-unknown-words.json"),
                       "--out", str(tmp_path / "r2"))
    assert code == 0, err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_captioner_then_audit_the_url(trained, tmp_path):
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "leakprobe.cli", "serve", "captioner", "--model", str(trained),
         "--port", str(port), "--max-queries", "1000", "--device", "cpu"],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(url + "/v1/info", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        info = httpx.get(url + "/v1/info").json()
        assert info["kind"] == "captioner" and info["max_queries"] == 1000
        proc = subprocess.run(
            [sys.executable, "-m", "leakprobe.cli", "audit", "captioner", "--model", url,
             "--members", str(trained / "members.json"), "--nonmembers",
             str(trained / "nonmembers.json"), *FAST, "--attacks", "m4i-metric",
             "--out", str(tmp_path / "r")], env=ENV, capture_output=True, text=True,
            timeout=600)
        assert proc.returncode == 0, proc.stderr
        report = json.loads((tmp_path / "r" / "report.json").read_text())
        assert report["context"]["total_queries"] == 40
        assert httpx.get(url + "/v1/info").json()["queries_used"] == 40
    finally:
        server.terminate()
        server.wait(timeout=20)
    bad = subprocess.run([sys.executable, "-m", "leakprobe.cli", "serve", "captioner",
                          "--model", url], env=ENV, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "local model" in bad.stderr
