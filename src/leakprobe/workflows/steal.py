"""One-call encoder stealing for the Python API and ``leakprobe steal encoder``.

For every kind of answer the methods buy (the clean image, or N views of a recipe) the
attacker pays for one query stream (views of its images embedded by the target, cached on
disk) up to the largest budget; each budget trains a fresh surrogate on the prefix it can
afford, so a sweep costs the largest budget once per stream. With target defences, each
defence is its own row: the attacker receives the defended answers (its own streams), the
probes judge against the undefended target, and the report says what the defence costs a
legitimate user.
The target's embeddings of the probe sets (evaluation queries) are cached on disk as well.

The linear probe judges theft only where it can tell a useful encoder from an untrained one:
when the target's probe accuracy does not beat a random-init surrogate's by a margin (see
:func:`probe_verdict`), the report says ``probe_informative: false`` and warns.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from leakprobe.attacks.registry import expand_attacks, route_options
from leakprobe.attacks.stealing import QueryCache, StealingMethod, create_stealing_method
from leakprobe.attacks.stealing.queries import cached_embeddings
from leakprobe.data.images import ImageSet
from leakprobe.data.splits import shared_images
from leakprobe.data.stream import Images, image_batches
from leakprobe.defences.answers import AnswerDefence, parse_answer_defences
from leakprobe.defences.b4b import B4BClient
from leakprobe.errors import LeakprobeError
from leakprobe.evaluation.theft import procrustes_cosine, theft_metrics
from leakprobe.evaluation.utility import knn_accuracy, linear_probe
from leakprobe.io import write_json
from leakprobe.models import create_model
from leakprobe.models.serialization import export_torchscript, save_weights
from leakprobe.preflight import check_out_dir, check_query_budget
from leakprobe.progress import log
from leakprobe.report.html import write_report
from leakprobe.report.stealing import build_stealing_report, stealing_result
from leakprobe.targets.defended import DEFAULT_REQUEST_SIZE, DefendedEncoder, check_defendable
from leakprobe.training.trainer import TrainConfig, Trainer

if TYPE_CHECKING:
    from leakprobe.targets.protocols import Encoder


def train_surrogate(
    method, cache: QueryCache, n_images: int, arch: str, arch_kwargs: dict, out_dim: int,
    config: TrainConfig, checkpoint_dir: Path | None = None,
) -> torch.nn.Module:
    """Train a fresh surrogate on the first ``n_images`` cached images."""
    torch.manual_seed(config.seed)
    surrogate = create_model("surrogate", backbone=arch, out_dim=out_dim,
                             backbone_kwargs=arch_kwargs, input_size=cache.size)
    trainer = Trainer(surrogate, config, checkpoint_dir, description="surrogate training")
    index = torch.arange(n_images)
    trainer.fit(index, lambda idx, g: method.loss(surrogate, cache, idx.cpu(), g), resume=True)
    return surrogate.cpu().eval()


def _embed_local(model: torch.nn.Module, images: Images, batch: int = 512) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([model(x).float() for x in image_batches(images, batch)])


def parse_budgets(text: str | int | list[int]) -> list[int]:
    """``"500,1000"`` -> [500, 1000] (sorted, each >= 1)."""
    if isinstance(text, int):
        values = [text]
    elif isinstance(text, str):
        try:
            values = [int(v) for v in text.split(",") if v.strip()]
        except ValueError as e:
            raise LeakprobeError(f"--budget must be integers like 500,1000, got {text!r}") from e
    else:
        values = list(text)
    if not values or min(values) < 1:
        raise LeakprobeError(f"--budget must be positive integers, got {text!r}")
    return sorted(set(values))


def check_steal_plan(
    target: Encoder,
    n_available: int,
    budgets: list[int],
    caches: Mapping[Any, QueryCache] | Iterable[QueryCache],
    probe_train: ImageSet | None = None,
    probe_test: ImageSet | None = None,
    probe_cache: Path | None = None,
) -> int:
    """Refuse a stealing run that cannot finish, before its first query.

    Every budget must buy 2 images at each view count, the largest must fit the attacker's
    images, and the queries still to make (largest budget per query stream, minus what the
    caches already hold, plus the probe images ``probe_cache`` lacks) must fit the target's
    remaining budget.

    Args:
        caches: the query streams the run will fill (one per view recipe, view count and
            target defence), e.g. :func:`plan_query_streams`'s.
    Returns:
        The queries the run will make.
    """
    streams = list(caches.values()) if isinstance(caches, Mapping) else list(caches)
    for cache in streams:
        v = cache.views_per_image
        for budget in budgets:
            if budget // v < 2:
                raise LeakprobeError(
                    f"budget {budget} buys fewer than 2 images at {v} views per image "
                    f"({cache.recipe} views): raise --budget or lower --views-per-image")
        if max(budgets) // v > n_available:
            raise LeakprobeError(
                f"the budget needs {max(budgets) // v} query images at {v} views each, only "
                f"{n_available} given: add query images or raise --views-per-image")
    paid = [max(max(budgets) // c.views_per_image - c.n_done, 0) * c.views_per_image
            for c in streams]
    probe = _probe_queries(target, {"probe_train": probe_train, "probe_test": probe_test},
                           probe_cache)
    needed = sum(paid) + probe
    how = ", ".join(f"{q} for " + ("the clean image" if c.recipe == "clean" else
                                   f"{c.recipe} views, {c.views_per_image} per image")
                    for q, c in zip(paid, streams, strict=True))
    check_query_budget(target, needed,
                       f"stealing needs {needed} queries ({how}, {probe} probe images)",
                       "lower --budget, use fewer methods or defences, or smaller probe sets")
    return needed


def check_probe_sets(query_data: ImageSet, probe_train: ImageSet | None,
                     probe_test: ImageSet | None) -> None:
    """Refuse probe sets that share images with the attacker's queries or with each other.

    The surrogate was trained on the query images: a probe image among them would judge it
    on its own training data, and a probe-test image in probe-train would judge the probes
    on theirs.
    """
    pairs = [("the query data", query_data, "--probe-train", probe_train),
             ("the query data", query_data, "--probe-test", probe_test),
             ("--probe-train", probe_train, "--probe-test", probe_test)]
    for name_a, a, name_b, b in pairs:
        if a is None or b is None:
            continue
        shared = shared_images(a, b)
        if shared:
            raise LeakprobeError(f"{name_b} shares {len(shared)} images with {name_a} (e.g. "
                                 f"{shared[0][1]!r} = {shared[0][0]!r}); use disjoint sets")


def _probe_queries(target: Encoder, sets: dict[str, ImageSet | None], cache: Path | None) -> int:
    """Probe images to embed: those the embedding cache does not hold for this target."""
    from safetensors import safe_open

    from leakprobe.attacks.stealing.queries import fingerprint

    meta: dict[str, str] = {}
    rows: dict[str, int] = {}
    if cache is not None and cache.exists():
        try:
            with safe_open(str(cache), framework="pt") as f:
                meta = dict(f.metadata() or {})
                rows = {k: f.get_slice(k).get_shape()[0] for k in f.keys()}  # noqa: SIM118
        except Exception:  # an unreadable cache is ignored by the run too
            meta, rows = {}, {}
    return sum(len(s) for name, s in sets.items() if s is not None and not (
        rows.get(name) == len(s) and meta.get(name) == fingerprint(s.pixels, target)))


def resolve_methods(methods: str | list[str], views: int | None = None
                    ) -> list[tuple[str, StealingMethod]]:
    """``"all"`` or ``"contsteal,rda"`` -> (name, method) pairs, checked, in order.

    ``views`` sets the views per image of every method that takes a view count (the clean
    image methods, ``stolenencoder``, keep their one query per image).

    Raises:
        LeakprobeError: an unknown method (with the known ones) or no method at all.
    """
    names = expand_attacks(methods, family="stealing")
    if not names:
        raise LeakprobeError(f"--method: no stealing method given ({methods!r})")
    if views is not None and views < 1:
        raise LeakprobeError(f"--views-per-image must be >= 1, got {views}")
    options = {"views_per_image": views}
    return [(n, create_stealing_method(n, **route_options(n, options, family="stealing")))
            for n in names]


def resolve_defences(spec: str | list[AnswerDefence] | None, target: Encoder | None = None
                     ) -> list[AnswerDefence]:
    """``"noise:0.05,round:2"`` -> the answer defences to steal through, each its own row.

    Without a spec, one undefended row. A defence on a target served over HTTP is refused:
    its server applies its own defences.
    """
    if spec is None or spec == "":
        return [AnswerDefence()]
    defences = parse_answer_defences(spec) if isinstance(spec, str) else list(spec)
    if target is not None and any(not d.is_identity for d in defences):
        check_defendable(target)
    return defences


def plan_query_streams(
    methods: list[tuple[str, StealingMethod]], defences: list[AnswerDefence], target: Encoder,
    query_images: Images, seed: int, out: Path | None,
) -> list[tuple[AnswerDefence, Encoder, Path | None, dict[tuple[str, int], QueryCache]]]:
    """One query stream per (defence, view recipe, view count), read from disk where paid.

    Methods that buy the same views (e.g. ``mse`` and ``stolenencoder``: the clean image)
    share one stream, so they train on the same paid answers. Undefended streams live in
    ``out`` (``queries_v{V}.safetensors`` for the clean image and SimCLR views, as before;
    ``queries_{recipe}_v{V}.safetensors`` otherwise); a defence's in
    ``out/defence-{spec}/``. Nothing is queried here.

    A defended arm's target is one client across all its streams (B4B's coverage grows over
    all of them, in query order). Resuming, it continues from the latest state the caches
    saved (:func:`restore_answer_state`), so resumed answers are those of an uninterrupted
    run.
    """
    arms = []
    for defence in defences:
        attacked = target if defence.is_identity else \
            DefendedEncoder(target, defence=defence, seed=seed)
        folder = out if out is None or defence.is_identity else \
            out / f"defence-{_slug(defence.spec)}"
        caches: dict[tuple[str, int], QueryCache] = {}
        for _, method in methods:
            v, recipe = method.views_per_image, method.query_recipe
            if (recipe, v) in caches:
                continue
            stem = f"queries_v{v}" if recipe in ("clean", "simclr") else f"queries_{recipe}_v{v}"
            path = folder / f"{stem}.safetensors" if folder else None
            caches[(recipe, v)] = QueryCache(
                query_images, v, target.input_size, seed, path,
                augmentation=method.query_views(target.input_size), recipe=recipe)
        if isinstance(attacked, DefendedEncoder):
            restore_answer_state(attacked, list(caches.values()))
        arms.append((defence, attacked, folder, caches))
    return arms


def restore_answer_state(attacked: DefendedEncoder, caches: list[QueryCache]) -> None:
    """Continue ``attacked`` from the latest answer state its caches saved.

    Every chunk a cache saves carries the defended target's state right after it; the state
    with the most images answered is the latest, and it includes every answer any of the
    caches holds. Caches of an older leakprobe carry no state: for a stateless defence
    (noise, top-k, rounding) the run goes on with a fresh generator, as it always did.

    Raises:
        LeakprobeError: a B4B stream paid without a saved state (its coverage is unknown),
            or a state that does not match the target's defence and seed.
    """
    saved = [c.target_state for c in caches if c.target_state is not None]
    if attacked.defence.stateful:
        for cache in caches:
            if cache.n_done and cache.target_state is None:
                raise LeakprobeError(
                    f"{cache.path}: {cache.queries} answers paid under "
                    f"{attacked.defence.spec} without the client's coverage state, so "
                    "the stream cannot resume with the right noise; remove the folder "
                    f"{cache.path.parent if cache.path else ''} to query again")
    if saved:
        attacked.load_answer_state(max(saved, key=lambda st: int(st.get("answered", 0))))


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in ".-" else "_" for c in text)


def steal_encoder(
    target: Encoder,
    query_data: ImageSet,
    *,
    budgets: str | int | list[int] = "5000",
    methods: str | list[str] = "contsteal",
    views: int | None = None,
    target_defences: str | list[AnswerDefence] | None = None,
    surrogate_arch: str = "resnet-tiny",
    surrogate_kwargs: dict | None = None,
    epochs: int = 50,
    batch_size: int = 128,
    lr: float = 1e-3,
    amp: str | bool = "auto",
    device: str = "auto",
    probe_train: ImageSet | None = None,
    probe_test: ImageSet | None = None,
    seed: int = 0,
    out_dir: str | Path | None = None,
) -> dict:
    """Steal ``target`` with each method at each budget (and defence); judge; report.

    Every method trains on the same query images: the same prefix of one seeded query order,
    as long as its budget buys (``budget // views_per_image`` images).

    Args:
        target: the queried encoder (local or HTTP).
        query_data: the attacker's images (unlabelled is fine).
        budgets: queries allowed (a query is one image embedded; views count).
        methods: stealing methods (comma list, or ``all``: ``leakprobe attacks`` lists them).
        views: override the views per image of every method that takes a view count.
        target_defences: answer defences (:mod:`leakprobe.defences.answers`, e.g.
            ``"noise:0.05,round:2"`` or ``"b4b"``) applied to every answer the attacker
            receives, each its own row; the probes that judge the surrogates see the
            undefended target. Under B4B the attacker is one client across the row's query
            streams, its coverage saved with the caches so a resumed run continues it.
            Local targets only (a server applies its own).
        surrogate_arch: registered backbone of the surrogate.
        surrogate_kwargs: overrides of the surrogate backbone's arguments.
        epochs: training epochs of each surrogate.
        batch_size: images per training step of the surrogates.
        lr: learning rate of the surrogates' optimiser.
        amp: bf16 autocast of the surrogates' training (``auto``/``on``/``off``).
        device: where the surrogates train.
        probe_train: labelled images the linear probes are fitted on.
        probe_test: labelled images the probes are judged on.
        seed: fixes the query order, the views, the defences' noise, the surrogates and the
            probes.
        out_dir: where surrogates, the query caches and the report go (resumable).
    Returns:
        The stealing report (``kind: encoder-stealing``). With probe sets it has
        ``probe_informative`` (and ``probe_informative_margin``): false, with a warning in
        ``warnings``, when the target's probe does not beat the random-init surrogate's;
        and ``defences``: per defence, what it costs a legitimate user (the target's own
        probe and k-NN accuracy through it).
    """
    t0 = time.time()
    budgets = parse_budgets(budgets)
    out = Path(out_dir) if out_dir else None
    # pre-flight: names, defences, output folder, query caches on disk and the target's
    # budget are checked before the first query
    chosen = resolve_methods(methods, views)
    defences = resolve_defences(target_defences, target)
    check_out_dir(out, "out_dir")
    perm = torch.randperm(len(query_data), generator=torch.Generator().manual_seed(seed))
    query_images = query_data.subset(perm).pixels  # a streamed set stays on disk
    arms = plan_query_streams(chosen, defences, target, query_images, seed, out)
    probe_cache = out / "probe_embeddings.safetensors" if out else None
    check_probe_sets(query_data, probe_train, probe_test)
    check_steal_plan(target, len(query_data), budgets,
                     [c for *_, caches in arms for c in caches.values()],
                     probe_train, probe_test, probe_cache)
    probes = _probe_embeddings(target, probe_train, probe_test, probe_cache)
    results = []
    for defence, attacked, folder, caches in arms:
        for name, method in chosen:
            v = method.views_per_image
            cache = caches[(method.query_recipe, v)]
            t_query = time.time()
            cache.fill(attacked, max(budgets) // v)
            query_seconds = time.time() - t_query
            out_dim = cache.embeddings.shape[-1]
            for budget in budgets:
                n_images = budget // v
                t1 = time.time()
                row = f"{name}" + ("" if defence.is_identity else f" [{defence.spec}]")
                log(f"steal: {row}, budget {budget} ({n_images} images x {v} views)")
                run_dir = folder / f"{name}_b{budget}" if folder else None
                config = TrainConfig(epochs=epochs, batch_size=min(batch_size, n_images),
                                     lr=lr, seed=seed, device=device, amp=amp)
                surrogate = train_surrogate(method, cache, n_images, surrogate_arch,
                                            surrogate_kwargs or {}, out_dim, config,
                                            run_dir / "checkpoints" if run_dir else None)
                metrics: dict = {}  # no probe sets: nothing judges the surrogate
                if probes is not None:  # judged against the real (undefended) target
                    metrics = theft_metrics(
                        probes["target_train"], probes["target_test"],
                        _embed_local(surrogate, probes["train"].pixels),
                        _embed_local(surrogate, probes["test"].pixels),
                        probes["train"].labels, probes["test"].labels, seed)
                entry = stealing_result(method=name, budget=budget, views_per_image=v,
                                        images_queried=n_images, params=method.get_params(),
                                        epochs=epochs, metrics=metrics, defence=defence.spec,
                                        query_recipe=method.query_recipe)
                if run_dir is not None:  # model.json records the entry as it stands here
                    entry["model"] = str(_save_surrogate(surrogate, run_dir, surrogate_arch,
                                                         surrogate_kwargs or {}, out_dim,
                                                         entry))
                entry["seconds"] = round(time.time() - t1, 2)
                # the query stream is paid once per method group; a budget's share of it
                entry["query_seconds"] = round(query_seconds * budget / max(budgets), 2)
                results.append(entry)
    warnings: list[str] = []
    random_acc: float | None = None
    random_procrustes: float | None = None
    informative: bool | None = None
    margin: float | None = None
    defence_costs: list[dict] | None = None
    if probes is not None:  # the floor an untrained surrogate sets, and the probe's verdict
        random_acc, random_procrustes = _random_init_metrics(
            surrogate_arch, surrogate_kwargs or {}, target, probes, seed)
        informative, margin = probe_verdict(probes["target_accuracy"], random_acc,
                                            len(probes["test"]))
        if not informative:
            warnings.append(_uninformative_warning(probes["target_accuracy"], random_acc,
                                                   margin, len(probes["test"])))
        if target_defences:
            defence_costs = [legitimate_cost(d, probes, seed) for d in defences]
    context = {"target": getattr(target, "name", type(target).__name__),
               "query_data": query_data.source, "query_images_available": len(query_data),
               "surrogate_arch": surrogate_arch, "budgets": budgets,
               "methods": [n for n, _ in chosen],
               "target_defences": [d.spec for d in defences],
               "attack_queries_total": sum(c.queries for *_, cs in arms for c in cs.values()),
               "evaluation_queries": probes["queries"] if probes else 0,
               "probe_train": probe_train.source if probe_train else None,
               "probe_test": probe_test.source if probe_test else None,
               "wall_seconds": round(time.time() - t0, 2),
               "platform": platform.platform(), "threads": torch.get_num_threads()}
    report = build_stealing_report(
        seed=seed, results=results, context=context, warnings=warnings,
        target_probe_accuracy=probes["target_accuracy"] if probes else None,
        target_knn_accuracy=probes["target_knn_accuracy"] if probes else None,
        random_init_probe_accuracy=random_acc, random_init_procrustes_cosine=random_procrustes,
        probe_informative=informative, probe_informative_margin=margin,
        defences=defence_costs)
    if out is not None:
        write_report(report, out)
    return report


def legitimate_cost(defence: AnswerDefence, probes: dict, seed: int) -> dict:
    """What ``defence`` costs a legitimate user of the target: its own probe and k-NN
    accuracy when the probe images' answers go through the defence (the same answers a
    client of the defended service would get; no new queries: the defence is applied to the
    target's cached answers with its own seeded generator). Under B4B the user is one fresh
    client that asks for the probe-train images, then the probe-test images, in requests of
    ``leakprobe serve``'s default size."""
    g = torch.Generator().manual_seed(seed + 1)
    if defence.stateful:
        # the service's hash functions (the thief's seed), the user's own transformation
        answers = _LegitimateClient(defence, seed, seed + 1, g)
        train, test = answers(probes["target_train"]), answers(probes["target_test"])
    else:
        train = defence.apply(probes["target_train"], generator=g)
        test = defence.apply(probes["target_test"], generator=g)
    labels_train, labels_test = probes["train"].labels, probes["test"].labels
    acc, _ = linear_probe(train, labels_train, test, labels_test, seed)
    return {"defence": defence.spec, "target_probe_accuracy": acc,
            "target_knn_accuracy": knn_accuracy(train, labels_train, test, labels_test),
            "probe_accuracy_drop": round(probes["target_accuracy"] - acc, 4)}


class _LegitimateClient:
    """A fresh B4B client answered from cached clean embeddings, request by request."""

    def __init__(self, defence: AnswerDefence, seed: int, transform_seed: int,
                 generator: torch.Generator) -> None:
        self.defence, self.seed, self.transform_seed = defence, seed, transform_seed
        self.generator = generator
        self.client: B4BClient | None = None

    def __call__(self, clean: torch.Tensor) -> torch.Tensor:
        assert self.defence.b4b is not None
        if self.client is None:
            self.client = self.defence.b4b.client(int(clean.shape[1]), seed=self.seed,
                                                  transform_seed=self.transform_seed)
        return torch.cat([self.defence.apply(part, generator=self.generator,
                                             client=self.client)
                          for part in clean.split(DEFAULT_REQUEST_SIZE)])


MIN_PROBE_MARGIN = 0.02
_Z_ONE_SIDED_95 = 1.645


def probe_verdict(target_accuracy: float, random_init_accuracy: float, n_test: int,
                  min_margin: float = MIN_PROBE_MARGIN) -> tuple[bool, float]:
    """Whether the linear probe can judge theft: the target must clearly beat an untrained copy.

    The margin is the larger of ``min_margin`` and a one-sided 95% binomial bound on the
    probe-test size: ``1.645 * sqrt(r (1 - r) / n)`` with ``r`` the random-init accuracy,
    the spread of a probe as good as the random-init one on ``n`` test images.

    Returns:
        ``(informative, margin)``: informative when ``target >= random_init + margin``.
    """
    r = min(max(float(random_init_accuracy), 0.0), 1.0)
    spread = _Z_ONE_SIDED_95 * math.sqrt(r * (1.0 - r) / max(1, int(n_test)))
    margin = round(max(float(min_margin), spread), 4)
    return bool(target_accuracy >= random_init_accuracy + margin), margin


def _uninformative_warning(target_acc: float, random_acc: float, margin: float,
                           n_test: int) -> str:
    return (f"the target's linear probe ({target_acc:.3f}) does not beat a random-init "
            f"surrogate's ({random_acc:.3f}) by the margin {margin:.3f} (on {n_test} probe-test "
            "images): the probe cannot judge theft, so probe accuracy, accuracy ratio and "
            "agreement would look the same for an untrained copy; use labelled probe images "
            "of a task the target is good at")


def _probe_embeddings(target: Encoder, train: ImageSet | None, test: ImageSet | None,
                      cache: Path | None = None) -> dict | None:
    """Target embeddings of the probe sets (evaluation queries, outside the attack budget).

    With ``cache`` (a file in the output folder) they are paid once: a rerun or a resumed
    steal reads them back instead of querying the target again.
    """
    if train is None and test is None:
        return None
    if train is None or test is None or train.labels is None or test.labels is None:
        raise LeakprobeError("--probe-train and --probe-test must both be labelled sets "
                             "(class-per-folder images or a labelled data spec)")
    emb, _ = cached_embeddings(target, {"probe_train": train.pixels, "probe_test": test.pixels},
                               cache)
    t_train, t_test = emb["probe_train"], emb["probe_test"]
    acc, _ = linear_probe(t_train, train.labels, t_test, test.labels)
    return {"train": train, "test": test, "target_train": t_train, "target_test": t_test,
            "target_accuracy": acc, "queries": len(train) + len(test),
            "target_knn_accuracy": knn_accuracy(t_train, train.labels, t_test, test.labels)}


def _random_init_metrics(arch: str, kwargs: dict, target: Encoder, probes: dict,
                         seed: int) -> tuple[float, float | None]:
    """Probe accuracy and held-out Procrustes cosine of an untrained surrogate: the floor a
    stolen encoder's numbers are read against."""
    torch.manual_seed(seed)
    width = getattr(target, "embed_dim", None)  # declared by local and HTTP encoders
    model = create_model("surrogate", backbone=arch, out_dim=int(width or 128),
                         backbone_kwargs=kwargs, input_size=target.input_size).eval()
    e_train = _embed_local(model, probes["train"].pixels)
    e_test = _embed_local(model, probes["test"].pixels)
    acc, _ = linear_probe(e_train, probes["train"].labels, e_test, probes["test"].labels, seed)
    procrustes = None
    if e_test.shape[1] == probes["target_test"].shape[1]:
        procrustes = procrustes_cosine(e_train, probes["target_train"], e_test,
                                       probes["target_test"])
    return acc, procrustes


def _save_surrogate(model, run_dir: Path, arch: str, kwargs: dict, out_dim: int,
                    entry: dict) -> Path:
    """Save a surrogate like any trained encoder (safetensors, TorchScript, model.json)."""
    arch_kwargs = {"backbone": arch, "out_dim": out_dim, "backbone_kwargs": kwargs,
                   "input_size": int(model.input_size)}
    weights = save_weights(model, run_dir / "encoder.safetensors", "surrogate", arch_kwargs)
    export_torchscript(model, run_dir / "encoder.torchscript.pt")
    write_json(run_dir / "model.json", {"kind": "encoder", "arch": "surrogate",
                                        "arch_kwargs": arch_kwargs, "stolen": entry})
    return weights
