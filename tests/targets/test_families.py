"""The family table: each family described once, its classes, and `load_target`."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest
import torch

from leakprobe.errors import LeakprobeError
from leakprobe.serving.client import HTTPTarget
from leakprobe.serving.server import ModelService
from leakprobe.targets.encoder import ModuleEncoder
from leakprobe.targets.families import FAMILIES, family, family_of_report, load_target

QUERY_METHODS = {"embed", "tokens", "translate", "caption", "embed_images", "embed_texts"}


def test_the_four_families_and_their_defaults():
    assert list(FAMILIES) == ["encoder", "image2image", "captioner", "image-text"]
    assert [f.default_attacks for f in FAMILIES.values()] == [
        "all", "reconstruction,predictability,membership-error", "m4i-metric,m4i-feature",
        "clip-cosine,clip-rank,clip-augment"]
    assert [f.report_kind for f in FAMILIES.values()] == [
        "encoder-membership", "image2image-membership", "captioner-membership",
        "image-text-membership"]
    assert family_of_report("captioner-membership") is FAMILIES["captioner"]
    assert family_of_report("encoder-defence") is None
    assert family(" Encoder ") is family(FAMILIES["encoder"]) is FAMILIES["encoder"]
    with pytest.raises(LeakprobeError, match="unknown model family 'gan'; known: encoder, "
                                             "image2image, captioner, image-text"):
        family("gan")


@pytest.mark.parametrize("name", list(FAMILIES))
def test_each_family_names_classes_of_its_own_kind(name):
    fam = FAMILIES[name]
    assert callable(fam.loader) and hasattr(fam.target, fam.method)
    client, service = fam.client, fam.service
    assert issubclass(client, HTTPTarget) and issubclass(service, ModelService)
    assert client.kind == service.kind == name and client.route == service.route
    own = {"encoder": {"embed", "tokens"}, "image2image": {"translate"},
           "captioner": {"caption"},
           "image-text": {"embed_images", "embed_texts"}}[name]
    assert {m for m in QUERY_METHODS if hasattr(client, m)} == own  # only its own methods
    assert callable(service.answer)


def test_only_the_encoder_service_answers_through_embed():
    assert hasattr(FAMILIES["encoder"].service, "embed")
    assert not hasattr(FAMILIES["captioner"].service, "embed")
    assert not hasattr(FAMILIES["image2image"].service, "embed")


def test_reading_the_table_imports_no_torch():
    code = ("import sys; from leakprobe.targets.families import FAMILIES, family\n"
            "assert family('captioner').default_attacks\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout.strip()
    assert out == "False"


ENTRY = """
import torch
from torch import nn


class Net(nn.Module):
    input_size = 16

    def forward(self, x):
        return x.mean(dim=(2, 3))


def build():
    return Net()


def translator():
    return nn.Identity()
"""


@pytest.fixture
def entry_file(tmp_path):
    path = tmp_path / f"family_models_{uuid.uuid4().hex[:8]}.py"
    path.write_text(ENTRY)
    return path


def test_load_target_uses_the_family_loader_and_its_defaults(entry_file):
    enc = load_target(f"{entry_file}:build", family="encoder", device="cpu", budget=3)
    assert isinstance(enc, ModuleEncoder) and enc.batch_size == 256 and enc.input_size == 16
    assert enc.embed(torch.rand(3, 3, 16, 16)).shape == (3, 3)
    tr = load_target(f"{entry_file}:translator", family=FAMILIES["image2image"], device="cpu",
                     image_size=8, batch_size=5)
    assert tr.kind == "image2image" and tr.batch_size == 5 and tr.input_size == 8


def test_load_target_refuses_what_a_family_does_not_take(tmp_path):
    with pytest.raises(LeakprobeError, match="--arch cnn-lstm: captioner models are loaded "
                                             "without an architecture name"):
        load_target(str(tmp_path), family="captioner", arch="cnn-lstm", device="cpu")
    with pytest.raises(LeakprobeError, match="unknown model family"):
        load_target(str(tmp_path), family="segmenter")
    with pytest.raises(LeakprobeError, match="^--device gpu: "):
        load_target(str(tmp_path / "missing.pt"), family="image2image", device="gpu")
