"""The static table ``leakprobe models`` prints covers exactly the registered architectures,
the public checkpoint layouts, the Hugging Face model types and the SSL methods."""

from __future__ import annotations

from leakprobe.models.catalog import GROUPS, SSL_METHODS, architectures, group


def test_every_registered_architecture_is_listed_once():
    from leakprobe.models import list_models

    names = [n for g in GROUPS if g.key != "huggingface" for n in g.names]
    assert len(names) == len(set(names))
    assert architectures() == list_models()


def test_the_published_group_is_the_public_checkpoint_layouts():
    from leakprobe.models.public import PUBLIC_ARCHS

    assert tuple(group("published").names) == PUBLIC_ARCHS


def test_the_hugging_face_group_is_every_supported_model_type():
    from leakprobe.targets.huggingface import SUPPORTED_MODEL_TYPES

    listed = group("huggingface").names
    assert list(listed) == list(SUPPORTED_MODEL_TYPES)
    for model_type, (cls, _) in SUPPORTED_MODEL_TYPES.items():
        assert listed[model_type].startswith(cls), model_type


def test_the_ssl_methods_are_the_registered_ones():
    from leakprobe.training.ssl.base import list_methods

    assert sorted(SSL_METHODS.names) == list_methods()
    assert group("ssl") is SSL_METHODS


def test_every_line_is_one_line():
    for g in (*GROUPS, SSL_METHODS):
        assert g.title and g.usage and "\n" not in g.usage
        assert all(what and "\n" not in what for what in g.names.values()), g.key
