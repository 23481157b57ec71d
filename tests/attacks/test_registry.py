"""The attack registry: names, aliases, the expander, option routing, ``leakprobe attacks``."""

from __future__ import annotations

import re

import pytest

from cli_runner import run_cli
from leakprobe.attacks import registry
from leakprobe.attacks.membership import (
    ALIASES,
    ENCODER_ATTACKS,
    Blind,
    EncoderMI,
    MembershipAttack,
    PartCropPooled,
    create_attack,
    expand_attack_names,
)
from leakprobe.attacks.membership.calibrated import STATISTICS
from leakprobe.attacks.membership.m4i import CAPTION_ATTACKS, M4IFeature, M4IMetric
from leakprobe.attacks.membership.reconstruction import SCORES, ReconstructionMIA
from leakprobe.attacks.registry import (
    FAMILIES,
    aliases,
    describe_attacks,
    expand_attacks,
    register_attack,
    route_options,
)
from leakprobe.attacks.stealing import STEALING_METHODS, ContSteal, create_stealing_method
from leakprobe.errors import LeakprobeError
from leakprobe.workflows.audit import (
    build_attacks,
    build_caption_attacks,
    build_image2image_attacks,
)

ENCODER_ALL = ["partcrop", "encodermi-vector", "encodermi-set", "encodermi-threshold",
               "lpla-p1", "lpla-p2", "lpla-pinf", "baseline-norm", "baseline-consistency"]
NO_TOKENS = "the target exposes no tokens"


def test_every_family_keeps_its_names_and_its_all():
    assert expand_attacks("all", family="encoder") == ENCODER_ALL
    assert expand_attacks("all", family="image2image") == list(SCORES[:3])
    assert expand_attacks("all", family="captioner") == ["m4i-metric", "m4i-feature"]
    calibrated = [f"{m}-{s}" for s in STATISTICS for m in ("lira", "rmia")]
    assert sorted(ENCODER_ATTACKS) == sorted([*ENCODER_ALL, "partcrop-cosine",
                                              "partcrop-pooled", "partcrop-v2", "blind",
                                              "sslmem", "infonce", *calibrated, "lira-joint"])
    assert expand_attacks("calibrated", family="encoder") == [
        n for n in calibrated if not n.endswith("-partcrop")]  # token statistic: by name
    assert [e.name for e in registry.entries("image2image")] == list(SCORES)
    assert list(CAPTION_ATTACKS) == ["m4i-metric", "m4i-feature"]
    assert CAPTION_ATTACKS["m4i-metric"] is M4IMetric
    assert list(STEALING_METHODS) == ["contsteal", "contsteal-fresh", "mse", "cosine", "rda",
                                      "stolenencoder"]
    assert STEALING_METHODS["contsteal"] is ContSteal
    groups = dict(ALIASES)
    for method in ("lira", "rmia"):
        assert groups.pop(method) == [n for n in groups["calibrated"] if n.startswith(method)]
    assert groups.pop("calibrated") == [n for n in calibrated if not n.endswith("-partcrop")]
    assert groups == {
        "baseline": ["baseline-norm", "baseline-consistency"],
        "encodermi": ["encodermi-vector", "encodermi-set", "encodermi-threshold"],
        "lpla": ["lpla-p1", "lpla-p2", "lpla-pinf"],
        "partcrop-variants": ["partcrop", "partcrop-cosine", "partcrop-pooled", "partcrop-v2"],
        "all": ["partcrop", "encodermi", "lpla", "baseline"],
    }
    assert aliases("stealing") == {"all": ["contsteal", "contsteal-fresh", "rda", "stolenencoder",
                                           "mse", "cosine"]}


