"""DP-SGD for the SSL trainer: Poisson sampling, per-image clipping, Gaussian noise, accounting.

The engine follows Abadi et al. (2016) as Opacus runs it:

* Sampling: every step takes each of the N training images independently with probability
  ``q = B / N`` (:meth:`DPSGD.sample`, from the trainer's seeded generator), so batch sizes
  vary; an epoch is ``N // B`` steps. This is the Poisson subsampling the accountant assumes.
* Each image's gradient ``g_i`` is clipped to norm ``C`` (the global L2 norm over all
  trainable parameters), the clipped gradients are summed, Gaussian noise ``N(0, (sigma C)^2)``
  is added to every coordinate, and the result is divided by the *expected* batch size B (not
  the realised one, which would depend on the data) before the optimiser step. A step that
  samples no image still takes a noise-only step.
* The noise comes from a generator seeded from the operating system's entropy
  (``secrets.randbits``) when the engine is built; that seed is recorded nowhere (not in
  checkpoints, not in ``model.json``), so the recorded training seed does not let anyone
  regenerate the noise. A resumed run draws fresh noise (the sampling masks and augmentations
  still follow the seeded generator). Gaussian sampling in floating point is not hardened
  against side channels (Mironov 2012).
* Epsilon at a given delta comes from Opacus' accountants (``rdp`` by default, ``prv``) for
  ``sample_rate = q`` and the steps taken.

Per-image gradients use the split of every :class:`~leakprobe.training.ssl.base.SSLMethod`
into ``prepare`` -> ``student`` -> ``objective``:

* ``G = b * d objective / d outputs`` is computed once, on the batched, detached student
  outputs (b the realised batch size, so ``G_i`` is the gradient of image ``i``'s share of
  the summed batch loss);
* ``g_i = J_i^T G_i``, with ``J_i`` the Jacobian of the student on image ``i``'s inputs, comes
  from ``torch.func``: ``vmap(grad(p -> <student(p, x_i), G_i>))`` over ``functional_call``.

The clipping unit is one training image with all of its views. The accountant's epsilon is a
guarantee only when adding or removing one image changes the summed clipped gradient by at
most C and nothing else carries the image into later steps: the method's
``dp_per_image_exact`` (BYOL, MAE, DINO with its centre frozen under DP). For SimCLR (in-batch
negatives) and MoCo (a queue of un-noised keys) one image enters many clipped terms: the
record then says ``epsilon: null`` and keeps the accountant's number as ``epsilon_nominal``
with a one-line ``caveat`` (:meth:`DPSGD.summary`, :mod:`leakprobe.training.dp_record`).

The per-image pass runs in float32 (``amp`` is ignored under DP: bf16 per-image gradients are
too coarse to clip). BatchNorm mixes the images of a batch and has no per-image gradient:
every BatchNorm must be GroupNorm (:func:`replace_batchnorm`, :func:`check_dp_compatible`).
"""

from __future__ import annotations

import copy
import math
import secrets
import warnings
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from leakprobe.errors import LeakprobeError
from leakprobe.training.dp_record import GENERIC_CAVEAT, epsilon_text
from leakprobe.training.ssl.base import SSLBatch, SSLMethod

ACCOUNTANTS = ("rdp", "prv")


