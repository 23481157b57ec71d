"""One-call audits for the Python API: load data and target, run attacks, write the report.

The CLI's ``audit encoder`` and ``demo`` are thin wrappers over :func:`audit_encoder`.
"""

from __future__ import annotations

import hashlib
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from leakprobe.attacks.membership import MembershipAttack, ViewAttack, token_problem
from leakprobe.attacks.membership.partcrop import check_token_attacks
from leakprobe.attacks.registry import FAMILIES, create_attack, expand_attacks, route_options
from leakprobe.data.images import ImageSet
from leakprobe.data.splits import make_split
from leakprobe.errors import LeakprobeError
from leakprobe.evaluation.audit import DEFAULT_REPEATS, AuditInterrupted, run_audit
from leakprobe.evaluation.permutation import resolve_permutations
from leakprobe.evaluation.plan import FeatureCache, build_plan, time_probe
from leakprobe.evaluation.utility import knn_accuracy, linear_probe
from leakprobe.preflight import check_out_dir
from leakprobe.progress import log, query_task, source_of
from leakprobe.report.html import write_report
from leakprobe.report.schema import MembershipKind, build_membership_report
from leakprobe.targets.encoder import ModuleEncoder, embed_images
from leakprobe.targets.families import family_of_report
from leakprobe.training.encoder import EncoderRecipe, train_ssl_encoder
from leakprobe.training.trainer import TrainConfig

if TYPE_CHECKING:
    from leakprobe.evaluation.references import ReferenceModels
    from leakprobe.targets.protocols import Captioner, Encoder, ImageToImage, Target

QUERY_CACHE = "query-cache"  # OUT/query-cache: each attack's features, kept for resuming


def build_attacks(names: str | list[str], seed: int = 0, target=None, **options) -> list:
    """Attack objects for ``names`` (aliases expanded) plus the blind attack, seeded.

    ``options`` (``num_parts``, ``n_views``, ``views``; the encoder family's options of
    :mod:`leakprobe.attacks.registry`) reach every attack that takes them; others are
    ignored. With ``target``, PartCrop's token attacks are fitted to it: on a target known
    to lack tokens in its embedding space an alias runs ``partcrop-pooled`` instead and an
    explicit ``partcrop`` / ``partcrop-cosine`` is refused (before any query).
    """
    if options.get("views") is not None:
        from leakprobe.views import parse_views

        parse_views(options["views"])  # a bad --views fails even when no attack draws views
    for opt, flag in (("num_parts", "--num-parts"), ("n_views", "--n-views")):
        if options.get(opt) is not None and options[opt] < 1:
            raise LeakprobeError(f"{flag} must be >= 1, got {options[opt]}")
    attacks: list[MembershipAttack] = []
    no_tokens = token_problem(target) if target is not None else None
    for name in [*expand_attacks(names, family="encoder", no_tokens=no_tokens), "blind"]:
        if name == "blind" and any(a.name == "blind" for a in attacks):
            continue
        attacks.append(create_attack(name, family="encoder", seed=seed,
                                     **route_options(name, options, family="encoder")))
    return attacks


def encoder_utility(target, labelled: ImageSet, seed: int = 0) -> dict:
    """k-NN and linear-probe accuracy of the target's embeddings on a labelled set (50/50)."""
    if labelled.labels is None:
        raise LeakprobeError("utility needs a labelled set (class-per-folder images)")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(labelled), generator=g)
    half = len(perm) // 2
    with query_task("utility: querying", len(labelled), source_of(target)):
        emb = embed_images(target, labelled.pixels)
    tr, te = perm[:half], perm[half:]
    y = labelled.labels
    probe, _ = linear_probe(emb[tr], y[tr], emb[te], y[te], seed)
    return {"knn_accuracy": knn_accuracy(emb[tr], y[tr], emb[te], y[te]),
            "linear_probe_accuracy": probe, "n_images": len(labelled),
            "data": labelled.source, "chance": float(1 / max(int(y.max()) + 1, 1))}


