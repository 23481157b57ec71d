"""Reference encoders for ``--knowledge reference``: trained on the attacker's population data
(cached by content hash, resumable, in parallel on Ray when asked) or brought by the user.

Reference r trains on a seeded random half of the pool: the population data (offline), or the
population data plus the audited candidates (``online``: the auditor knows its candidates, not
their labels). Online references come in complementary pairs (reference 2k + 1 trains on the
other half of reference 2k's), so with an even R every candidate is IN exactly R / 2 references
and OUT of the others, as in LiRA's released code (a balanced ``keep`` matrix); random halves
would leave some candidates with no IN or no OUT reference when R is small.
Its folder is named by a hash of everything that determines it (the pool's content, the
recipe, the training settings, r and the seed), so R = 8 reuses the four references of an
R = 4 run, and a killed run retrains only the references that had not finished: a reference
counts as done once its ``reference.json`` exists (written last, atomically).
Progress: ``references: training`` counts the references trained; inside it each one's
training shows its steps, ``reference 3 training (epoch 12/50)``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from leakprobe.data.images import ImageSet, concat
from leakprobe.data.splits import check_shadow_disjoint
from leakprobe.errors import LeakprobeError
from leakprobe.evaluation.references import ReferenceModels
from leakprobe.io import write_json
from leakprobe.progress import log, task, track
from leakprobe.targets.loading import is_factory_arch
from leakprobe.training.backbone import absolute_recipe, build_backbone, source_digests
from leakprobe.training.encoder import EncoderRecipe, save_encoder, train_ssl_encoder
from leakprobe.training.trainer import TrainConfig

DEFAULT_REFERENCES = 4
DEFAULT_POPULATION = 500  # population samples queried on the target (RMIA's z)
DONE = "reference.json"


def normalise_spec_paths(spec: Any) -> None:
    """Make a frozen audit spec's ``out`` and ``reference_dir`` Paths and its
    ``reference_model`` a tuple (what every spec with reference options takes as given)."""
    object.__setattr__(spec, "out", Path(spec.out))
    if spec.reference_dir is not None:
        object.__setattr__(spec, "reference_dir", Path(spec.reference_dir))
    object.__setattr__(spec, "reference_model", tuple(spec.reference_model or ()))


def check_reference_data(population: ImageSet, members: ImageSet, nonmembers: ImageSet
                         ) -> None:
    """Refuse reference data that shares an image with the audited sets (by content)."""
    check_shadow_disjoint(population, members, nonmembers, what="reference")


def _recipe_dict(recipe: Any) -> dict[str, Any]:
    """A recipe's fields, tuples as lists (what the cache key and the report record)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(recipe).items()}


