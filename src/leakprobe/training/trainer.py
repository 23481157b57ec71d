"""One training loop for every model leakprobe trains: seeded, checkpointed, resumable."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from leakprobe.data.stream import Images, take
from leakprobe.device import resolve_device
from leakprobe.errors import LeakprobeError
from leakprobe.io import atomic_write
from leakprobe.precision import check_amp, precision_name, resolve_amp
from leakprobe.progress import Task, log, task
from leakprobe.training.dp import DPSGD, DPConfig

LossFn = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
# An epoch callback gets (epoch number from 1, model) and returns True to stop training.
EpochCallback = Callable[[int, nn.Module], bool]


@dataclass
class TrainConfig:
    """Optimisation settings shared by every trainer.

    Attributes:
        epochs: passes over the training set.
        batch_size: images per step (the last partial batch is dropped when N > batch size);
            under DP-SGD the expected batch size of Poisson sampling (rate B / N).
        lr: peak learning rate (cosine decay to 0 after a one-epoch warm-up).
        weight_decay: decoupled weight decay (AdamW) or L2 (SGD).
        optimizer: ``adamw`` or ``sgd`` (momentum 0.9).
        amp: bf16 autocast: ``auto`` (on where the device runs bf16 natively, see
            :mod:`leakprobe.precision`), ``on``, ``off`` or a bool. A model whose ops fail
            under autocast is trained in fp32 instead (one line says so).
        seed: seeds initialisation, batch order (DP: the Poisson masks) and augmentation;
            never the DP noise, which comes from a generator seeded from OS entropy.
        device: ``auto``, ``cpu``, ``cuda``...
        dp: DP-SGD settings (None: ordinary training); SSL methods only (the model must have
            ``prepare``/``student``/``objective`` and no BatchNorm); ``amp`` is then ignored.
        snapshot_epochs: epochs after which the model is saved whole (early-stopping study).
    """

    epochs: int = 50
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-5
    optimizer: str = "adamw"
    amp: str | bool = "auto"
    seed: int = 0
    device: str = "auto"
    dp: DPConfig | None = None
    snapshot_epochs: tuple[int, ...] = ()
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise LeakprobeError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise LeakprobeError(f"lr must be > 0, got {self.lr}")
        check_amp(self.amp)
        self.snapshot_epochs = tuple(sorted({int(e) for e in self.snapshot_epochs}))
        if self.snapshot_epochs and not 1 <= self.snapshot_epochs[0] <= \
                self.snapshot_epochs[-1] <= self.epochs:
            raise LeakprobeError(f"snapshot epochs must lie in 1..{self.epochs}, got "
                                 f"{list(self.snapshot_epochs)}")

    def to_dict(self) -> dict:
        return asdict(self)


class Trainer:
    """Runs ``loss_fn`` over shuffled batches of an in-memory tensor, epoch by epoch.

    Under DP-SGD (``config.dp``) batches are Poisson samples instead (:class:`DPSGD`: every
    image with probability B / N per step, ``N // B`` steps per epoch, variable size).

    Checkpoints (model, optimiser, schedule position, generator state, loss history) are
    written atomically after every epoch to ``checkpoint_dir/checkpoint.pt`` when a folder is
    given; ``resume=True`` continues from the last one. Checkpoints hold tensors and plain
    values only and are read back with ``torch.load(weights_only=True)``. The DP noise
    generator is never checkpointed: a resumed DP run draws fresh noise (same batches and
    augmentations as an uninterrupted run, different noise).

    Progress is one task over every step still to run, named ``description`` and the epoch:
    ``shadow training (epoch 3/50): 120/1000 steps (12%), 2.1 steps/s, 7:00 left``; it
    moves per optimiser step, so its rate and time left are there from the first steps of a
    long epoch.
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        checkpoint_dir: str | Path | None = None,
        callbacks: list[EpochCallback] | None = None,
        description: str = "training",
    ) -> None:
        self.model = model
        self.config = config
        self.device = resolve_device(config.device)
        # bf16 autocast resolved once for this device; DP-SGD always runs in fp32
        self.amp = resolve_amp(config.amp, self.device) and config.dp is None
        self.description = description
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.callbacks = callbacks or []
        self.history: list[float] = []
        self.dp_engine: DPSGD | None = None
        self.steps_per_epoch = 0

    def _optimizer(self) -> torch.optim.Optimizer:
        params = [p for p in self.model.parameters() if p.requires_grad]
        c = self.config
        if c.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)
        if c.optimizer == "sgd":
            return torch.optim.SGD(params, lr=c.lr, momentum=0.9, weight_decay=c.weight_decay)
        raise LeakprobeError(f"optimizer must be 'adamw' or 'sgd', got {c.optimizer!r}")

    @property
    def checkpoint_path(self) -> Path | None:
        return self.checkpoint_dir / "checkpoint.pt" if self.checkpoint_dir else None

    def fit(self, data: Images, loss_fn: LossFn, resume: bool = False) -> list[float]:
        """Train on ``data`` (N, ...) and return the mean loss of every epoch.

        Args:
            data: the training tensor, or a :class:`~leakprobe.data.stream.LazyImages` read
                one batch at a time; batches are ``data[idx]`` moved to the device.
            loss_fn: maps (batch, generator) to a scalar loss (unused under DP-SGD, where the
                engine runs the model's ``prepare``/``student``/``objective`` itself).
            resume: continue from the checkpoint in ``checkpoint_dir`` if one exists.
        """
        c = self.config
        n = data.shape[0]
        if n < 2:
            raise LeakprobeError(f"need at least 2 training samples, got {n}")
        batch = min(c.batch_size, n)
        steps_per_epoch = n // batch
        total_steps = steps_per_epoch * c.epochs
        warmup = steps_per_epoch
        self.steps_per_epoch = steps_per_epoch
        self.model.to(self.device)
        if c.dp is not None:
            self.dp_engine = DPSGD(self.model, c.dp, n, batch, c.epochs)
        optimizer = self._optimizer()
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda s: min(1.0, (s + 1) / warmup)
            * 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / max(total_steps, 1))),
        )
        g = torch.Generator().manual_seed(c.seed)
        start = self._maybe_resume(optimizer, schedule, g) if resume else 0
        if self.dp_engine is not None:  # the accountant only needs the number of steps
            self.dp_engine.steps = start * steps_per_epoch
        every = max(1, c.epochs // 20)
        self._record_precision()
        with task(self.description, steps_per_epoch * (c.epochs - start), "steps") as bar:
            self._epochs(data, loss_fn, optimizer, schedule, g, batch, start, every, bar)
        self.model.eval()
        return self.history

    def _epochs(self, data, loss_fn, optimizer, schedule, g, batch: int, start: int,
                every: int, bar: Task) -> None:
        """Epochs ``start``.. of :meth:`fit`, the progress ``bar`` advanced per step."""
        c = self.config
        for epoch in range(start, c.epochs):
            bar.describe(f"{self.description} (epoch {epoch + 1}/{c.epochs})")
            t0 = time.time()
            losses = self._run_epoch(data, loss_fn, optimizer, schedule, g, batch, epoch, bar)
            self.history.append(sum(losses) / max(len(losses), 1))
            seconds = time.time() - t0
            if seconds > 5 or (epoch + 1) % every == 0 or epoch + 1 == c.epochs:
                eps = (f", epsilon {self.dp_engine.epsilon_text(detail=False)}"
                       if self.dp_engine else "")
                log(f"epoch {epoch + 1}/{c.epochs} loss {self.history[-1]:.4f}{eps} "
                    f"({seconds:.1f}s)")
            if not math.isfinite(self.history[-1]):
                raise LeakprobeError(f"training diverged at epoch {epoch + 1} (loss is NaN/inf)")
            # callbacks (snapshots...) run before the checkpoint: once a checkpoint says an
            # epoch is done, its side effects exist, so a resume never skips them
            stop = any(cb(epoch + 1, self.model) for cb in self.callbacks)
            self._save_checkpoint(optimizer, schedule, g, epoch + 1)
            if stop:
                break

    def _record_precision(self) -> None:
        """Keep what is really used (after any fallback) in the config, so ``model.json``
        (``train.extra.precision``) says it."""
        self.config.extra = {**self.config.extra, "precision": self.precision}

    def _run_epoch(self, data, loss_fn, optimizer, schedule, g, batch, epoch,
                   bar: Task | None = None) -> list[float]:
        self.model.train()
        dp = self.dp_engine
        # one shuffle per epoch; DP-SGD draws a Poisson sample per step instead (no shuffle,
        # so its placeholder takes nothing from the generator)
        order = (torch.randperm(data.shape[0], generator=g) if dp is None
                 else torch.empty(0, dtype=torch.long))
        n_steps = data.shape[0] // batch
        losses = []
        for step in range(n_steps):
            # DP-SGD: a Poisson sample (every image with probability B / N), as accounted
            idx = order[step * batch:(step + 1) * batch] if dp is None else dp.sample(g)
            x = take(data, idx).to(self.device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            # DP: p.grad = (clipped sum + noise) / B; loss None for an empty batch
            loss = self._forward_backward(loss_fn, x, g) if dp is None else dp.step(x, g)
            optimizer.step()
            schedule.step()
            after = getattr(self.model, "after_step", None)
            if after is not None:
                after((epoch * n_steps + step + 1) / max(n_steps * self.config.epochs, 1))
            if loss is not None:
                losses.append(float(loss.detach()))
            if bar is not None:
                bar.advance()
        return losses

    @property
    def precision(self) -> str:
        """What this trainer computes in: ``bf16-autocast`` or ``fp32`` (for reports)."""
        return precision_name(self.amp)

    def _forward_backward(self, loss_fn: LossFn, x: torch.Tensor, g: torch.Generator):
        """Loss and gradients of one batch; falls back to fp32 once if autocast fails.

        Some ops have no bf16 kernel on some machines (oneDNN's LSTM on CPUs without native
        bf16 raises ``could not create a primitive descriptor``). The failed step consumed no
        optimiser state; the generator is rewound so the fp32 retry draws the same batch
        augmentation, and every later step runs in fp32.
        """
        if not self.amp:
            loss = loss_fn(x, g)
            loss.float().backward()
            return loss
        state = g.get_state()
        try:
            with torch.autocast(self.device.type, torch.bfloat16):
                loss = loss_fn(x, g)
            loss.float().backward()
            return loss
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            log(f"bf16 autocast failed for this model ({first[:120]}); training in fp32")
            self.amp = False
            self._record_precision()
            self.model.zero_grad(set_to_none=True)
            g.set_state(state)
            loss = loss_fn(x, g)
            loss.float().backward()
            return loss

    def _save_checkpoint(self, optimizer, schedule, g, epoch: int) -> None:
        if self.checkpoint_path is None:
            return
        state = {
            "model": self.model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "generator": g.get_state(),
            "epoch": epoch,
            "history": list(self.history),
            "config": self.config.to_dict(),
        }
        atomic_write(self.checkpoint_path, lambda p: torch.save(state, p))

    def _maybe_resume(self, optimizer, schedule, g) -> int:
        path = self.checkpoint_path
        if path is None or not path.exists():
            return 0
        state = torch.load(path, map_location=self.device, weights_only=True)
        if state.get("config", {}).get("epochs") != self.config.epochs:
            log(f"resuming from {path} with a different epoch count")
        self.model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        g.set_state(state["generator"])
        self.history = list(state["history"])
        log(f"resumed from {path} at epoch {state['epoch']}")
        return int(state["epoch"])