def train_shadow(
    data: ImageSet, recipe: EncoderRecipe, config: TrainConfig, seed: int
) -> tuple[ModuleEncoder, ImageSet, ImageSet]:
    """Train a shadow encoder on half of the attacker's own data; return it and its split."""
    split = make_split(data, len(data) // 2, seed=seed)
    log(f"training shadow encoder ({recipe.method}, {recipe.arch}) on {len(split.members)} images")
    backbone, _ = train_ssl_encoder(split.members.pixels, recipe, config,
                                    description="shadow training")
    return ModuleEncoder(backbone, device=config.device, name="shadow"), split.members, \
        split.nonmembers


def audit_encoder(
    target: Encoder,
    members: ImageSet,
    nonmembers: ImageSet,
    *,
    attacks: str | list = "all",
    knowledge: str = "known-subset",
    folds: int = 2,
    repeats: int = DEFAULT_REPEATS,
    permutations: int | None = None,
    seed: int = 0,
    out_dir: str | Path | None = None,
    context: dict | None = None,
    utility: dict | None = None,
    shadow: tuple[Encoder, ImageSet, ImageSet] | None = None,
    references: ReferenceModels | None = None,
    resume: bool = True,
    workers=None,
    **attack_options,
) -> dict:
    """Audit an encoder for membership leakage and (optionally) write the report folder.

    Args:
        target: an :class:`~leakprobe.targets.encoder.Encoder`.
        members: evaluation images the target trained on.
        nonmembers: evaluation images it did not train on, preprocessed identically.
        attacks: attack names / aliases (``all``: partcrop, encodermi, lpla, baseline;
            ``partcrop-pooled`` replaces ``partcrop`` for a target without usable tokens), or
            attack objects.
        knowledge: ``known-subset`` (cross-fitted over ``folds``), ``shadow`` or
            ``reference`` (calibrated attacks against ``references``; default attacks then
            ``calibrated``).
        folds: cross-fitting folds (known-subset).
        repeats: cross-fitting repetitions averaged per sample (known-subset).
        permutations: label permutations of each attack's test of "no leakage" (p-value,
            null band, fitting-aware AUC interval; 0 skips them; None: 100 or
            ``$LEAKPROBE_PERMUTATIONS``). Queries are paid once.
        seed: fixes folds, crops, views and attackers.
        out_dir: where ``report.json``, ``report.html`` and plots go (None: nothing written).
        context: extra threat-model facts for the report.
        utility: the encoder's utility, shown beside the attacks.
        shadow: ``(shadow_target, shadow_members, shadow_nonmembers)`` for ``shadow``.
        references: the reference encoders for ``reference``
            (:func:`leakprobe.workflows.references.train_references` or
            :func:`~leakprobe.workflows.references.load_references`).
        resume: keep each attack's features in ``OUT/query-cache`` and reuse them (a
            killed audit rerun pays no query twice).
        workers: a :class:`~leakprobe.evaluation.workers.RayWorkers` that answers the query
            plan on several processes or machines (None: this process).
        attack_options: ``num_parts`` (PartCrop), ``n_views`` (EncoderMI) and ``views``
            (the view recipe of EncoderMI, LpLA and baseline-consistency: a preset such as
            ``"byol"``, ``"simclr,crop-scale=0.2:1"`` or a dict; see :mod:`leakprobe.views`).
            The report's context records ``views_setting`` and each attack's ``views``.
    Returns:
        The report dictionary (its keys: docs/concepts.md).
    """
    if knowledge == "reference" and attacks == "all":
        attacks = "calibrated"  # fitted attacks need known samples; calibrated ones do not
    if isinstance(attacks, (str, list)) and all(isinstance(a, str) for a in attacks):
        attack_objs = build_attacks(attacks, seed, target=target, **attack_options)
    else:
        attack_objs = list(attacks)
        check_token_attacks(attack_objs, target)  # before the first query
    if knowledge == "reference":
        if references is None:
            raise LeakprobeError("--knowledge reference needs reference encoders "
                                 "(--reference-data to train them, or --reference-model)")
        for a in attack_objs:
            if a.needs_references:
                a.prepare(references)
    if shadow is not None:  # the attacker's own data never holds an audited image
        from leakprobe.data.images import concat
        from leakprobe.data.splits import check_shadow_disjoint

        check_shadow_disjoint(concat([shadow[1], shadow[2]]), members, nonmembers)
    ctx = {"tokens_exposed": bool(getattr(target, "has_tokens", False)),
           **views_context(attack_objs), **(context or {})}
    if references is not None and knowledge == "reference":
        ctx["references"] = {**references.description, **ctx.get("references", {})}
    return run_and_report("encoder-membership", target, members, nonmembers,
                          attacks=attack_objs, knowledge=knowledge, folds=folds,
                          repeats=repeats, permutations=permutations, seed=seed,
                          out_dir=out_dir, context=ctx, utility=utility, shadow=shadow,
                          resume=resume, workers=workers)


def views_context(attack_objs: list) -> dict:
    """Report facts on the augmented views: the setting and each attack's resolved recipe."""
    drawn = [a for a in attack_objs if isinstance(a, ViewAttack)]
    if not drawn:
        return {}
    given = sorted({a.views if isinstance(a.views, str) else a.view_spec().preset
                    for a in drawn if a.views is not None})
    setting = ("recipe given (owner's audit): " + ", ".join(given) if given
               else "default SimCLR views (black box: recipe unknown)")
    return {"views_setting": setting,
            "views": {a.name: a.view_spec().to_dict() for a in drawn}}


def run_and_report(
    kind: MembershipKind | str,
    target: Target,
    members: ImageSet,
    nonmembers: ImageSet,
    *,
    attacks: list,
    knowledge: str = "known-subset",
    folds: int = 2,
    repeats: int = DEFAULT_REPEATS,
    permutations: int | None = None,
    seed: int = 0,
    out_dir: str | Path | None = None,
    context: dict | None = None,
    utility: dict | None = None,
    shadow: tuple[Target, ImageSet, ImageSet] | None = None,
    resume: bool = True,
    workers=None,
) -> dict:
    """Run attack objects under the audit protocol, build the report and (optionally) write it.

    The arguments are those of :func:`audit_encoder` (``attacks``: attack objects only),
    after ``kind``, the report's kind, which also says what ``target`` must answer.
    The query plan is logged before the first query. With ``out_dir`` and ``resume`` each
    attack's features are kept in ``OUT/query-cache`` as they complete, so the same call
    after a kill pays no query twice. Ctrl-C writes the report of the finished attacks
    (``context.interrupted``) and re-raises ``KeyboardInterrupt``.
    """
    check_out_dir(out_dir, "out_dir")  # before the first query, not when the report is written
    check_target(target, kind)
    t0 = time.time()
    permutations = resolve_permutations(permutations)
    n_images = len(members) + len(nonmembers)
    plan = build_plan(attacks, target, n_images)
    for line in plan.lines(time_probe(target)):
        log(line)
    cache = feature_cache(target, out_dir, context) if resume else None
    interrupted: AuditInterrupted | None = None
    try:
        results = run_audit(attacks, target, members, nonmembers, knowledge=knowledge,
                            folds=folds, seed=seed, shadow=shadow, repeats=repeats,
                            permutations=permutations, cache=cache, workers=workers)
        done = list(attacks)
    except AuditInterrupted as e:  # Ctrl-C: report what finished, then stop
        interrupted = e
        results = e.results
        done = [a for a in attacks if a.name in {r.attack for r in results}]
    for attack, result in zip(done, results, strict=True):  # e.g. partcrop-pooled
        result.notes.extend(attack.report_notes(target))
    ctx = {
        "target": getattr(target, "name", type(target).__name__),
        "input_size": int(getattr(target, "input_size", 0)),
        "members": members.source, "nonmembers": nonmembers.source,
        "knowledge": knowledge, "folds": folds if knowledge == "known-subset" else None,
        "crossfit_repeats": repeats if knowledge == "known-subset" else None,
        "permutations": int(permutations),
        "queries_per_image": {a.name: a.queries_per_image(target) for a in attacks},
        "total_queries": plan.total_queries,
        "query_plan": plan.to_dict(),
        "wall_seconds": round(time.time() - t0, 2),
        "device": str(getattr(target, "device", "")),
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),  # queries; scorer fits always run on one
        "scorer_threads": 1,
        "precision": {"queries": str(getattr(target, "query_precision", "fp32"))},
        **(context or {}),
    }
    if workers is not None:
        ctx["query_workers"] = workers.describe()
    if cache is not None:
        ctx["resumed_features"] = cache.hits
    if interrupted is not None:
        ctx["interrupted"] = True
        ctx["unfinished_attacks"] = interrupted.unfinished
    if utility:
        ctx["utility"] = utility
    report = build_membership_report(kind, knowledge, seed, results, context=ctx)
    if out_dir is not None:
        write_report(report, out_dir)
    if interrupted is not None:
        where = f"; report of the finished attacks in {out_dir}" if out_dir is not None else ""
        log(f"interrupted: {len(results)} of {len(attacks)} attacks finished{where}; the same "
            "command resumes from the query cache")
        raise KeyboardInterrupt from interrupted
    return report