def _key(pool_hashes: list[str], recipe: Any, config: TrainConfig, index: int,
         seed: int, online: bool, family: str = "encoder",
         sources: dict[str, str | None] | None = None) -> str:
    """The cache key of one reference; ``sources``: digests of the recipe's factory file and
    init weights (:func:`~leakprobe.training.backbone.source_digests`)."""
    settings = {k: v for k, v in config.to_dict().items() if k not in ("device", "extra")}
    recipe_fields = {k: v for k, v in _recipe_dict(recipe).items()
                     if not (k == "init" and v is None)}  # keys of runs before init existed
    blob = json.dumps({"pool": hashlib.sha256("".join(pool_hashes).encode()).hexdigest(),
                       "recipe": recipe_fields,
                       "train": settings, "index": index, "seed": seed, "online": online,
                       **({"halves": "paired"} if online else {}),
                       **({"family": family} if family != "encoder" else {}),
                       **({"sources": sources} if sources else {})},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def check_reference_recipe(recipe: EncoderRecipe, input_size: int) -> None:
    """Build one reference backbone as training will (factory import and probe, init weights
    loaded strictly), so a bad ``--reference-arch`` or ``--reference-init`` fails in one line
    before anything trains or is queried."""
    build_backbone(recipe, input_size, arch_option="--reference-arch",
                   init_option="--reference-init")


def reference_half(n: int, index: int, seed: int, paired: bool = False) -> np.ndarray:
    """Positions of the pool reference ``index`` trains on: a seeded random half.

    ``paired``: reference ``2k + 1`` takes the complement of reference ``2k``'s half.
    """
    if not paired:
        rng = np.random.default_rng([seed, index, 7919])
        return np.sort(rng.permutation(n)[: n // 2])
    order = np.random.default_rng([seed, index // 2, 7919, 2]).permutation(n)
    return np.sort(order[: n // 2] if index % 2 == 0 else order[n // 2:])


def _train_one(pool: ImageSet, positions: np.ndarray, recipe: EncoderRecipe,
               config: TrainConfig, folder: str, info: dict) -> str:
    """Train and save one reference into ``folder`` (a Ray task's body, too)."""
    out = Path(folder)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.time()
    torch.manual_seed(config.seed)
    chosen = pool.subset(positions.tolist())
    backbone, history = train_ssl_encoder(chosen.pixels, recipe, config,
                                          description=f"reference {info['reference'] + 1} "
                                                      "training")
    save_encoder(backbone.cpu(), recipe, tmp, {"train": config.to_dict(),
                                               "loss_history": history, **info})
    hashes = chosen.content_hashes()
    write_json(tmp / "trained_on.json", hashes)
    write_json(tmp / DONE, {**info, "train_seconds": round(time.time() - t0, 2)})
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return str(out)


def _train_one_image_text(pool: ImageSet, positions: np.ndarray, recipe: Any,
                          config: TrainConfig, folder: str, info: dict) -> str:
    """Train and save one reference image-text model into ``folder`` (the CLIP recipe of
    :mod:`leakprobe.training.image_text`; its tokenizer fitted on its own half's captions)."""
    from leakprobe.training.image_text import train_target_image_text

    out = Path(folder)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.time()
    chosen = pool.subset(positions.tolist())
    train_target_image_text(
        chosen, out_dir=tmp, epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
        seed=config.seed, device=config.device, arch=recipe.arch,
        embed_dim=recipe.embed_dim, arch_kwargs=recipe.arch_kwargs, amp=config.amp,
        description=f"reference {info['reference'] + 1} training")
    shutil.rmtree(tmp / "checkpoints", ignore_errors=True)
    write_json(tmp / "trained_on.json", chosen.content_hashes())
    write_json(tmp / DONE, {**info, "train_seconds": round(time.time() - t0, 2)})
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return str(out)


def _describe_recipe(recipe: Any, config: TrainConfig, family: str) -> dict[str, Any]:
    """What the report records of the references' recipe."""
    train = {"epochs": config.epochs, "batch_size": config.batch_size, "lr": config.lr}
    if family == "image-text":
        return {"method": "clip", "arch": recipe.arch, "embed_dim": recipe.embed_dim, **train}
    return {"method": recipe.method, "arch": recipe.arch, "init": recipe.init,
            "crop_scale": list(recipe.crop_scale), **train}


def population_sample(population: ImageSet, n_population: int, seed: int) -> ImageSet:
    """The population samples Z: a seeded draw of ``n_population`` of ``population``."""
    n_pop = min(n_population, len(population))
    pick = torch.randperm(len(population), generator=torch.Generator().manual_seed(seed))
    return population.subset(pick[:n_pop])


def train_shared_base(population: ImageSet, *, recipe: EncoderRecipe, config: TrainConfig,
                      out_dir: str | Path, seed: int = 0) -> Path:
    """Train (or reuse) one encoder of the references' recipe on every image of
    ``population``, the weights cheap references start from (``--reference-base-epochs``):
    R references fine-tuned from it for a few epochs each cost less than R trained from
    scratch as long. Audited images are in none of them, so offline calibration of the
    candidates stays valid; the base has seen every population sample, which only weakens
    what the population tells (a statistic's direction, RMIA's ``a``).

    Cached in ``out_dir/shared-base-KEY`` (KEY: the pool's content, the recipe, the training
    settings, the seed), ``base.json`` written last.

    Returns:
        The base's ``encoder.safetensors``.
    """
    from dataclasses import replace

    hashes = population.content_hashes()
    bare = replace(recipe, init=None)
    key = _key(hashes, bare, config, -1, seed, False, "shared-base", source_digests(bare))
    folder = Path(out_dir).absolute() / f"shared-base-{key}"
    weights = folder / "encoder.safetensors"
    if (folder / "base.json").exists():
        log(f"references: shared base cached in {folder}")
        return weights
    log(f"references: training the shared base ({recipe.arch}, {config.epochs} epochs, "
        f"{len(population)} images: all the reference data)")
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.time()
    torch.manual_seed(config.seed)
    backbone, history = train_ssl_encoder(population.pixels, recipe, config,
                                          description="shared base reference training")
    save_encoder(backbone.cpu(), recipe, tmp, {"train": config.to_dict(),
                                               "loss_history": history})
    write_json(tmp / "base.json", {"train_seconds": round(time.time() - t0, 2),
                                   "images": len(population)})
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return weights


def train_references(
    population: ImageSet,
    *,
    count: int = DEFAULT_REFERENCES,
    recipe: Any = None,
    config: TrainConfig | None = None,
    out_dir: str | Path,
    seed: int = 0,
    candidates: ImageSet | None = None,
    n_population: int = DEFAULT_POPULATION,
    workers: int = 1,
    device: str = "cpu",
    train_fn: Callable[..., str] | None = None,
    family: str = "encoder",
) -> ReferenceModels:
    """Train (or reuse) ``count`` reference models and return them with the population.

    Args:
        population: the attacker's own images (disjoint from the audited sets); captioned
            for ``family="image-text"``.
        count: references R.
        recipe: their recipe: an :class:`~leakprobe.training.encoder.EncoderRecipe` (default
            SimCLR on resnet-tiny; its ``arch`` may be a ``file.py:factory`` and its ``init``
            the weights every reference starts from, both checked before any training and
            hashed into the cache key), or for image-text an
            :class:`~leakprobe.training.image_text.ImageTextRecipe` (default: the CLIP
            recipe of ``leakprobe train image-text``).
        config: their training settings (default 50 epochs).
        out_dir: the cache folder (one sub-folder per reference).
        seed: seeds the halves, the population sample and training.
        candidates: the audited images, for online references (None: offline).
        n_population: population samples (RMIA's z), drawn from ``population``.
        workers: > 1 trains that many references at once as Ray tasks (Ray required).
        device: where references train and run.
        train_fn: replaces the training of one reference (tests).
        family: ``encoder`` (SSL encoders) or ``image-text`` (CLIP-style dual encoders).
    Returns:
        The :class:`ReferenceModels`.
    """
    from leakprobe.targets.families import load_target

    if count < 1:
        raise LeakprobeError(f"--references must be >= 1, got {count}")
    if len(population) < 4:
        raise LeakprobeError(f"reference data: {len(population)} images; references need "
                             "at least 4")
    if family not in ("encoder", "image-text"):
        raise ValueError(f"references of family {family!r}: encoder or image-text")
    if recipe is None:
        from leakprobe.training.image_text import ImageTextRecipe

        recipe = EncoderRecipe() if family == "encoder" else ImageTextRecipe()
    config = config or TrainConfig(epochs=50, seed=seed, device=device)
    pool = population if candidates is None else concat([population, candidates])
    sources = source_digests(recipe) if family == "encoder" else {}
    run_recipe = absolute_recipe(recipe) if family == "encoder" else recipe
    pool_hashes = pool.content_hashes()
    out = Path(out_dir)
    jobs: list[tuple[int, Path, np.ndarray]] = []
    folders: list[Path] = []
    for r in range(count):
        key = _key(pool_hashes, recipe, config, r, seed, candidates is not None, family,
                   sources)
        folder = out / f"reference-{r:02d}-{key}"
        folders.append(folder)
        if not (folder / DONE).exists():
            jobs.append((r, folder, reference_half(len(pool), r, seed,
                                                     paired=candidates is not None)))
    if jobs and family == "encoder":
        check_reference_recipe(recipe, pool.image_size)  # errors name what the user gave
    if jobs:
        log(f"references: training {len(jobs)} of {count} "
            f"({getattr(recipe, 'method', 'clip')}, {recipe.arch}, "
            f"{config.epochs} epochs, {len(pool) // 2} images each)"
            + (f"; {count - len(jobs)} cached" if count > len(jobs) else ""))
    else:
        log(f"references: all {count} cached in {out}")
    train = train_fn or (_train_one if family == "encoder" else _train_one_image_text)
    infos = [{"reference": job[0], "seed": seed, "online": candidates is not None,
              "pool_size": len(pool)} for job in jobs]
    if workers > 1 and len(jobs) > 1 and train_fn is None:
        _train_on_ray(pool, jobs, run_recipe, config, infos, workers, train)
    else:
        for (_, folder, positions), info in track(list(zip(jobs, infos, strict=True)),
                                                  "references: training",
                                                  unit="references"):
            train(pool, positions, run_recipe, config, str(folder), info)
    # a factory's references are rebuilt by the factory the user named (never by one that a
    # cached file names)
    factory = run_recipe.arch if family == "encoder" and is_factory_arch(run_recipe.arch) \
        else None
    encoders = [load_target(str(f / "encoder.safetensors") if family == "encoder" else str(f),
                            family=family, device=device, arch=factory)
                for f in folders]
    trained_on: list[frozenset[str] | None] = [
        frozenset(json.loads((f / "trained_on.json").read_text())) for f in folders]
    z = population_sample(population, n_population, seed)
    n_pop = len(z)
    return ReferenceModels(
        encoders, trained_on, z, online=candidates is not None,
        description={"count": count, "source": "trained", "online": candidates is not None,
                     "recipe": _describe_recipe(recipe, config, family),
                     "data": population.source, "pool_size": len(pool),
                     "population_samples": n_pop, "trained_now": len(jobs),
                     "train_seconds": round(sum(
                         float(json.loads((f / DONE).read_text()).get("train_seconds", 0.0))
                         for f in folders), 1),
                     "folder": str(out)})


def _train_on_ray(pool: ImageSet, jobs: list, recipe: Any, config: TrainConfig,
                  infos: list[dict], workers: int, train: Callable[..., str] = _train_one
                  ) -> None:
    """Train ``jobs`` as Ray tasks of one CPU each on a local cluster of ``workers``."""
    import os

    try:
        import ray
    except ImportError as e:
        raise LeakprobeError("--reference-workers > 1 needs Ray: pip install "
                             "'leakprobe[distributed]' (or train them one by one)") from e
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started = not ray.is_initialized()
    if started:
        env = {k: v for k, v in os.environ.items() if k.startswith("LEAKPROBE_")}
        import logging

        ray.init(num_cpus=workers, include_dashboard=False, logging_level=logging.ERROR,
                 runtime_env={"env_vars": env}, object_store_memory=256 * 2**20)
    remote = ray.remote(num_cpus=1, max_retries=0)(train)
    try:
        pending = [remote.remote(pool, positions, recipe, config, str(folder), info)
                   for (_, folder, positions), info in zip(jobs, infos, strict=True)]
        with task("references: training on Ray", len(pending), "references") as bar:
            while pending:  # one step per reference trained
                done, pending = ray.wait(pending, num_returns=1)
                ray.get(done)
                bar.advance(len(done))
    finally:
        if started:
            ray.shutdown()


def load_references(specs: list[str], population: ImageSet, *, device: str = "cpu",
                    n_population: int = DEFAULT_POPULATION, seed: int = 0,
                    image_size: int | None = None, family: str = "encoder"
                    ) -> ReferenceModels:
    """Models the user brings (``--reference-model``; encoders, or image-text models for
    ``family="image-text"``), declared not to have trained on the audited images; their
    training data is unknown (OUT for every image)."""
    from leakprobe.targets.families import load_target

    encoders: list[Any] = [load_target(s, family=family, device=device,
                                       image_size=image_size) for s in specs]
    z = population_sample(population, n_population, seed)
    n_pop = len(z)
    return ReferenceModels(
        encoders, [None] * len(encoders), z,
        description={"count": len(encoders), "source": "given", "online": False,
                     "models": list(specs), "data": population.source,
                     "population_samples": n_pop})


def merge_references(a: ReferenceModels | None, b: ReferenceModels | None
                     ) -> ReferenceModels | None:
    """Trained and given references together (the trained ones' population is kept)."""
    if a is None or b is None:
        return a or b
    desc = {**a.description, "count": len(a) + len(b), "source": "trained+given",
            "models": b.description.get("models", [])}
    return ReferenceModels(a.encoders + b.encoders, a.trained_on + b.trained_on, a.population,
                           online=a.online, description=desc)


def recipe_match(model: str | Path, description: dict) -> bool | None:
    """Whether trained references share the target's recorded recipe (SSL method, backbone,
    crop scale) from the ``model.json`` next to ``model``; None when either is unknown."""
    recipe = description.get("recipe")
    path = Path(model)
    meta = (path if path.is_dir() else path.parent) / "model.json"
    if recipe is None or not path.exists() or not meta.is_file():
        return None
    try:
        recorded = json.loads(meta.read_text()).get("recipe") or {}
    except (json.JSONDecodeError, OSError, AttributeError):
        return None
    if not isinstance(recorded, dict) or "method" not in recorded:
        return None
    return (recorded.get("method") == recipe["method"] and recorded.get("arch") == recipe["arch"]
            and list(recorded.get("crop_scale", [])) == list(recipe["crop_scale"]))