@dataclass
class DPConfig:
    """DP-SGD settings.

    Attributes:
        noise_multiplier: std of the Gaussian noise in units of ``max_grad_norm``
            (None: derived from ``target_epsilon``).
        max_grad_norm: per-image clipping bound C.
        delta: the delta at which epsilon is reported.
        target_epsilon: when set (and ``noise_multiplier`` is None), the noise multiplier is
            chosen so that the whole run spends this epsilon.
        accountant: ``rdp`` (Opacus' RDP accountant) or ``prv``.
        chunk_size: images whose per-image gradients are held in memory at once (memory
            only: results do not depend on it).
    """

    noise_multiplier: float | None = 1.0
    max_grad_norm: float = 1.0
    delta: float = 1e-5
    target_epsilon: float | None = None
    accountant: str = "rdp"
    chunk_size: int = 64

    def __post_init__(self) -> None:
        if not self.max_grad_norm > 0:
            raise LeakprobeError(f"DP max_grad_norm must be > 0, got {self.max_grad_norm}")
        if not 0 < self.delta < 1:
            raise LeakprobeError(f"DP delta must be in (0, 1), got {self.delta}")
        if self.noise_multiplier is None and self.target_epsilon is None:
            raise LeakprobeError("DP needs a noise multiplier or a target epsilon")
        if self.noise_multiplier is not None and self.noise_multiplier < 0:
            raise LeakprobeError(f"DP noise multiplier must be >= 0, got {self.noise_multiplier}")
        if self.target_epsilon is not None and not self.target_epsilon > 0:
            raise LeakprobeError(f"DP target epsilon must be > 0, got {self.target_epsilon}")
        if self.accountant not in ACCOUNTANTS:
            raise LeakprobeError(f"DP accountant must be one of {', '.join(ACCOUNTANTS)}, got "
                                 f"{self.accountant!r}")
        if self.chunk_size < 1:
            raise LeakprobeError(f"DP chunk_size must be >= 1, got {self.chunk_size}")


_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def batchnorm_modules(module: nn.Module) -> list[str]:
    """Names of the BatchNorm layers inside ``module`` (``""`` for the module itself)."""
    return [name for name, m in module.named_modules() if isinstance(m, _BATCHNORMS)]


def check_dp_compatible(module: nn.Module) -> None:
    """Raise when ``module`` holds a layer that mixes the images of a batch.

    Raises:
        LeakprobeError: naming every BatchNorm layer, with the fix.
    """
    names = batchnorm_modules(module)
    if names:
        shown = ", ".join(repr(n) for n in names[:5]) + (" ..." if len(names) > 5 else "")
        raise LeakprobeError(
            f"DP-SGD: {len(names)} BatchNorm layer(s) ({shown}) mix the images of a batch and "
            "are not compatible with per-image clipping; use GroupNorm (norm='group' for the "
            "ResNets, or leakprobe.training.dp.replace_batchnorm)"
        )


def _groups(module: nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d | nn.SyncBatchNorm) -> int:
    """GroupNorm groups replacing a BatchNorm.

    ``gcd(32, C)`` (Opacus' ``ModuleValidator.fix`` rule) for BatchNorm2d/3d, whose inputs
    have spatial positions. A BatchNorm1d usually sees (N, C) features (MLP heads), where a
    group of one channel has nothing to normalise over and GroupNorm outputs its bias alone
    (the same constant for every image: with ``hidden_dim`` 32 the head was dead), so it
    becomes one group: a LayerNorm over the features.
    """
    if isinstance(module, nn.BatchNorm1d):
        return 1
    return math.gcd(32, module.num_features)


def replace_batchnorm(module: nn.Module) -> nn.Module:
    """Swap every BatchNorm for a GroupNorm (same affine flag), in place (groups:
    :func:`_groups`).

    Returns:
        ``module`` (or a new GroupNorm when ``module`` itself is a BatchNorm).
    """
    if isinstance(module, _BATCHNORMS):
        return nn.GroupNorm(_groups(module), module.num_features,
                            eps=module.eps, affine=module.affine)
    for name, child in module.named_children():
        new = replace_batchnorm(child)
        if new is not child:
            setattr(module, name, new)
    return module


def _require_ssl_method(model: nn.Module) -> SSLMethod:
    """``model``, checked to have ``prepare``/``student``/``objective``.

    Any module with these three methods is accepted (duck typing, not an isinstance check on
    :class:`SSLMethod`); it is returned typed as the SSLMethod interface it provides.
    """
    for attr in ("prepare", "student", "objective"):
        if not callable(getattr(model, attr, None)):
            raise LeakprobeError(
                f"DP-SGD needs an SSL method with prepare/student/objective (per-image "
                f"gradients); {type(model).__name__} has no '{attr}'"
            )
    return cast(SSLMethod, model)


def _accountant_epsilon(name: str, sigma: float, q: float, steps: int, delta: float) -> float:
    from opacus.accountants import create_accountant

    if steps <= 0:
        return 0.0
    if sigma <= 0:
        return math.inf
    acc = create_accountant(name)
    acc.history = [(sigma, q, steps)]
    with warnings.catch_warnings():  # "optimal order is the largest alpha": large epsilons
        warnings.simplefilter("ignore", UserWarning)
        return float(acc.get_epsilon(delta))


