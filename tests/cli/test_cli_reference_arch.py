"""``leakprobe audit encoder --knowledge reference --reference-arch file.py:factory
--reference-init MODEL``: the report records them; bad ones exit 2 before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from cli_runner import run_cli
from leakprobe.data.loaders import save_image_folder
from leakprobe.data.synthetic import make_synthetic

NETS = '''
import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, dim=12):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, dim)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def tiny():
    return TinyNet()


def other():
    return TinyNet(dim=7)


def broken():
    raise ValueError("no weights here")
'''


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    """A factory file, init weights of its module, and 16-px members, non-members and
    population folders (the target is the factory's module itself)."""
    root = tmp_path_factory.mktemp("reference-arch")
    (root / "nets.py").write_text(NETS)
    torch.manual_seed(1)
    import importlib.util

    loader = importlib.util.spec_from_file_location("nets_for_init", root / "nets.py")
    assert loader is not None and loader.loader is not None
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    save_file({k: v.contiguous() for k, v in module.tiny().state_dict().items()},
              str(root / "init.safetensors"))
    data = make_synthetic(88, 16, seed=4)
    for name, part in (("m", range(0, 20)), ("n", range(20, 40)), ("pop", range(40, 88))):
        save_image_folder(data.subset(list(part)), root / name)
    return {"root": root, "nets": root / "nets.py", "init": root / "init.safetensors"}


def _args(s: dict[str, Path], out: Path, *extra: str) -> list[str]:
    root = s["root"]
    return ["audit", "encoder", "--model", f"{s['nets']}:tiny", "--image-size", "16",
            "--members", str(root / "m"), "--nonmembers", str(root / "n"),
            "--knowledge", "reference", "--reference-data", str(root / "pop"),
            "--references", "2", "--reference-epochs", "1", "--batch-size", "16",
            "--population-samples", "8", "--attacks", "lira-baseline-norm",
            "--permutations", "0", "--device", "cpu", "--out", str(out), *extra]


def test_factory_references_with_init_weights(setup, tmp_path, one_torch_thread) -> None:
    spec = f"{setup['nets']}:tiny"
    code, _, err = run_cli(*_args(setup, tmp_path / "out", "--reference-arch", spec,
                                  "--reference-init", str(setup["init"])))
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    recipe = report["context"]["references"]["recipe"]
    assert recipe["arch"] == spec and recipe["init"] == str(setup["init"])
    assert report["context"]["spec"]["reference_init"] == str(setup["init"])
    folders = sorted((tmp_path / "out" / "references").glob("reference-*"))
    assert len(folders) == 2 and all((f / "encoder.safetensors").is_file() for f in folders)
    meta = json.loads((folders[0] / "model.json").read_text())
    assert meta["arch"].endswith("nets.py:tiny") and meta["embed_dim"] == 12


def test_cheap_references_fine_tune_from_one_shared_base(setup, tmp_path,
                                                       one_torch_thread) -> None:
    spec = f"{setup['nets']}:tiny"
    args = _args(setup, tmp_path / "out", "--reference-arch", spec,
                 "--reference-base-epochs", "1")
    code, _, err = run_cli(*args)
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    refs = report["context"]["references"]
    base = Path(refs["shared_base"]["weights"])
    assert refs["shared_base"]["epochs"] == 1 and base.is_file()
    assert base.parent.name.startswith("shared-base-")
    assert refs["recipe"]["init"] == str(base)  # every reference starts from the base
    assert refs["trained_now"] == 2
    code, _, err = run_cli(*args)  # both cached: nothing trains again
    assert code == 0, err
    again = json.loads((tmp_path / "out" / "report.json").read_text())["context"]["references"]
    assert again["trained_now"] == 0 and again["shared_base"]["weights"] == str(base)


@pytest.mark.parametrize(("options", "message"), [
    (["--reference-arch", "{root}/absent.py:tiny"], "--reference-arch .*absent.py:tiny: file "
                                                    ".*absent.py does not exist"),
    (["--reference-arch", "{nets}:broken"], "the factory failed .*no weights here"),
    (["--reference-arch", "{nets}:other", "--reference-init", "{init}"],
     "--reference-init .*init.safetensors: weights do not fit --reference-arch "
     ".*nets.py:other: 2 keys of another shape"),
    (["--reference-init", "{init}"], "weights do not fit --reference-arch resnet-tiny"),
    (["--reference-init", "{init}", "--references", "0", "--reference-model", "{init}"],
     "--reference-init .* needs --reference-data and --references N >= 1"),
    (["--reference-base-epochs", "2", "--reference-init", "{init}"],
     "give it or --reference-init, not both"),
])
def test_bad_reference_arch_or_init_exits_2_before_anything(setup, tmp_path, options,
                                                            message) -> None:
    import re

    names = {"root": setup["root"], "nets": setup["nets"], "init": setup["init"]}
    out = tmp_path / "out"
    code, _, err = run_cli(*_args(setup, out, *(o.format(**names) for o in options)))
    assert code == 2, err
    assert re.search(message, " ".join(err.split())), err
    assert not (out / "references").exists() and not (out / "report.json").exists()
    assert not (out / "query-cache").exists()
