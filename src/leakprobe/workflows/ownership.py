"""``leakprobe audit ownership``: is a suspect encoder derived from the owner's?

The CLI and the Python API build one :class:`OwnershipSpec`; :func:`run_ownership` runs it:

1. checks everything that needs no training or query, in this order: the options (alpha in
   (0, 1), references of some kind, test names), the output folder, the suspect (and victim,
   and reference models) loading, the owner's sets (each >= 20 images, disjoint by content),
   the reference data (disjoint from both sets) and the suspect's query budget;
2. trains the reference encoders on ``reference_data`` (random halves, the cache and options of
   ``audit encoder --knowledge reference``: a run reuses and resumes the references another
   run left in the same ``reference_dir``) and/or loads ``reference_model``;
3. embeds K seeded views of every owner image with the suspect, the references and the victim
   (the same views for all), and the images themselves;
4. runs the tests (:mod:`leakprobe.evaluation.ownership`,
   :mod:`leakprobe.evaluation.encoder_similarity`, :mod:`leakprobe.evaluation.dataset_inference`)
   and combines them by the rule declared there (Holm-Bonferroni with Tarone's family);
5. writes ``report.json`` (``kind: encoder-ownership``) and ``report.html`` atomically.

    spec = OwnershipSpec(suspect="suspect.pt", members="own/train", nonmembers="own/held",
                         victim="runs/victim", reference_data="own/other", out="runs/own")
    report = run_ownership(spec)   # report["verdict"]: "derived" or "not shown"

References are required: without them an image that every encoder finds easy counts as
evidence of copying (see :mod:`leakprobe.evaluation.ownership`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from leakprobe.errors import LeakprobeError
from leakprobe.evaluation.dataset_inference import DI_COMPONENTS, FIT_ON
from leakprobe.evaluation.ownership import DEFAULT_VIEWS_PER_IMAGE, parse_tests

NO_REFERENCES = ("audit ownership needs reference encoders that never saw your data: "
                 "--reference-data DATA (trains --references N of them, default 4) or "
                 "--reference-model SPEC; without them an image that is easy for every "
                 "encoder would count as evidence of copying")
# the victim's own calibrated membership p-value above which the report warns
VICTIM_SIGNAL_LEVEL = 0.05


@dataclass(frozen=True, kw_only=True)
class OwnershipSpec:
    """Everything one ownership audit needs; the CLI's options by the same names.

    Attributes:
        suspect: the encoder under suspicion (any ``--model`` form: TorchScript,
            .safetensors/.pth + ``arch``, ``hf:DIR``, ``file.py:factory``,
            ``package.module:factory``, ``http(s)://`` URL, train folder).
        members: the owner's training images (folder, split manifest side, data spec).
        nonmembers: images the owner held out of training (a random part of the same pool).
        out: the report folder (``OUT/references`` caches trained references by default).
        victim: the owner's encoder (enables the similarity tests), or None.
        reference_data: the owner's other images, to train references on (disjoint from
            ``members`` and ``nonmembers``).
        references: references to train on ``reference_data`` (default 4; 0 with only
            ``reference_model``).
        reference_method, reference_arch, reference_epochs: their SSL recipe.
        reference_model: encoders brought as references (declared never to have seen the
            owner's images).
        reference_dir: the reference cache (default ``OUT/references``).
        reference_workers: references trained at once as Ray tasks.
        alpha: the verdict's level, in (0, 1).
        tests: ``all`` or a comma list of :data:`~leakprobe.evaluation.ownership.OWNERSHIP_TESTS`.
        n_views: views per image of the membership statistic (K >= 2).
        views: their recipe (:func:`leakprobe.views.parse_views`; None: SimCLR's).
        di_components: dataset inference's mixture components.
        di_fit_on: whose member embeddings dataset inference fits on (``suspect``, ``victim``).
        arch, victim_arch: registered architecture of ``.safetensors`` suspect / victim weights.
        checkpoint_key, image_size, batch_size: as ``audit encoder``'s (the suspect's).
        seed: seeds the views, the halvings, the references and the mixture.
        device, amp: where and how models run and references train.
        context: extra facts the report records.
    """

    suspect: str
    members: str
    nonmembers: str
    out: Path
    victim: str | None = None
    reference_data: str | None = None
    references: int | None = None
    reference_method: str = "simclr"
    reference_arch: str = "resnet-tiny"
    reference_epochs: int = 50
    reference_model: tuple[str, ...] = ()
    reference_dir: Path | None = None
    reference_workers: int = 1
    alpha: float = 0.01
    tests: str = "all"
    n_views: int = DEFAULT_VIEWS_PER_IMAGE
    views: str | None = None
    di_components: int = DI_COMPONENTS
    di_fit_on: str = "suspect"
    arch: str | None = None
    victim_arch: str | None = None
    checkpoint_key: str | None = None
    image_size: int | None = None
    batch_size: int | str = "auto"
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"
    context: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        from leakprobe.workflows.references import normalise_spec_paths

        normalise_spec_paths(self)
        self.check()

    def check(self) -> None:
        """The checks that need no file: ranges, names and option combinations."""
        from leakprobe.targets.batching import check_batch_size
        from leakprobe.views import parse_views

        alpha = self.alpha
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) \
                or not math.isfinite(alpha) or not 0.0 < alpha < 1.0:
            raise LeakprobeError(f"--alpha must lie strictly between 0 and 1, got {alpha!r}")
        for name in ("reference_epochs", "reference_workers", "di_components"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise LeakprobeError(f"--{name.replace('_', '-')} must be a whole number "
                                     f">= 1, got {value!r}")
        if not isinstance(self.n_views, int) or isinstance(self.n_views, bool) \
                or self.n_views < 2:
            raise LeakprobeError(f"--n-views must be a whole number >= 2 (pairs of views), "
                                 f"got {self.n_views!r}")
        if self.references is not None and (not isinstance(self.references, int)
                                            or self.references < 0):
            raise LeakprobeError(f"--references must be >= 0, got {self.references!r}")
        if self.di_fit_on not in FIT_ON:
            raise LeakprobeError(f"--di-fit-on must be one of {', '.join(FIT_ON)}, got "
                                 f"{self.di_fit_on!r}")
        parse_tests(self.tests)
        if self.views is not None:
            parse_views(self.views)
        check_batch_size(self.batch_size, "--batch-size")
        if not self.reference_data and not self.reference_model:
            raise LeakprobeError(NO_REFERENCES)
        if self.reference_data and self.trained_count == 0 and not self.reference_model:
            raise LeakprobeError("--references 0 without --reference-model: no references; "
                                 + NO_REFERENCES.split(": ", 1)[1])
        if self.references and not self.reference_data:
            raise LeakprobeError(f"--references {self.references} trains references: it "
                                 "needs --reference-data")

    @property
    def trained_count(self) -> int:
        """References to train on ``reference_data`` (0 without it)."""
        if not self.reference_data:
            return 0
        if self.references is not None:
            return self.references
        return 0 if self.reference_model else 4

    def replace(self, **changes: Any) -> OwnershipSpec:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (the report records them as ``context.spec``)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "context":
                continue
            value = getattr(self, f.name)
            out[f.name] = str(value) if isinstance(value, Path) else \
                list(value) if isinstance(value, tuple) else value
        return out


def _training_batch(spec: OwnershipSpec) -> int:
    """Reference training batch: as ``audit encoder``'s, so the two share cached references."""
    return spec.batch_size if isinstance(spec.batch_size, int) else 256


def _load(spec_text: str, spec: OwnershipSpec, *, arch: str | None = None,
          image_size: int | None = None, checkpoint_key: str | None = None) -> Any:
    from leakprobe.targets.families import load_target

    return load_target(spec_text, family="encoder", device=spec.device, arch=arch,
                       image_size=image_size, batch_size=spec.batch_size,
                       checkpoint_key=checkpoint_key)


def run_ownership(spec: OwnershipSpec) -> dict[str, Any]:
    """Run the ownership audit ``spec`` describes (see the module docstring).

    Returns:
        The ``encoder-ownership`` report (also written to ``spec.out``).
    Raises:
        LeakprobeError: one line naming the first problem, before any training or query.
    """
    import numpy as np
    import torch

    from leakprobe.data.images import concat
    from leakprobe.data.splits import load_images
    from leakprobe.evaluation.audit import check_audit_sets
    from leakprobe.evaluation.ownership import combine_tests
    from leakprobe.preflight import check_out_dir, check_query_budget
    from leakprobe.progress import log
    from leakprobe.report.ownership import build_ownership_report, write_ownership_report
    from leakprobe.workflows.references import check_reference_data

    t0 = time.time()
    wanted = parse_tests(spec.tests)
    check_out_dir(spec.out, "--out")
    suspect = _load(spec.suspect, spec, arch=spec.arch, image_size=spec.image_size,
                    checkpoint_key=spec.checkpoint_key)
    size = int(suspect.input_size)
    members = load_images(spec.members, size, side="members")
    nonmembers = load_images(spec.nonmembers, size, side="nonmembers")
    check_audit_sets(members, nonmembers)
    population = load_images(spec.reference_data, size) if spec.reference_data else None
    if population is not None:
        check_reference_data(population, members, nonmembers)
    victim = _load(spec.victim, spec, arch=spec.victim_arch) if spec.victim else None
    given = [_load(s, spec) for s in spec.reference_model]
    n_m, n_n = len(members), len(nonmembers)
    n = n_m + n_n
    need_views = "calibrated-membership" in wanted
    need_clean = any(t != "calibrated-membership" for t in wanted)
    per_image = spec.n_views * int(need_views) + int(need_clean)
    what = " + ".join([f"{spec.n_views} views"] * need_views + ["the image"] * need_clean)
    for role, model in (("suspect", suspect), ("victim", victim)):
        if model is not None:
            check_query_budget(model, n * per_image,
                               f"the ownership audit needs {n * per_image} {role} queries "
                               f"({n} images x ({what}))", "lower --n-views or use fewer images")

    # ---- references (the first expensive step) --------------------------------------------
    reference_info: dict[str, Any] = {"count": 0}
    refs: list[Any] = []
    if spec.trained_count:
        trained = _train_references(spec, population)
        refs.extend(trained.encoders)
        reference_info = dict(trained.description)
    if given:
        refs.extend(given)
        reference_info = {**reference_info, "count": len(refs),
                          "models": list(spec.reference_model),
                          "source": "trained+given" if spec.trained_count else "given"}
    log(f"ownership: {spec.suspect} against {len(refs)} references, {n_m} members, "
        f"{n_n} non-members")

    # ---- queries, then the tests ----------------------------------------------------------
    owner = concat([members, nonmembers])
    is_member = np.r_[np.ones(n_m, bool), np.zeros(n_n, bool)]
    answers = _answers(spec, owner, suspect, victim, refs, size, need_views, need_clean)
    tests = _tests(spec, wanted, answers, is_member, victim is not None)
    combination = combine_tests(tests, alpha=spec.alpha)
    victim_membership, warnings = _victim_check(answers, is_member)
    context = {"spec": spec.to_dict(), "image_size": size, "views_per_image": spec.n_views,
               "views": spec.views or "simclr",
               "suspect_queries": int(getattr(suspect, "queries", 0) or 0),
               "suspect_embed_dim": int(getattr(suspect, "embed_dim", 0) or 0) or None,
               "victim_embed_dim": (int(getattr(victim, "embed_dim", 0) or 0) or None)
               if victim is not None else None,
               "torch_threads": torch.get_num_threads(), **spec.context}
    report = build_ownership_report(
        tests=tests, combination=combination, alpha=spec.alpha, n_members=n_m,
        n_nonmembers=n_n, n_references=len(refs), suspect=spec.suspect, victim=spec.victim,
        seed=spec.seed, seconds=time.time() - t0, references=reference_info,
        victim_membership=victim_membership, context=context, warnings=warnings)
    write_ownership_report(report, spec.out)
    return report


def _answers(spec: OwnershipSpec, owner: Any, suspect: Any, victim: Any, refs: list[Any],
             size: int, need_views: bool, need_clean: bool) -> dict[str, Any]:
    """Every encoder's view statistics and clean embeddings of the owner's images.

    Returns:
        ``views``: (E, N) view consistency of [suspect, *references, victim] (when asked);
        ``suspect``, ``victim``, ``refs``: clean embeddings (when asked).
    """
    from leakprobe.evaluation.ownership import clean_embeddings, view_consistency

    out: dict[str, Any] = {"n_refs": len(refs)}
    encoders = [suspect, *refs] + ([victim] if victim is not None else [])
    if need_views:
        out["views"] = view_consistency(encoders, owner.pixels, n_views=spec.n_views,
                                        views=spec.views, seed=spec.seed, size=size)
    if need_clean:
        out["suspect"] = clean_embeddings(suspect, owner.pixels, size=size)
        out["refs"] = [clean_embeddings(r, owner.pixels, size=size) for r in refs]
        if victim is not None:
            out["victim"] = clean_embeddings(victim, owner.pixels, size=size)
    return out


ISOLATION = "isolation (minus the mean cosine to the k nearest owner images)"


def _tests(spec: OwnershipSpec, wanted: tuple[str, ...], answers: dict[str, Any],
           is_member: Any, has_victim: bool) -> list[Any]:
    """Every test ``wanted``, run or skipped with why, in report order."""
    import numpy as np

    from leakprobe.evaluation.dataset_inference import dataset_inference_test
    from leakprobe.evaluation.encoder_similarity import similarity_tests
    from leakprobe.evaluation.ownership import (
        OwnershipTest,
        calibrated_membership_test,
        isolation,
    )

    r = answers["n_refs"]
    n_m = int(is_member.sum())
    sims: dict[str, OwnershipTest] = {}
    if has_victim and any(t.startswith("similarity") for t in wanted):
        sims = {t.name: t for t in similarity_tests(answers["suspect"], answers["victim"],
                                                    answers["refs"], seed=spec.seed)}
    tests: list[OwnershipTest] = []
    for name in wanted:
        if name == "calibrated-membership":
            views = answers["views"]
            tests.append(calibrated_membership_test(views[0], views[1:1 + r], is_member))
        elif name == "calibrated-isolation":
            refs = np.stack([isolation(e) for e in answers["refs"]])
            tests.append(calibrated_membership_test(isolation(answers["suspect"]), refs,
                                                    is_member, name=name,
                                                    statistic=ISOLATION))
        elif name.startswith("similarity"):
            tests.append(sims.get(name) or OwnershipTest.skip(
                name, "needs --victim (the owner's encoder)"))
        elif name == "dataset-inference":
            s, v = answers["suspect"], answers.get("victim")
            tests.append(dataset_inference_test(
                s[:n_m], s[n_m:], victim_members=None if v is None else v[:n_m],
                fit_on=spec.di_fit_on, n_components=spec.di_components, seed=spec.seed))
    return tests


def _victim_check(answers: dict[str, Any], is_member: Any
                  ) -> tuple[dict[str, Any] | None, list[str]]:
    """The victim's own calibrated membership tests (not combined) and a warning when it
    shows no signal: then no copy of it can be expected to."""
    import numpy as np

    from leakprobe.evaluation.ownership import calibrated_membership_test, isolation

    r = answers["n_refs"]
    found: dict[str, Any] = {}
    views = answers.get("views")
    if views is not None and views.shape[0] == r + 2:  # the victim's row is last
        found["calibrated-membership"] = calibrated_membership_test(
            views[-1], views[1:1 + r], is_member)
    if answers.get("victim") is not None:
        refs = np.stack([isolation(e) for e in answers["refs"]])
        found["calibrated-isolation"] = calibrated_membership_test(
            isolation(answers["victim"]), refs, is_member, statistic=ISOLATION)
    if not found:
        return None, []
    summary = {k: {"statistic": t.statistic, "p_value": t.p_value,
                   "uncalibrated_auc": t.details["uncalibrated_auc"]} for k, t in found.items()}
    warnings = []
    if all(float(t.p_value or 1.0) > VICTIM_SIGNAL_LEVEL for t in found.values()):
        shown = ", ".join(f"{k} p = {t.p_value:.3g}" for k, t in found.items())
        warnings.append(
            f"the victim itself shows no calibrated membership signal on these sets ({shown}): "
            "a copy of it cannot be expected to show one, so the membership tests have little "
            "power here")
    return summary, warnings


def _train_references(spec: OwnershipSpec, population: Any) -> Any:
    """Train (or reuse from the cache) the references on ``reference_data``."""
    from leakprobe.training.encoder import EncoderRecipe
    from leakprobe.training.trainer import TrainConfig
    from leakprobe.workflows.references import recipe_match, train_references

    config = TrainConfig(epochs=spec.reference_epochs, batch_size=_training_batch(spec),
                         seed=spec.seed, device=spec.device, amp=spec.amp)
    trained = train_references(
        population, count=spec.trained_count,
        recipe=EncoderRecipe(spec.reference_method, spec.reference_arch), config=config,
        out_dir=spec.reference_dir or spec.out / "references", seed=spec.seed,
        n_population=1, workers=spec.reference_workers, device=spec.device)
    trained.description.pop("population_samples", None)  # no population queries here
    trained.description["matches_victim_recipe"] = recipe_match(
        spec.victim, trained.description) if spec.victim else None
    return trained