def test_the_expander_keeps_order_drops_repeats_and_reads_any_case():
    assert expand_attacks(" LPLA-p2 ,lpla,, ", family="encoder") == ["lpla-p2", "lpla-p1",
                                                                    "lpla-pinf"]
    assert expand_attacks(["Blind", "all"], family="encoder") == ["blind", *ENCODER_ALL]
    assert expand_attacks("", family="captioner") == []
    assert expand_attacks("All,reconstruction,membership-error-weighted",
                          family="image2image") == [*SCORES[:3], "membership-error-weighted"]
    assert expand_attack_names("all,partcrop-variants") == \
        [*ENCODER_ALL, "partcrop-cosine", "partcrop-pooled", "partcrop-v2"]


def test_a_token_attack_becomes_pooled_through_an_alias_and_is_refused_by_name():
    assert expand_attacks("all", family="encoder", no_tokens=NO_TOKENS) == \
        ["partcrop-pooled", *ENCODER_ALL[1:]]
    assert expand_attacks("partcrop-variants", family="encoder", no_tokens=NO_TOKENS) == \
        ["partcrop-pooled"]
    for explicit in ("partcrop", "all,partcrop-cosine", "partcrop-v2"):
        with pytest.raises(LeakprobeError, match="use partcrop-pooled"):
            expand_attacks(explicit, family="encoder", no_tokens=NO_TOKENS)


def test_unknown_names_give_each_family_its_message():
    known = ", ".join(sorted([*ENCODER_ATTACKS, *ALIASES]))
    with pytest.raises(LeakprobeError) as e:
        expand_attacks("partcrop, Nope", family="encoder")
    assert str(e.value) == f"unknown attack ' Nope'; known: {known}"
    with pytest.raises(LeakprobeError) as e:
        expand_attacks(" NOPE", family="image2image")
    assert str(e.value) == ("unknown image-to-image attack 'nope'; known: reconstruction, "
                            "predictability, membership-error, membership-error-weighted, all")
    with pytest.raises(LeakprobeError) as e:
        build_caption_attacks("m4i-nope")
    assert str(e.value) == ("unknown captioning attack 'm4i-nope'; known: m4i-metric, "
                            "m4i-feature, all")
    with pytest.raises(LeakprobeError) as e:
        create_stealing_method("ContSteal")
    assert str(e.value) == ("unknown stealing method 'ContSteal'; known: contsteal, "
                            "contsteal-fresh, mse, cosine, rda, stolenencoder (did you mean "
                            "'contsteal'?)")
    with pytest.raises(LeakprobeError, match="unknown attack 'encodermi'; known: baseline"):
        create_attack("encodermi")  # an alias is not one attack
    with pytest.raises(LeakprobeError, match="unknown attack family 'nope'"):
        expand_attacks("all", family="nope")


def test_a_typo_gets_the_closest_name():
    """Issue 25: a misspelt attack is answered with the name it was close to, once."""
    with pytest.raises(LeakprobeError) as e:
        expand_attacks("partcrp", family="encoder")
    assert str(e.value).startswith("unknown attack 'partcrp'; known: ")
    assert str(e.value).endswith(" (did you mean 'partcrop'?)")
    with pytest.raises(LeakprobeError) as e:
        expand_attacks("encodermi-vectr", family="encoder")
    assert str(e.value).endswith(" (did you mean 'encodermi-vector'?)")
    with pytest.raises(LeakprobeError) as e:
        expand_attacks("zzzz", family="encoder")
    assert "did you mean" not in str(e.value)


def test_a_name_builds_its_class_with_its_fixed_arguments():
    attack = create_attack("encodermi-set", n_views=3)
    assert isinstance(attack, EncoderMI)
    assert (attack.variant, attack.n_views, attack.name) == ("set", 3, "encodermi-set")
    assert ENCODER_ATTACKS["encodermi-set"](epochs=2).get_params()["epochs"] == 2
    assert create_attack("partcrop-cosine").name == "partcrop-cosine"
    assert create_attack("lpla-pinf").p == "inf"
    assert registry.create_attack("predictability", family="image2image").model_free
    with pytest.raises(LeakprobeError, match="variant='set' is fixed by the name"):
        create_attack("encodermi-set", variant="vector")
    with pytest.raises(LeakprobeError, match="takes no option 'n_views'; it takes: num_parts"):
        create_attack("partcrop", n_views=3)