def target_fingerprint(target) -> str | None:
    """What identifies the model a target answers with, for the query cache (None: unknown).

    A local torch module: the SHA-256 of its parameters and buffers. An HTTP target: its URL
    and what ``/v1/info`` said. Anything else is not cached (a rerun queries again).
    """
    module = getattr(target, "module", None)
    if isinstance(module, torch.nn.Module):
        h = hashlib.sha256()
        for name, tensor in module.state_dict().items():
            h.update(name.encode())
            flat = tensor.detach().cpu().contiguous().reshape(-1)  # 0-dim counters too
            h.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
        return h.hexdigest()
    url = getattr(target, "url", None)
    if isinstance(url, str):
        return f"{url} {getattr(target, 'info', '')}"
    return None


def feature_cache(target, out_dir: str | Path | None, context: dict | None
                  ) -> FeatureCache | None:
    """The audit's query cache in ``OUT/query-cache`` (None: no folder or unknown model)."""
    if out_dir is None:
        return None
    fingerprint = target_fingerprint(target)
    if fingerprint is None:
        log("query cache off: the target's model cannot be fingerprinted (a rerun queries "
            "again)")
        return None
    identity = {"model": fingerprint, "input_size": int(getattr(target, "input_size", 0)),
                "precision": str(getattr(target, "query_precision", "fp32")),
                "name": str(getattr(target, "name", ""))}
    return FeatureCache(Path(out_dir) / QUERY_CACHE, identity)