def noise_for_epsilon(
    target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str = "rdp"
) -> float:
    """The noise multiplier that spends ``target_epsilon`` in ``steps`` steps (Opacus search)."""
    from opacus.accountants.utils import get_noise_multiplier

    try:
        with warnings.catch_warnings():  # "optimal order is the largest alpha"
            warnings.simplefilter("ignore", UserWarning)
            sigma = get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta,
                                         sample_rate=sample_rate, steps=steps,
                                         accountant=accountant, epsilon_tolerance=0.01)
        return float(sigma)
    except ValueError as e:
        raise LeakprobeError(f"DP: no noise multiplier reaches epsilon {target_epsilon}: "
                             f"{e}") from e


def private_generator() -> torch.Generator:
    """A CPU generator for DP noise, seeded from the operating system's entropy pool.

    The seed is not returned or stored anywhere, so nothing a run records (its training seed,
    checkpoints, ``model.json``) regenerates the noise.
    """
    return torch.Generator().manual_seed(secrets.randbits(63))


def poisson_sample(n: int, rate: float, generator: torch.Generator) -> torch.Tensor:
    """Indices (sorted) of a Poisson-sampled batch: each of ``n`` items with prob. ``rate``."""
    return torch.nonzero(torch.rand(n, generator=generator) < rate).squeeze(1)


def _used_parameters(module: SSLMethod, inputs: tuple[torch.Tensor, ...]) -> list[str]:
    """Trainable parameters the student of ``module`` actually uses on ``inputs``."""
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    outs = module.student(*(x[:1] for x in inputs))
    total = sum(o.float().sum() for o in outs)
    if not isinstance(total, torch.Tensor):  # sum() of no tensors is the int 0
        raise LeakprobeError("DP-SGD: the student returns no output")
    grads = torch.autograd.grad(total, [p for _, p in named], allow_unused=True)
    names = [n for (n, _), g in zip(named, grads, strict=True) if g is not None]
    if not names:
        raise LeakprobeError("DP-SGD: the student uses no trainable parameter")
    return names