def _prefix_routing(name: str, options: dict) -> dict:
    """The routing of the prefix table the registry replaced (workflows.audit.ATTACK_OPTIONS)."""
    table = {"num_parts": ("partcrop",), "n_views": ("encodermi",),
             "views": ("encodermi", "lpla", "baseline-consistency")}
    return {k: v for k, v in options.items()
            if k in table and v is not None and name.startswith(table[k])}


def test_options_reach_the_attacks_the_old_prefix_table_gave_them_to():
    options = {"num_parts": 4, "n_views": 3, "views": "mae", "epochs": 1, "seed": 9}
    for name in [*ENCODER_ALL, "partcrop-cosine", "partcrop-pooled", "blind"]:
        assert route_options(name, options, family="encoder") == \
            _prefix_routing(name, options), name
    # added since: sslmem draws views (keeps its 8 views), calibrated attacks pass all three
    # to the attack whose statistic they calibrate
    assert route_options("sslmem", options, family="encoder") == {"views": "mae"}
    assert route_options("infonce", options, family="encoder") == {"views": "mae"}
    assert route_options("lira-partcrop", options, family="encoder") == {
        "num_parts": 4, "n_views": 3, "views": "mae"}
    assert route_options("lpla-p2", {"n_views": 3}, family="encoder") == {}  # keeps its 4
    assert route_options("encodermi-set", {"n_views": None}, family="encoder") == {}
    cap = {"classifier": "mlp", "extractor_epochs": 5, "device": "cpu", "epochs": 7}
    assert route_options("m4i-metric", cap, family="captioner") == {"classifier": "mlp"}
    assert route_options("m4i-feature", cap, family="captioner") == {"epochs": 5,
                                                                      "device": "cpu"}
    i2i = {"pixel_features": "builtin", "num_classes": 3, "ridge": 0.5, "statistic": "x"}
    for name in SCORES:
        assert route_options(name, i2i, family="image2image") == {
            "pixel_features": "builtin", "num_classes": 3, "ridge": 0.5}
    assert route_options("mse", {"views_per_image": 3}, family="stealing") == \
        {"views_per_image": 3}


def test_the_builders_route_options_as_before():
    params = {a.name: a.get_params() for a in build_attacks(
        "all,partcrop-variants", 7, num_parts=4, n_views=3, views="mae")}
    assert params["partcrop-pooled"]["num_parts"] == 4
    assert params["encodermi-threshold"]["n_views"] == 3
    assert params["encodermi-threshold"]["views"] == "mae"
    assert params["lpla-p1"]["n_views"] == 4 and params["lpla-p1"]["views"] == "mae"
    assert params["baseline-consistency"]["n_views"] == 4
    assert params["blind"] == {"regularization": 1.0, "seed": 7}
    assert all(p["seed"] == 7 for p in params.values())
    i2i = build_image2image_attacks("all", 3, seg_error="ce", num_classes=None)
    assert [(a.statistic, a.seg_error, a.seed) for a in i2i] == \
        [(s, "ce", 3) for s in SCORES[:3]]
    with pytest.raises(LeakprobeError, match="unknown image-to-image attack option 'foo'"):
        build_image2image_attacks("all", foo=1)
    metric, feature, blind = build_caption_attacks("all", 5, classifier="", extractor_epochs=2,
                                                   device="cpu")
    assert metric.classifier == "svm"  # an empty classifier is not set
    assert (feature.epochs, feature.device, feature.seed) == (2, "cpu", 5)
    assert isinstance(blind, Blind) and blind.seed == 5
    assert create_stealing_method("cosine", views_per_image=3).views_per_image == 3