# kind -> (the method an audit queries, what the target must be, the loader that makes one)
def check_target(target, kind: str) -> None:
    """Refuse a target without the query method an audit of ``kind`` calls (before work).

    The method, the family's description and its loader come from
    :data:`leakprobe.targets.families.FAMILIES` (the family whose report is ``kind``).
    """
    fam = family_of_report(kind)
    if fam is None:
        raise LeakprobeError(f"no model family writes {kind!r} reports")
    if not callable(getattr(target, fam.method, None)):
        loader = fam.loader_path.replace(":", ".")
        raise LeakprobeError(f"the target ({type(target).__name__}) is not {fam.what}: it has "
                             f"no {fam.method}(images) method; load the model with {loader}")


def build_image2image_attacks(names: str | list[str], seed: int = 0, **options) -> list:
    """Image-to-image attack objects for ``names`` (``all`` = the three of the paper).

    ``options`` (the image2image family's options of :mod:`leakprobe.attacks.registry`:
    ``pixel_features``, ``seg_error``...) go to every attack; another option is an error.
    """
    wanted = expand_attacks(names, family="image2image")
    if options.get("seg_error", "l1") not in ("l1", "ce", "iou"):
        raise LeakprobeError(f"--seg-error must be l1, ce or iou, got {options['seg_error']!r}")
    known = FAMILIES["image2image"].options
    for key in options:
        if key not in known:
            raise LeakprobeError(f"unknown image-to-image attack option '{key}'; known: "
                                 f"{', '.join(known)}")
    return [create_attack(n, family="image2image", seed=seed,
                          **route_options(n, options, family="image2image")) for n in wanted]


def audit_image2image(
    target: ImageToImage,
    members: ImageSet,
    nonmembers: ImageSet,
    *,
    attacks: str | list = "reconstruction,predictability,membership-error",
    knowledge: str = "known-subset",
    folds: int = 2,
    repeats: int = DEFAULT_REPEATS,
    permutations: int | None = None,
    seed: int = 0,
    out_dir: str | Path | None = None,
    context: dict | None = None,
    **attack_options,
) -> dict:
    """Audit an image-to-image model (members/non-members carry ground-truth outputs).

    The arguments mean what they mean for :func:`audit_encoder` (``attacks``: names, ``all``
    for the three of the paper, or attack objects). ``attack_options`` go to every attack:
    ``pixel_features``, ``features_weights``, ``num_classes``, ``seg_error``, ``ridge``. The
    report states the feature extractor.
    """
    from leakprobe.attacks.membership.pixel_features import create_pixel_features

    attack_objs = build_image2image_attacks(attacks, seed, **attack_options) \
        if isinstance(attacks, (str, list)) and all(isinstance(a, str) for a in attacks) \
        else list(attacks)
    extractor = create_pixel_features(attack_options.get("pixel_features", "builtin"),
                                      attack_options.get("features_weights"),
                                      attack_options.get("feature_size"))
    ctx = {"pixel_features": extractor.describe(),
           "task_output": "label map" if "masks" in members.extras else "image",
           **(context or {})}
    return run_and_report("image2image-membership", target, members, nonmembers,
                          attacks=attack_objs, knowledge=knowledge, folds=folds,
                          repeats=repeats, permutations=permutations, seed=seed,
                          out_dir=out_dir, context=ctx)