class DPSGD:
    """Poisson sampling, per-image clipping, noise and accounting for one SSL training run.

    Args:
        method: an SSL method (``prepare``/``student``/``objective``) without BatchNorm; its
            ``enable_dp()`` is called here (DINO freezes its centre).
        config: the DP settings.
        n_train: training images N.
        batch_size: expected images per step B (``q = B / N``; capped at N).
        epochs: planned epochs (to turn ``target_epsilon`` into a noise multiplier).
    Attributes:
        noise_multiplier: sigma actually used.
        sample_rate: q = B / N, the Poisson sampling rate (and the accountant's).
        steps: optimiser steps taken (set it when resuming).
        exact_per_image: the method's ``dp_per_image_exact``: whether epsilon is a guarantee.
        caveat: None, or one line saying why epsilon is only nominal.
        last_norms: per-image gradient norms before clipping, of the last step.
    """

    clipping_unit = "image"
    sampling = "poisson"

    def __init__(
        self, method: nn.Module, config: DPConfig, n_train: int, batch_size: int, epochs: int
    ) -> None:
        ssl_method = _require_ssl_method(method)
        check_dp_compatible(method)
        if n_train < 1 or batch_size < 1:
            raise LeakprobeError(f"DP-SGD needs training images and a batch size >= 1, got "
                                 f"N={n_train}, B={batch_size}")
        self.method = ssl_method
        self.config = config
        self.n_train = int(n_train)
        self.batch_size = min(batch_size, n_train)
        self.sample_rate = self.batch_size / n_train
        self.steps_per_epoch = n_train // self.batch_size
        self.total_steps = self.steps_per_epoch * epochs
        if config.noise_multiplier is not None:
            self.noise_multiplier = float(config.noise_multiplier)
        else:
            if config.target_epsilon is None:  # DPConfig checks it; here for the type
                raise LeakprobeError("DP needs a noise multiplier or a target epsilon")
            self.noise_multiplier = noise_for_epsilon(
                config.target_epsilon, config.delta, self.sample_rate, self.total_steps,
                config.accountant)
        self.exact_per_image = bool(getattr(method, "dp_per_image_exact", False))
        name = getattr(method, "name", "") or type(method).__name__
        self.caveat = None if self.exact_per_image else (
            getattr(method, "dp_caveat", None) or GENERIC_CAVEAT.format(name=name))
        enable = getattr(method, "enable_dp", None)
        if callable(enable):
            enable()
        self.steps = 0
        self.last_norms: torch.Tensor | None = None
        self._names: list[str] | None = None
        self._noise = private_generator()
        self._epsilons: dict[int, float] = {}

    # -- sampling ----------------------------------------------------------------------------
    def sample(self, generator: torch.Generator) -> torch.Tensor:
        """Indices of the next step's batch: every image with probability ``sample_rate``."""
        return poisson_sample(self.n_train, self.sample_rate, generator)

    # -- gradients ---------------------------------------------------------------------------
    def _trainable(self, inputs: tuple[torch.Tensor, ...]) -> list[str]:
        """Trainable parameters the student actually uses (the others keep ``grad=None``)."""
        if self._names is None:
            self._names = _used_parameters(self.method, inputs)
        return self._names

    def _trainable_without_batch(self, images: torch.Tensor) -> list[str]:
        """:meth:`_trainable` for an empty batch: probed on a copy (no side effects)."""
        if self._names is None:
            probe = copy.deepcopy(self.method)
            x = torch.zeros((1, *images.shape[1:]), dtype=images.dtype, device=images.device)
            batch = probe.prepare(x, torch.Generator().manual_seed(0))
            self._names = _used_parameters(probe, batch.inputs)
        return self._names

    def per_image_grads(
        self, inputs: tuple[torch.Tensor, ...], out_grads: tuple[torch.Tensor, ...]
    ) -> dict[str, torch.Tensor]:
        """``g_i = J_i^T G_i`` for every image of ``inputs``: ``{name: (B, *param.shape)}``.

        Args:
            inputs: the student's inputs (leading dimension B).
            out_grads: ``G``, one tensor per student output, same shapes as the outputs.
        """
        from torch.func import functional_call, grad, vmap

        names = self._trainable(inputs)
        trainable = set(names)
        params = {n: p.detach() for n, p in self.method.named_parameters() if n in trainable}
        frozen = {n: p.detach() for n, p in self.method.named_parameters() if n not in trainable}
        frozen.update(dict(self.method.named_buffers()))

        def contribution(p, xs, gs):
            outs = functional_call(self.method, (p, frozen), tuple(x.unsqueeze(0) for x in xs))
            return sum((o.squeeze(0).float() * g).sum() for o, g in zip(outs, gs, strict=True))

        fn = vmap(grad(contribution), in_dims=(None, 0, 0), randomness="different")
        with warnings.catch_warnings():  # "no batching rule for ...": a speed note only
            warnings.filterwarnings("ignore", "There is a performance drop", UserWarning)
            return fn(params, tuple(inputs), tuple(out_grads))

    def clipped_sum(
        self, inputs: tuple[torch.Tensor, ...], out_grads: tuple[torch.Tensor, ...]
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Sum over images of ``g_i * min(1, C / (||g_i|| + 1e-6))`` and the norms ``||g_i||``.

        Images are processed ``config.chunk_size`` at a time.
        """
        c = self.config.max_grad_norm
        total: dict[str, torch.Tensor] = {}
        norms = []
        b = inputs[0].shape[0]
        for s in range(0, b, self.config.chunk_size):
            grads = self.per_image_grads(tuple(x[s:s + self.config.chunk_size] for x in inputs),
                                         tuple(g[s:s + self.config.chunk_size] for g in out_grads))
            flat = torch.stack([g.flatten(1).norm(dim=1) for g in grads.values()], dim=1)
            norm = flat.norm(dim=1)  # global norm over all parameters, per image
            factor = (c / (norm + 1e-6)).clamp(max=1.0)
            for n, g in grads.items():
                part = torch.einsum("b,b...->...", factor, g)
                total[n] = total[n] + part if n in total else part
            norms.append(norm)
        return total, torch.cat(norms)

    def clipped_batch(
        self, batch: SSLBatch
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """The noise-free part of a step on a prepared, non-empty batch.

        This is the quantity whose sensitivity DP-SGD bounds: for a method with
        ``dp_per_image_exact``, removing one image's rows from ``batch`` changes it by at most
        C (the tests check it numerically).

        Returns:
            The sum of the clipped per-image gradients ``{name: tensor}``, the per-image norms
            before clipping, and the batch loss (detached).
        """
        m = self.method
        with torch.no_grad():
            outputs = m.student(*batch.inputs)
        outputs = tuple(o.detach().float().requires_grad_(True) for o in outputs)
        loss = m.objective(outputs, batch)
        b = batch.inputs[0].shape[0]
        out_grads = tuple(g * b for g in torch.autograd.grad(loss, outputs, allow_unused=False))
        summed, norms = self.clipped_sum(batch.inputs, out_grads)
        return summed, norms, loss.detach()

    def step(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor | None:
        """Set ``p.grad`` of the trainable parameters to the noisy clipped sum / B.

        Args:
            images: the step's (Poisson-sampled) raw images (b, C, H, W) on the model's
                device; b may be 0 (a noise-only step).
            generator: the trainer's seeded generator (augmentation; the noise has its own).
        Returns:
            The batch loss (detached), or None for an empty batch.
        """
        m = self.method
        params = dict(m.named_parameters())
        if images.shape[0] == 0:
            names = self._trainable_without_batch(images)
            summed = {n: torch.zeros_like(params[n], dtype=torch.float32) for n in names}
            self.last_norms, loss = torch.zeros(0), None
        else:
            summed, norms, loss = self.clipped_batch(m.prepare(images, generator))
            self.last_norms = norms.detach()
        std = self.noise_multiplier * self.config.max_grad_norm
        for n, s in summed.items():
            p = params[n]
            if std > 0:
                noise = torch.randn(s.shape, generator=self._noise).to(s.device, s.dtype) * std
                s = s + noise
            p.grad = (s / self.batch_size).to(p.dtype)  # the expected batch size, not b
        self.steps += 1
        return loss

    # -- accounting --------------------------------------------------------------------------
    def epsilon(self, steps: int | None = None) -> float:
        """The accountant's epsilon at ``config.delta`` after ``steps`` steps (default: the
        steps taken); ``inf`` when no noise is added. A guarantee only if
        :attr:`exact_per_image` (see :meth:`summary`)."""
        n = self.steps if steps is None else steps
        if n not in self._epsilons:  # the accountant takes up to a second on a CPU
            self._epsilons[n] = _accountant_epsilon(self.config.accountant, self.noise_multiplier,
                                                    self.sample_rate, n, self.config.delta)
        return self._epsilons[n]

    def summary(self, steps: int | None = None) -> dict:
        """What ``model.json`` records under ``"dp"``.

        ``epsilon`` is the guarantee (None when the method is not ``exact_per_image`` or no
        noise is added), ``epsilon_nominal`` the accountant's number (None only without
        noise), ``caveat`` None or one line on why ``epsilon_nominal`` is not a guarantee.
        """
        n = self.steps if steps is None else steps
        eps = self.epsilon(n)
        nominal = eps if math.isfinite(eps) else None
        return {
            "epsilon": nominal if self.exact_per_image else None,
            "epsilon_nominal": nominal,
            "caveat": self.caveat,
            "delta": self.config.delta,
            "noise_multiplier": self.noise_multiplier,
            "max_grad_norm": self.config.max_grad_norm,
            "steps": n,
            "sample_rate": self.sample_rate,
            "expected_batch_size": self.batch_size,
            "accountant": self.config.accountant,
            "clipping_unit": self.clipping_unit,
            "exact_per_image": self.exact_per_image,
            "sampling": self.sampling,
            "noise_seed": "not recorded (operating-system entropy)",
        }

    def epsilon_text(self, steps: int | None = None, detail: bool = True) -> str:
        """The epsilon as printed: the guarantee, or ``none (nominal ...)`` with the caveat."""
        return epsilon_text(self.summary(steps), detail=detail)