def test_capabilities_are_declared_on_the_base_class():
    base = MembershipAttack()
    assert (base.sample_kind, base.target_kind, base.needs_fit, base.model_free) == \
        ("images", "encoder", True, False)
    assert base.prepared and base.prepare(None) is base and base.report_notes(None) == []
    assert Blind().target_kind is None and Blind().model_free and Blind().name == "blind"
    assert not create_attack("baseline-norm").needs_fit
    weighted = ReconstructionMIA(statistic="membership-error-weighted")
    assert (weighted.sample_kind, weighted.target_kind, weighted.needs_fit) == \
        ("pairs", "image2image", True)
    assert M4IMetric().target_kind == "captioner" and not M4IFeature().prepared
    assert create_attack("partcrop").needs_tokens and not PartCropPooled().needs_tokens
    assert create_attack("partcrop").query_options == ("num_parts",)
    assert create_attack("lpla-p1").query_options == ("n_views",)
    assert ContSteal().name == "contsteal"


@pytest.fixture
def scratch_attack():
    """An attack registered the README's way, removed from the registry afterwards."""

    @register_attack("scratch-norm", family="encoder", aliases=("scratch",),
                     summary="a test attack")
    class ScratchNorm(MembershipAttack):
        def __init__(self, num_parts: int = 1, scale: float = 1.0, seed: int = 0) -> None:
            self.num_parts = num_parts
            self.scale = scale
            self.seed = seed

    yield ScratchNorm
    del registry._ENTRIES["encoder"]["scratch-norm"]


def test_a_new_attack_registers_with_a_decorator(scratch_attack):
    assert expand_attack_names("scratch") == ["scratch-norm"]
    assert "scratch-norm" not in expand_attack_names("all")  # ``all`` is the family's own
    attack = build_attacks("scratch", 4, num_parts=6, n_views=2)[0]
    assert isinstance(attack, scratch_attack) and attack.name == "scratch-norm"
    assert attack.get_params() == {"num_parts": 6, "scale": 1.0, "seed": 4}
    row = next(r for r in describe_attacks()["encoder"] if r["name"] == "scratch-norm")
    assert row == {"name": "scratch-norm", "aliases": ["scratch"], "summary": "a test attack"}


def test_bad_registrations_are_refused():
    with pytest.raises(ValueError, match="taken"):
        register_attack("partcrop", family="encoder")(PartCropPooled)
    with pytest.raises(ValueError, match="unknown attack family"):
        register_attack("x", family="audio")
    with pytest.raises(TypeError, match="queries a captioner target"):
        register_attack("m4i-again", family="encoder")(M4IMetric)
    with pytest.raises(TypeError, match="must subclass MembershipAttack"):
        register_attack("plain", family="encoder")(object)
    assert "m4i-again" not in ENCODER_ATTACKS and "plain" not in ENCODER_ATTACKS


def test_describe_attacks_gives_every_attack_its_aliases_and_a_summary():
    described = describe_attacks()
    assert list(described) == list(FAMILIES)
    rows = {r["name"]: r for rows in described.values() for r in rows}
    assert rows["partcrop"]["aliases"] == ["partcrop-variants", "all"]
    assert rows["encodermi-set"]["aliases"] == ["encodermi", "all"]
    assert rows["partcrop-cosine"]["aliases"] == ["partcrop-variants"]
    assert rows["blind"]["aliases"] == [] and rows["contsteal"]["aliases"] == ["all"]
    assert rows["membership-error-weighted"]["aliases"] == []
    assert all(r["summary"] and "\n" not in r["summary"] for r in rows.values())


def test_the_attacks_command_lists_every_family():
    code, out, err = run_cli("attacks")
    assert code == 0, err
    for family in FAMILIES:
        assert f"{family}: {FAMILIES[family].title}" in out
    for name in (*ENCODER_ATTACKS, *SCORES, *CAPTION_ATTACKS, *STEALING_METHODS):
        assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", out), name
    line = next(ln for ln in out.splitlines() if ln.startswith("  encodermi-set "))
    assert line.endswith("(aliases: encodermi, all)")