def audit_model(
    target: Target,
    members: ImageSet,
    nonmembers: ImageSet,
    *,
    family: str,
    attacks: str | list | None = None,
    knowledge: str = "known-subset",
    folds: int = 2,
    repeats: int = DEFAULT_REPEATS,
    permutations: int | None = None,
    seed: int = 0,
    out_dir: str | Path | None = None,
    context: dict | None = None,
    **attack_options,
) -> dict:
    """Audit a model of any family registered in :mod:`leakprobe.targets.families`.

    The built-in families go to their own audit (:func:`audit_encoder`,
    :func:`audit_image2image`, :func:`audit_captioner`,
    :func:`~leakprobe.workflows.image_text_audit.audit_image_text`: their extra context,
    shadows, utility and blind floors); any other family gets the generic audit: its attacks from
    :mod:`leakprobe.attacks.registry` (``attacks`` None: the family's ``default_attacks``;
    ``attack_options`` routed by constructor signature), the blind floor, the audit protocol,
    and a report of the family's ``report_kind``. This is what makes a new family one
    registration (docs/ARCHITECTURE.md, "Adding a target family").
    """
    from leakprobe.attacks.membership.blind import Blind
    from leakprobe.targets.families import family as family_named

    fam = family_named(family)
    names = fam.default_attacks if attacks is None else attacks
    common: dict[str, Any] = dict(knowledge=knowledge, folds=folds, repeats=repeats,
                                  permutations=permutations, seed=seed, out_dir=out_dir,
                                  context=context)
    from leakprobe.workflows.image_text_audit import audit_image_text

    builtin: dict[str, Callable[..., dict]] = {
        "encoder": audit_encoder, "image2image": audit_image2image,
        "captioner": audit_captioner, "image-text": audit_image_text}
    if fam.name in builtin:
        return builtin[fam.name](target, members, nonmembers, attacks=names, **common,
                                 **attack_options)
    if isinstance(names, (str, list)) and all(isinstance(a, str) for a in names):
        attack_objs = [create_attack(n, family=fam.name, seed=seed,
                                     **route_options(n, attack_options, family=fam.name))
                       for n in expand_attacks(names, family=fam.name)]
    else:
        attack_objs = list(names)
    if not any(a.model_free for a in attack_objs):
        attack_objs.append(Blind(seed=seed))  # every audit runs the model-free floor
    return run_and_report(fam.report_kind, target, members, nonmembers, attacks=attack_objs,
                          **common)


def build_caption_attacks(names: str | list[str], seed: int = 0, **options) -> list:
    """Captioning attack objects (``all`` = m4i-metric,m4i-feature) plus the blind floor.

    ``options``: ``classifier`` (m4i-metric: ``svm``, ``logreg``, ``mlp``),
    ``extractor_epochs`` and ``device`` (m4i-feature's multimodal extractor), each given to
    the attacks that take it; others are ignored.
    """
    from leakprobe.attacks.membership.blind import Blind
    from leakprobe.device import resolve_device

    wanted = expand_attacks(names, family="captioner")
    if options.get("classifier") and options["classifier"] not in ("svm", "logreg", "mlp"):
        raise LeakprobeError(f"--classifier must be svm, logreg or mlp, got "
                             f"{options['classifier']!r}")
    if options.get("extractor_epochs") is not None and options["extractor_epochs"] < 1:
        raise LeakprobeError(f"--extractor-epochs must be >= 1, got {options['extractor_epochs']}")
    if options.get("device") is not None:
        resolve_device(options["device"])
    options = {**options, "classifier": options.get("classifier") or None}  # "": not set
    attacks = [create_attack(n, family="captioner", seed=seed,
                             **route_options(n, options, family="captioner")) for n in wanted]
    return [*attacks, Blind(seed=seed)]


