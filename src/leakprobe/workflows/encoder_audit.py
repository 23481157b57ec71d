"""One encoder audit, specified once: the CLI, a YAML file and the Python API build the same
:class:`EncoderAuditSpec`, and :func:`run_encoder_audit` runs it.

The spec is validated when it is built (types, choices, option combinations), before any
file is read; :func:`run_encoder_audit` then loads the target and the data, checks everything
that needs them (set sizes and overlap, shadow and reference data, the query budget against
the query plan), and only then trains a shadow or references and queries the target.
``dry_run`` stops after those checks and prints the query plan (queries per image and in
total, and a time estimate from a timed, uncounted probe batch of a local model).

    spec = EncoderAuditSpec.from_yaml("audit.yaml")     # or EncoderAuditSpec(model=..., ...)
    report = run_encoder_audit(spec)

A YAML file holds the same keys as the dataclass (``leakprobe audit run audit.yaml``)::

    model: dino_vits16.pth
    arch: vit-small-patch16
    members: data/members
    nonmembers: data/nonmembers
    out: runs/audit
    attacks: all
    workers: 2
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from leakprobe.errors import LeakprobeError
from leakprobe.evaluation.audit import KNOWLEDGE
from leakprobe.evaluation.plan import QueryPlan

if TYPE_CHECKING:
    from leakprobe.training.encoder import EncoderRecipe

_BOOL_FIELDS = ("online", "resume", "dry_run")


@dataclass(frozen=True, kw_only=True)
class EncoderAuditSpec:
    """Everything one encoder audit needs; the CLI's options by the same names.

    Attributes:
        model: ``--model`` (TorchScript, .safetensors/.pth + ``arch``, ``hf:DIR``,
            ``file.py:factory``, ``package.module:factory``, ``http(s)://`` URL, train folder).
        members, nonmembers: image folders, split manifests or data specs.
        out: the report folder (``OUT/query-cache`` keeps paid features for resuming).
        attacks: attack names and aliases (``all``; ``calibrated`` under ``reference``).
        knowledge: ``known-subset``, ``shadow`` or ``reference``.
        workers: Ray workers that answer the query plan (1: this process).
        ray_address: an existing Ray cluster for the workers (``auto``, ``ray://h:10001``).
        resume: reuse ``OUT/query-cache`` (False: query everything again).
        dry_run: check everything, print the plan, query nothing.
        The other fields are the options of ``leakprobe audit encoder --help``.
    """

    model: str
    members: str
    nonmembers: str
    out: Path
    attacks: str = "all"
    arch: str | None = None
    checkpoint_key: str | None = None
    image_size: int | None = None
    knowledge: str = "known-subset"
    folds: int = 2
    repeats: int = 1
    permutations: int | None = None
    shadow_data: str | None = None
    shadow_arch: str = "resnet-tiny"
    shadow_method: str = "simclr"
    shadow_epochs: int = 50
    reference_data: str | None = None
    references: int | None = None
    reference_method: str = "simclr"
    reference_arch: str = "resnet-tiny"
    reference_init: str | None = None
    reference_base_epochs: int = 0
    reference_epochs: int = 50
    reference_model: tuple[str, ...] = ()
    online: bool = False
    population_samples: int = 500
    reference_dir: Path | None = None
    reference_workers: int = 1
    num_parts: int | None = None
    n_views: int | None = None
    views: str | None = None
    utility_data: str | None = None
    batch_size: int | str = "auto"
    query_precision: str = "auto"
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"
    workers: int = 1
    ray_address: str | None = None
    resume: bool = True
    dry_run: bool = False
    context: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        from leakprobe.workflows.references import normalise_spec_paths

        normalise_spec_paths(self)
        self.check()

    # ---- validation (no file is read) --------------------------------------------------------

    def check(self) -> None:
        """The checks that need no file: choices, ranges and option combinations."""
        from leakprobe.precision import check_query_precision
        from leakprobe.targets.batching import check_batch_size

        if self.knowledge not in KNOWLEDGE:
            raise LeakprobeError(f"--knowledge must be one of {', '.join(KNOWLEDGE)}, "
                                 f"got {self.knowledge!r}")
        for name in ("folds", "repeats", "shadow_epochs", "reference_epochs",
                     "reference_workers", "workers", "population_samples"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise LeakprobeError(f"--{name.replace('_', '-')} must be a whole number "
                                     f">= 1, got {value!r}")
        check_batch_size(self.batch_size, "--batch-size")
        check_query_precision(self.query_precision)
        if self.knowledge == "shadow" and not self.shadow_data:
            raise LeakprobeError("--knowledge shadow needs --shadow-data")
        if self.knowledge == "reference" and not (self.reference_data or self.reference_model):
            raise LeakprobeError("--knowledge reference needs --reference-data (to train "
                                 "references) or --reference-model")
        if self.knowledge != "reference" and (self.reference_data or self.reference_model
                                              or self.online):
            raise LeakprobeError("--reference-data/--reference-model/--online need "
                                 "--knowledge reference")
        if self.online and not self.reference_data:
            raise LeakprobeError("--online trains references: it needs --reference-data")
        if self.reference_init is not None and (not self.reference_data
                                                or self.reference_count == 0):
            raise LeakprobeError(f"--reference-init {self.reference_init}: the weights the "
                                 "references leakprobe trains start from: it needs "
                                 "--reference-data and --references N >= 1")
        base = self.reference_base_epochs
        if not isinstance(base, int) or isinstance(base, bool) or base < 0:
            raise LeakprobeError(f"--reference-base-epochs must be a whole number >= 0, got "
                                 f"{base!r}")
        if base and self.reference_init is not None:
            raise LeakprobeError("--reference-base-epochs trains the weights the references "
                                 "start from: give it or --reference-init, not both")
        if base and (not self.reference_data or self.reference_count == 0 or self.online):
            raise LeakprobeError("--reference-base-epochs needs --reference-data and "
                                 "--references N >= 1 (offline references)")
        if self.ray_address and self.workers < 2:
            raise LeakprobeError("--ray-address needs --workers N (N >= 2 actors on the "
                                 "cluster)")

    @property
    def reference_count(self) -> int:
        """References to train: ``references``, else 4 (0 with ``reference_model``)."""
        if self.references is not None:
            return self.references
        return 0 if self.reference_model else 4

    def reference_recipe(self) -> EncoderRecipe:
        """The references' :class:`~leakprobe.training.encoder.EncoderRecipe`."""
        from leakprobe.training.encoder import EncoderRecipe

        return EncoderRecipe(self.reference_method, self.reference_arch,
                             init=self.reference_init)

    @property
    def attack_names(self) -> str:
        """``attacks``, with ``all`` meaning ``calibrated`` under reference knowledge."""
        if self.knowledge == "reference" and self.attacks == "all":
            return "calibrated"  # fitted attacks need known samples; calibrated ones do not
        return self.attacks

    def attack_options(self) -> dict[str, Any]:
        return {"num_parts": self.num_parts, "n_views": self.n_views, "views": self.views}

    # ---- building ----------------------------------------------------------------------------

    @classmethod
    def from_mapping(cls, values: dict[str, Any], *, where: str = "the audit spec"
                     ) -> EncoderAuditSpec:
        """A spec from a mapping (a parsed YAML file): unknown keys are one-line errors."""
        if not isinstance(values, dict):
            raise LeakprobeError(f"{where}: expected a mapping of options, got "
                                 f"{type(values).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise LeakprobeError(f"{where}: unknown option(s) {', '.join(unknown)}; known: "
                                 f"{', '.join(sorted(known - {'context'}))}")
        missing = [k for k in ("model", "members", "nonmembers", "out") if k not in values]
        if missing:
            raise LeakprobeError(f"{where}: missing {', '.join(missing)}")
        clean = dict(values)
        for name in _BOOL_FIELDS:
            if name in clean and not isinstance(clean[name], bool):
                raise LeakprobeError(f"{where}: {name} must be true or false")
        if isinstance(clean.get("reference_model"), str):
            clean["reference_model"] = (clean["reference_model"],)
        for name in ("model", "members", "nonmembers"):
            clean[name] = str(clean[name])
        return cls(**clean)

    @classmethod
    def from_yaml(cls, path: str | Path) -> EncoderAuditSpec:
        """A spec from a YAML file (``safe_load``); relative paths stay relative to the
        working directory, as on the command line."""
        import yaml

        path = Path(path)
        if not path.is_file():
            raise LeakprobeError(f"audit spec {path}: no such file")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise LeakprobeError(f"audit spec {path}: not valid YAML ({e})") from e
        return cls.from_mapping(values, where=f"audit spec {path}")

    def replace(self, **changes: Any) -> EncoderAuditSpec:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (the report records them as ``context.spec``)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "context":
                continue
            out[f.name] = str(value) if isinstance(value, Path) else \
                list(value) if isinstance(value, tuple) else value
        return out


def _training_batch(spec: EncoderAuditSpec) -> int:
    return spec.batch_size if isinstance(spec.batch_size, int) else 256


def run_encoder_audit(spec: EncoderAuditSpec) -> dict | QueryPlan:
    """Run (or, with ``dry_run``, plan) the audit ``spec`` describes.

    Returns:
        The report dictionary, or the :class:`~leakprobe.evaluation.plan.QueryPlan` of a dry
        run (printed, nothing queried or trained).
    Raises:
        LeakprobeError: one line naming the first problem, before any training or query.
    """
    from leakprobe.data.images import concat as concat_sets
    from leakprobe.data.loaders import load_dataset
    from leakprobe.data.splits import check_shadow_disjoint, load_images
    from leakprobe.evaluation.audit import check_audit_plan
    from leakprobe.evaluation.plan import build_plan, time_probe
    from leakprobe.preflight import check_out_dir
    from leakprobe.progress import log
    from leakprobe.targets.families import load_target
    from leakprobe.training.encoder import EncoderRecipe
    from leakprobe.training.trainer import TrainConfig
    from leakprobe.workflows.audit import (
        audit_encoder,
        build_attacks,
        encoder_utility,
        train_shadow,
    )
    from leakprobe.workflows.train import recorded_utility

    names = spec.attack_names
    options = spec.attack_options()
    build_attacks(names, spec.seed, **options)  # bad names and options, before any load
    check_out_dir(spec.out, "--out")
    config = TrainConfig(epochs=spec.shadow_epochs, batch_size=_training_batch(spec),
                         seed=spec.seed, device=spec.device, amp=spec.amp)
    load_kwargs: dict[str, Any] = {
        "family": "encoder", "arch": spec.arch, "image_size": spec.image_size,
        "batch_size": spec.batch_size, "checkpoint_key": spec.checkpoint_key,
        "query_precision": spec.query_precision}
    target = load_target(spec.model, device=spec.device, **load_kwargs)
    attack_objs = build_attacks(names, spec.seed, target=target, **options)
    size = target.input_size
    mem = load_images(spec.members, size, side="members")
    non = load_images(spec.nonmembers, size, side="nonmembers")
    labelled = load_dataset(spec.utility_data, size, spec.seed) if spec.utility_data else None
    if labelled is not None and labelled.labels is None:
        raise LeakprobeError(f"--utility-data {spec.utility_data}: needs labelled images "
                             "(class-per-folder or a labelled data spec)")
    shadow_images = load_images(spec.shadow_data, size) \
        if spec.knowledge == "shadow" and spec.shadow_data is not None else None
    population = load_images(spec.reference_data, size) if spec.reference_data else None
    if population is not None:
        from leakprobe.workflows.references import check_reference_data

        check_reference_data(population, mem, non)
    if spec.knowledge == "reference" and population is None:
        raise LeakprobeError("--reference-model alone: also give --reference-data (the "
                             "population samples RMIA compares with), disjoint from the "
                             "audit")
    n_pop = min(spec.population_samples, len(population)) if population is not None else 0
    per_image = sum(a.queries_per_image(target) for a in attack_objs if a.needs_references)
    # everything that can fail, before the shadow or references train and the target is
    # queried (population queries: at most once per calibrated attack)
    check_audit_plan(attack_objs, target, mem, non, spec.knowledge, spec.folds, spec.repeats,
                     extra_queries=(len(labelled) if labelled is not None else 0)
                     + n_pop * per_image, extra_what="utility and population-sample")
    if shadow_images is not None:
        check_shadow_disjoint(shadow_images, mem, non)
    if population is not None and spec.reference_count:
        from leakprobe.workflows.references import check_reference_recipe

        # the factory (--reference-arch file.py:f) and init weights, before anything trains
        check_reference_recipe(spec.reference_recipe(), population.image_size)
    workers = None
    if spec.workers > 1:
        from leakprobe.evaluation.workers import RayWorkers

        workers = RayWorkers(spec={"spec": spec.model, **load_kwargs}, workers=spec.workers,
                             address=spec.ray_address)
        if spec.ray_address and not spec.dry_run:
            workers.connect()  # reference training (--reference-workers) joins it too
    if spec.dry_run:
        plan = build_plan(attack_objs, target, len(mem) + len(non))
        extras = []
        if shadow_images is not None:
            extras.append(f"a shadow {spec.shadow_method} {spec.shadow_arch} trains "
                          f"{spec.shadow_epochs} epochs on {len(shadow_images) // 2} images")
        if labelled is not None:
            extras.append(f"utility: {len(labelled)} labelled images")
        for line in plan.lines(time_probe(target)) + [f"  + {e}" for e in extras]:
            print(line)
        print("dry run: nothing was trained or queried")
        return plan
    shadow = None
    context: dict = {"model": spec.model, "spec": spec.to_dict(), **spec.context}
    if shadow_images is not None:
        shadow = train_shadow(shadow_images, EncoderRecipe(spec.shadow_method,
                                                           spec.shadow_arch), config, spec.seed)
        context["precision"] = {"queries": str(getattr(target, "query_precision", "fp32")),
                                "shadow_training": config.extra.get("precision")}
        context["shadow"] = {"data": shadow_images.source, "method": spec.shadow_method,
                             "arch": spec.shadow_arch, "epochs": spec.shadow_epochs,
                             "members": len(shadow[1]), "nonmembers": len(shadow[2]),
                             "split_seed": spec.seed}
    refs = None
    if spec.knowledge == "reference" and population is not None:
        refs = _references(spec, population, mem, non, concat_sets, size)
    utility = encoder_utility(target, labelled, spec.seed) if labelled is not None \
        else recorded_utility(spec.model)
    log(f"audit of {spec.model}: {len(mem)} members, {len(non)} non-members, "
        f"{len(attack_objs)} attacks")
    try:
        return audit_encoder(target, mem, non, attacks=attack_objs, knowledge=spec.knowledge,
                             folds=spec.folds, repeats=spec.repeats,
                             permutations=spec.permutations, seed=spec.seed, out_dir=spec.out,
                             context=context, utility=utility, shadow=shadow,
                             references=refs, resume=spec.resume, workers=workers)
    finally:
        if workers is not None:
            workers.close()


def _references(spec: EncoderAuditSpec, population, mem, non, concat_sets, size: int):
    """Train and/or load the reference encoders of a ``reference`` audit."""
    from leakprobe.training.trainer import TrainConfig
    from leakprobe.workflows.references import (
        load_references,
        merge_references,
        recipe_match,
        train_references,
    )

    trained = None
    count = spec.reference_count
    if count == 0 and not spec.reference_model:
        raise LeakprobeError("--references 0 without --reference-model: no references")
    if count:
        ref_config = TrainConfig(epochs=spec.reference_epochs, batch_size=_training_batch(spec),
                                 seed=spec.seed, device=spec.device, amp=spec.amp)
        recipe = spec.reference_recipe()
        base = None
        if spec.reference_base_epochs:
            from dataclasses import replace

            from leakprobe.workflows.references import train_shared_base

            base = train_shared_base(
                population, recipe=recipe,
                config=replace(ref_config, epochs=spec.reference_base_epochs),
                out_dir=spec.reference_dir or spec.out / "references", seed=spec.seed)
            recipe = replace(recipe, init=str(base))
        trained = train_references(
            population, count=count,
            recipe=recipe, config=ref_config,
            out_dir=spec.reference_dir or spec.out / "references", seed=spec.seed,
            candidates=concat_sets([mem, non]) if spec.online else None,
            n_population=spec.population_samples, workers=spec.reference_workers,
            device=spec.device)
        trained.description["matches_target_recipe"] = recipe_match(
            spec.model, trained.description)
        if base is not None:
            trained.description["shared_base"] = {
                "epochs": spec.reference_base_epochs, "weights": str(base),
                "train_seconds": _base_seconds(base)}
    given = load_references(list(spec.reference_model), population, device=spec.device,
                            n_population=spec.population_samples, seed=spec.seed,
                            image_size=size) if spec.reference_model else None
    return merge_references(trained, given)


def _base_seconds(weights: Path) -> float | None:
    """The recorded training time of a shared base reference (None: unknown)."""
    import json

    try:
        return json.loads((weights.parent / "base.json").read_text()).get("train_seconds")
    except (OSError, ValueError):
        return None
