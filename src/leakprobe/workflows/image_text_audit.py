"""The image-text (CLIP-style) membership audit: :func:`audit_image_text`.

The audit runs the image-text attacks of :mod:`leakprobe.attacks.membership.image_text`
under the known-subset protocol of :mod:`leakprobe.evaluation.audit` (fitted attacks
cross-fitted over ``folds``; unfitted ones score every sample as they are; each sample is
queried once), the model-free blind floor of the family (image and caption statistics)
always, label permutations for the test of "no leakage", and writes an
``image-text-membership`` report with the writer every membership audit uses.

Under ``--knowledge reference`` the calibrated attacks (``lira-clip-cosine``,
``rmia-clip-cosine``, ``lira-clip-augment-mean``, ``rmia-clip-augment-mean``; alias
``calibrated``) compare each pair's statistic on the target with the same pair's on reference
image-text models: trained by :func:`image_text_references` on random halves of the
attacker's captioned data with the CLIP recipe of :mod:`leakprobe.training.image_text`, or
given (``--reference-model``). Nothing is fitted on audited samples then, except the blind
floor (model-free, cross-fitted as always); clip-augment, which fits, is refused.

The image tower alone is an encoder: names written ``encoder:NAME`` (``encoder:all``,
``encoder:encodermi``...) run the encoder family's attacks on it (``embed`` =
``embed_images``; the tower exposes no tokens, so ``partcrop-pooled`` stands in for PartCrop)
in the same audit and the same table.

Everything that can fail is checked before the first query (one-line
:class:`~leakprobe.errors.LeakprobeError`): the target's two methods, the attack names, the
captions of both sides, the sets' sizes (at least 20 a side), shapes and overlap (by content
hash), the folds, the reference data's captions and overlap, and the target's query budget
against the images and texts the attacks will send (the population pairs included).
:func:`check_image_text_audit` runs the same checks before references train.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from leakprobe.data.images import ImageSet
from leakprobe.errors import LeakprobeError
from leakprobe.evaluation.audit import DEFAULT_REPEATS
from leakprobe.workflows.references import DEFAULT_POPULATION

KIND = "image-text-membership"
DEFAULT_ATTACKS = "clip-cosine,clip-rank,clip-augment"
#: Under ``--knowledge reference``: the calibrated attacks beside the uncalibrated statistics
#: they calibrate (one table shows what calibration adds); clip-augment fits, so it is out.
DEFAULT_REFERENCE_ATTACKS = "clip-cosine,clip-rank,clip-augment-mean,calibrated"
KNOWLEDGE = ("known-subset", "reference")
ENCODER_PREFIX = "encoder:"
NO_TOKENS = "the image tower of an image-text model exposes no tokens"


class ImageTower:
    """An image-text target seen as an encoder too: ``embed`` is its ``embed_images``.

    Everything else (``embed_images``, ``embed_texts``, ``input_size``, ``queries``, the
    counter, the device) is the target's, so the two towers' queries count together.
    """

    has_tokens = False  # PartCrop's token attacks cannot run on it

    def __init__(self, target: Any) -> None:
        self.target = target

    def __getattr__(self, name: str) -> Any:
        if name == "target":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.target, name)

    def embed(self, images: Any) -> Any:
        return self.target.embed_images(images)


def _split_names(names: str | list[str]) -> tuple[list[str], list[str]]:
    """(image-text names, encoder names of ``encoder:NAME`` items), order kept."""
    raw = names.split(",") if isinstance(names, str) else list(names)
    own: list[str] = []
    tower: list[str] = []
    for item in raw:
        text = str(item).strip()
        if not text:
            continue
        if text.lower().startswith(ENCODER_PREFIX):
            rest = text[len(ENCODER_PREFIX):].strip()
            if not rest:
                raise LeakprobeError("--attacks: 'encoder:' needs an encoder attack or alias "
                                     "after it, e.g. encoder:all or encoder:encodermi")
            tower.append(rest)
        else:
            own.append(text)
    return own, tower


def build_image_text_attacks(names: str | list[str] = DEFAULT_ATTACKS, seed: int = 0,
                             **options: Any) -> list:
    """Attack objects for ``names`` plus the family's blind floor, sharing their answers.

    Args:
        names: comma list (or list) of image-text attacks and aliases (``all``: clip-cosine,
            clip-rank, clip-augment, clip-augment-mean; ``calibrated``, ``lira``, ``rmia``:
            the reference-calibrated attacks) and ``encoder:NAME`` items (encoder attacks on
            the image tower).
        seed: seeds every attack.
        options: ``n_views``, ``views`` (clip-augment's, and the encoder attacks' when
            ``encoder:`` items are given: each attack that takes them), ``num_parts``.
    Raises:
        LeakprobeError: an unknown name or option, an explicit PartCrop token attack.
    """
    from leakprobe.attacks.membership.image_text import ImageTextBlind, share_answers
    from leakprobe.attacks.registry import FAMILIES, create_attack, expand_attacks, route_options

    known = set(FAMILIES["image-text"].options) | set(FAMILIES["encoder"].options)
    for key in options:
        if key not in known:
            raise LeakprobeError(f"unknown image-text attack option '{key}'; known: "
                                 f"{', '.join(sorted(known))}")
    for opt, flag in (("num_parts", "--num-parts"), ("n_views", "--n-views")):
        if options.get(opt) is not None and options[opt] < 1:
            raise LeakprobeError(f"{flag} must be >= 1, got {options[opt]}")
    if options.get("views") is not None:
        from leakprobe.views import parse_views

        parse_views(options["views"])
    own, tower = _split_names(names)
    attacks = [create_attack(n, family="image-text", seed=seed,
                             **route_options(n, options, family="image-text"))
               for n in expand_attacks(own, family="image-text")]
    for n in expand_attacks(tower, family="encoder", no_tokens=NO_TOKENS):
        if n == "blind":
            continue  # the family's blind floor runs anyway
        if any(a.name == n for a in attacks):
            continue
        attacks.append(create_attack(n, family="encoder", seed=seed,
                                     **route_options(n, options, family="encoder")))
    if not attacks:
        raise LeakprobeError("--attacks names no attack")
    if not any(a.name == "blind" for a in attacks):
        attacks.append(ImageTextBlind(seed=seed))
    share_answers(attacks)
    return attacks


def check_image_text_target(target: Any) -> None:
    """Refuse a target without ``embed_images`` and ``embed_texts`` (before any query)."""
    missing = [m for m in ("embed_images", "embed_texts")
               if not callable(getattr(target, m, None))]
    if missing:
        raise LeakprobeError(f"the target ({type(target).__name__}) is not an image-text "
                             f"model: it has no {' or '.join(f'{m}()' for m in missing)}; "
                             "load the model with leakprobe.targets.image_text.load_image_text")


def check_captions(samples: ImageSet, side: str) -> int:
    """The captions of one side, checked: every image has at least one non-empty caption.

    Returns:
        How many captions the side has.
    """
    caps = samples.extras.get("captions")
    if not isinstance(caps, list) or len(caps) != len(samples):
        raise LeakprobeError(f"the {side} carry no captions (extras['captions']); an "
                             "image-text audit needs captioned images (a COCO captions JSON)")
    for image_id, refs in zip(samples.ids, caps, strict=True):
        if (not isinstance(refs, list) or not refs
                or not all(isinstance(c, str) and c.strip() for c in refs)):
            raise LeakprobeError(f"the {side}: image {image_id!r} has no caption")
    return sum(len(r) for r in caps)


def tower_references(references: Any) -> Any:
    """The same references seen through their image towers (for ``encoder:lira-*``)."""
    from leakprobe.evaluation.references import ReferenceModels

    return ReferenceModels([ImageTower(m) for m in references.encoders],
                           list(references.trained_on), references.population,
                           online=references.online, description=dict(references.description))


def _prepare(
    target: Any,
    members: ImageSet,
    nonmembers: ImageSet,
    *,
    attacks: str | list | None,
    seed: int,
    folds: int,
    repeats: int,
    knowledge: str,
    population: ImageSet | None,
    references: Any,
    attack_options: dict[str, Any],
) -> tuple[list, Any, dict[str, Any]]:
    """Every check of the audit, before any query: (attacks, the target the audit queries,
    the report's context). ``references``: the reference models, or for a check before they
    train, a :class:`~leakprobe.evaluation.references.ReferenceModels` without models that
    holds the population samples (the budget counts their queries)."""
    from leakprobe.attacks.membership._common import MembershipAttack
    from leakprobe.attacks.membership.image_text import (
        CalibratedImageText,
        ClipAugment,
        ClipRank,
        ImageTextAttack,
        ImageTextBlind,
        audit_query_count,
        share_answers,
    )
    from leakprobe.data.images import concat
    from leakprobe.data.splits import check_shadow_disjoint
    from leakprobe.evaluation.audit import check_audit_plan
    from leakprobe.preflight import check_query_budget
    from leakprobe.workflows.audit import views_context

    if knowledge not in KNOWLEDGE:
        raise LeakprobeError(f"an image-text audit runs under --knowledge "
                             f"{' or '.join(KNOWLEDGE)}, got {knowledge!r}")
    if knowledge == "reference" and references is None:
        raise LeakprobeError("--knowledge reference needs reference image-text models "
                             "(--reference-data to train them, or --reference-model)")
    check_image_text_target(target)
    if attacks is None:
        attacks = DEFAULT_REFERENCE_ATTACKS if knowledge == "reference" else DEFAULT_ATTACKS
    if isinstance(attacks, (str, list)) and all(isinstance(a, str) for a in attacks):
        attack_objs = build_image_text_attacks(attacks, seed, **attack_options)
    else:
        attack_objs = list(attacks)
        if not all(isinstance(a, MembershipAttack) for a in attack_objs):
            raise LeakprobeError("attacks must be names or membership attack objects")
        if not any(a.model_free for a in attack_objs):
            attack_objs.append(ImageTextBlind(seed=seed))
        if not any(isinstance(a, (ImageTextAttack, CalibratedImageText))
                   and a.answers is not None for a in attack_objs):
            share_answers(attack_objs)
    n_captions = {"members": check_captions(members, "members"),
                  "nonmembers": check_captions(nonmembers, "non-members")}
    n_images = len(members) + len(nonmembers)
    per_image = max(1, (n_captions["members"] + n_captions["nonmembers"]) // max(n_images, 1))
    population_captions = 0
    if population is not None:
        population_captions = check_captions(population, "population data")
    tower = [a for a in attack_objs if a.target_kind == "encoder"]
    audit_target = ImageTower(target) if tower else target
    for a in attack_objs:
        if isinstance(a, (ImageTextAttack, CalibratedImageText)):
            a.assumed_captions = per_image  # the plan never counts more than the exact check
        if population is not None and isinstance(a, ClipRank):
            a.prepare(population)
    if tower:
        from leakprobe.attacks.membership.partcrop import check_token_attacks

        check_token_attacks(tower, audit_target)
    if population is not None:
        check_shadow_disjoint(population, members, nonmembers, what="population")
    if knowledge == "reference":
        check_captions(references.population, "reference data")
        check_shadow_disjoint(references.population, members, nonmembers, what="reference")
        towers = tower_references(references) if tower else None
        for a in attack_objs:
            if a.needs_references:
                a.prepare(towers if a.target_kind == "encoder" else references)
    # sizes (>= 20 a side), shapes, overlap by content hash, knowledge, folds, the plan
    check_audit_plan(attack_objs, audit_target, members, nonmembers, knowledge, folds,
                     repeats)
    both = concat([members, nonmembers])
    needed = audit_query_count(attack_objs, both)
    if tower:
        from leakprobe.evaluation.plan import build_plan

        needed += build_plan(tower, audit_target, n_images).total_queries
    check_query_budget(target, needed,
                       f"this audit needs {needed} queries ({n_images} images and their "
                       f"{sum(n_captions.values())} captions"
                       + (", and the population pairs of the calibrated attacks"
                          if knowledge == "reference" else "")
                       + "; images and texts count)",
                       "use fewer attacks, views (--n-views), images or --population-samples")
    ctx: dict[str, Any] = {
        "captions": {**n_captions, "per_image": round(sum(n_captions.values()) / n_images, 3)},
        "total_queries": needed,
        "queries_counted": "images and texts, each one query",
        **views_context(tower),
    }
    augment = [a for a in attack_objs if isinstance(a, ClipAugment)]
    if augment:
        from leakprobe.views import parse_views

        ctx["clip_augment_views"] = {a.name: parse_views(a.views).to_dict() for a in augment}
    if population is not None:
        ctx["population"] = population.source
        ctx["population_captions"] = population_captions
    if tower:
        ctx["image_tower_attacks"] = [a.name for a in tower]
        ctx["tokens_exposed"] = False
    if knowledge == "reference":
        ctx["references"] = dict(references.description)
    return attack_objs, audit_target, ctx


def check_image_text_audit(
    target: Any,
    members: ImageSet,
    nonmembers: ImageSet,
    *,
    attacks: str | list | None = None,
    seed: int = 0,
    folds: int = 2,
    repeats: int = DEFAULT_REPEATS,
    knowledge: str = "known-subset",
    population: ImageSet | None = None,
    reference_data: ImageSet | None = None,
    population_samples: int = DEFAULT_POPULATION,
    **attack_options: Any,
) -> None:
    """Everything :func:`audit_image_text` checks, before references train: the arguments
    are its own, with ``reference_data`` (the attacker's captioned data the references would
    train on) in place of the references; the budget counts the population samples that
    ``population_samples`` draws from it.

    Raises:
        LeakprobeError: one line, for every check in the module docstring.
    """
    from leakprobe.evaluation.references import ReferenceModels
    from leakprobe.workflows.references import population_sample

    provisional = None
    if knowledge == "reference":
        if reference_data is None:
            raise LeakprobeError("--knowledge reference needs --reference-data (the "
                                 "attacker's captioned images; references train on it and "
                                 "its population samples calibrate)")
        provisional = ReferenceModels([], [], population_sample(reference_data,
                                                                population_samples, seed))
    elif reference_data is not None:
        raise LeakprobeError("--reference-data/--reference-model need --knowledge reference")
    _prepare(target, members, nonmembers, attacks=attacks, seed=seed, folds=folds,
             repeats=repeats, knowledge=knowledge, population=population,
             references=provisional, attack_options=attack_options)


def image_text_references(
    reference_data: ImageSet,
    *,
    count: int = 4,
    models: tuple[str, ...] | list[str] = (),
    epochs: int = 50,
    batch_size: int = 64,
    lr: float = 2e-3,
    arch: str = "resnet-tiny",
    embed_dim: int = 64,
    out_dir: str | Path,
    seed: int = 0,
    population_samples: int = DEFAULT_POPULATION,
    device: str = "cpu",
    image_size: int | None = None,
) -> Any:
    """Reference image-text models for ``--knowledge reference``: ``count`` trained on seeded
    random halves of ``reference_data`` with the CLIP recipe of ``leakprobe train
    image-text`` (cached in ``out_dir`` by content hash, resumable), plus the ``models`` the
    user brings (``--reference-model``, any form ``--model`` takes; declared not to have
    trained on the audited pairs).

    Returns:
        The :class:`~leakprobe.evaluation.references.ReferenceModels` (population samples
        drawn from ``reference_data``).
    """
    from leakprobe.training.image_text import ImageTextRecipe
    from leakprobe.training.trainer import TrainConfig
    from leakprobe.workflows.references import (
        load_references,
        merge_references,
        train_references,
    )

    if count < 0:
        raise LeakprobeError(f"--references must be >= 0, got {count}")
    if count == 0 and not models:
        raise LeakprobeError("--references 0 without --reference-model: no references")
    trained = None
    if count:
        trained = train_references(
            reference_data, count=count, family="image-text",
            recipe=ImageTextRecipe(arch=arch, embed_dim=embed_dim),
            config=TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                               device=device),
            out_dir=out_dir, seed=seed, n_population=population_samples, device=device)
    given = load_references(list(models), reference_data, device=device,
                            n_population=population_samples, seed=seed,
                            image_size=image_size, family="image-text") if models else None
    merged = merge_references(trained, given)
    assert merged is not None
    return merged


def audit_image_text(
    target: Any,
    members: ImageSet,
    nonmembers: ImageSet,
    *,
    attacks: str | list | None = None,
    permutations: int | None = None,
    seed: int = 0,
    out_dir: str | Path | None = None,
    context: dict | None = None,
    folds: int = 2,
    repeats: int = DEFAULT_REPEATS,
    knowledge: str = "known-subset",
    population: ImageSet | None = None,
    references: Any = None,
    **attack_options: Any,
) -> dict:
    """Audit an image-text (CLIP-style) model for membership leakage.

    Args:
        target: an :class:`~leakprobe.targets.image_text.ImageTextModel` (``embed_images``,
            ``embed_texts``, ``input_size``), e.g. from
            :func:`~leakprobe.targets.image_text.load_image_text`.
        members: captioned images (``extras["captions"]``) the model trained on.
        nonmembers: captioned images it did not train on, preprocessed identically.
        attacks: names and aliases (:func:`build_image_text_attacks`; None: ``clip-cosine,
            clip-rank,clip-augment``, or under ``reference`` knowledge ``clip-cosine,
            clip-rank,clip-augment-mean,calibrated``; ``encoder:NAME`` runs encoder attacks
            on the image tower), or attack objects (the blind floor is added when none is
            model-free).
        permutations: label permutations of each attack's test of "no leakage" (fitted
            attacks: the permutation p-value, refitting every fold; unfitted ones: the exact
            or normal Mann-Whitney p-value, the permutations recorded); None: 100 or
            ``$LEAKPROBE_PERMUTATIONS``; 0 skips them.
        seed: fixes folds, views, caption perturbations, the query order and the scorers.
        out_dir: where ``report.json`` and ``report.html`` go (None: nothing written).
        context: extra threat-model facts for the report.
        folds: cross-fitting folds of the fitted attacks and the blind floor.
        repeats: cross-fittings averaged per sample.
        knowledge: ``known-subset`` (the fitted attacks fit on audited samples) or
            ``reference`` (calibrated attacks, ``lira-clip-cosine``..., against
            ``references``; nothing is fitted on audited samples but the blind floor).
        population: the attacker's own captioned images (disjoint from both sides): their
            captions join clip-rank's pool of distractors.
        references: the reference image-text models of ``reference`` knowledge
            (:func:`image_text_references`).
        attack_options: ``n_views``, ``views`` (and ``num_parts`` for ``encoder:`` items).
    Returns:
        The report dictionary (kind ``image-text-membership``).
    Raises:
        LeakprobeError: before any query, for every check in the module docstring.
    """
    from leakprobe.preflight import check_out_dir
    from leakprobe.workflows.audit import run_and_report

    check_out_dir(out_dir, "out_dir")
    attack_objs, audit_target, ctx = _prepare(
        target, members, nonmembers, attacks=attacks, seed=seed, folds=folds, repeats=repeats,
        knowledge=knowledge, population=population, references=references,
        attack_options=attack_options)
    ctx.update(context or {})
    return run_and_report(KIND, audit_target, members, nonmembers, attacks=attack_objs,
                          knowledge=knowledge, folds=folds, repeats=repeats,
                          permutations=permutations, seed=seed, out_dir=out_dir, context=ctx)


__all__ = ["DEFAULT_ATTACKS", "DEFAULT_REFERENCE_ATTACKS", "KIND", "ImageTower",
           "audit_image_text", "build_image_text_attacks", "check_captions",
           "check_image_text_audit", "check_image_text_target", "image_text_references",
           "tower_references"]