def audit_captioner(
    target: Captioner,
    members: ImageSet,
    nonmembers: ImageSet,
    *,
    shadow_data: ImageSet,
    attacks: str | list = "m4i-metric,m4i-feature",
    permutations: int | None = None,
    seed: int = 0,
    out_dir: str | Path | None = None,
    context: dict | None = None,
    shadow_target: Captioner | None = None,
    shadow_epochs: int = 100,
    amp: str | bool = "auto",
    **attack_options,
) -> dict:
    """Audit a captioner with M4I under the shadow setting.

    The attacker's ``shadow_data`` (captioned images, disjoint from the target's members and
    non-members) is split in half; a shadow CNN-LSTM captioner is trained on one half (or
    ``shadow_target`` is used), the attacks are fitted on its members vs non-members and
    score the target's captions of every given sample. The multimodal extractor of
    ``m4i-feature`` is trained on all of ``shadow_data`` (attack objects passed already
    prepared keep their extractor).

    Args:
        target: a :class:`~leakprobe.targets.captioner.Captioner`.
        members: images the captioner trained on, with ``extras["captions"]``.
        nonmembers: images it did not train on, likewise captioned.
        shadow_data: the attacker's own captioned images (required).
        attacks: attack names (``m4i-metric``, ``m4i-feature``, ``all``) or attack objects.
        permutations: label permutations of the test of "no leakage" (the M4I scorers are
            fitted on the shadow, so their p-values are Mann-Whitney's; the blind floor is
            cross-fitted and permuted).
        seed: fixes the shadow split, the shadow captioner and the attackers.
        out_dir: report folder (None: nothing written).
        context: extra threat-model facts for the report.
        shadow_target: an already trained shadow captioner for the first half of the split.
        shadow_epochs: training epochs of the shadow captioner (match the target's).
        amp: bf16 autocast of the shadow captioner's training (``auto``/``on``/``off``).
        attack_options: see :func:`build_caption_attacks`.
    Returns:
        The report dictionary (kind ``captioner-membership``, knowledge ``shadow``).
    """
    from leakprobe.data.splits import check_shadow_disjoint
    from leakprobe.device import resolve_device
    from leakprobe.evaluation.audit import check_audit_plan

    # pre-flight: everything that can fail is checked before the shadow captioner trains
    check_out_dir(out_dir, "out_dir")
    check_target(target, "captioner-membership")
    device = str(resolve_device(attack_options.get("device") or getattr(target, "device", None)
                                or "auto"))
    attack_options["device"] = device
    attack_objs = build_caption_attacks(attacks, seed, **attack_options) \
        if isinstance(attacks, (str, list)) and all(isinstance(a, str) for a in attacks) \
        else list(attacks)
    for side, s in (("members", members), ("non-members", nonmembers),
                    ("shadow data", shadow_data)):
        if not s.extras.get("captions"):
            raise LeakprobeError(f"the {side} carry no reference captions "
                                 "(extras['captions']); M4I needs captioned images")
    check_audit_plan(attack_objs, target, members, nonmembers, "shadow", 2, 1)
    check_shadow_disjoint(shadow_data, members, nonmembers)
    split = make_split(shadow_data, len(shadow_data) // 2, seed=seed)
    shadow_given = shadow_target
    if shadow_target is None:
        from leakprobe.data.captions import Tokenizer
        from leakprobe.targets.captioner import ModuleCaptioner
        from leakprobe.training.captioning import train_captioner

        config = TrainConfig(epochs=shadow_epochs, batch_size=32, lr=2e-3, amp=amp,
                             seed=seed, device=device)
        refs = split.members.extras["captions"]
        tokenizer = Tokenizer.fit([c for cs in refs for c in cs])
        log(f"training shadow captioner on {len(split.members)} images")
        model, _ = train_captioner(split.members, tokenizer, config,
                                   description="shadow captioner training")
        shadow_target = ModuleCaptioner(model, tokenizer, device=config.device, name="shadow")
    for attack in attack_objs:
        if not attack.prepared:
            log(f"training the {attack.name} extractor on {len(shadow_data)} images")
            attack.prepare(shadow_data)
    ctx = {"shadow_data": shadow_data.source, "shadow_members": len(split.members),
           "shadow_nonmembers": len(split.nonmembers),
           "shadow_epochs": shadow_epochs if shadow_given is None else None,
           "precision": {"queries": "fp32", "shadow_training": None if shadow_given is not None
                         else config.extra.get("precision")},
           **(context or {})}
    return run_and_report("captioner-membership", target, members, nonmembers,
                          attacks=attack_objs, knowledge="shadow", folds=2,
                          permutations=permutations, seed=seed, out_dir=out_dir, context=ctx,
                          shadow=(shadow_target, split.members, split.nonmembers))
