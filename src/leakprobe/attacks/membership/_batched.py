"""Many small attacker networks trained at once: the engine behind :class:`NeuralScorer`.

An audit fits the same attacker network many times: once per cross-fitting fold and repeat,
and again for every label permutation of the permutation test (``leakprobe.evaluation.
permutation``). Trained one after another, 600 fits of a 187k-parameter MLP on ~100 samples
are dominated by per-step overhead. Here the M networks of a batch keep their parameters in
one ``(M, D)`` tensor and train together with batched matrix products; every network still
sees exactly its own data, its own shuffles, its own Adam state and its own early stopping,
so a network's result does not depend on which other networks share its batch.

Per network (the procedure of PartCrop's and EncoderMI's reference attackers):

* features standardised with the mean / std of its fit data (one scalar pair for a set);
* a seeded validation part (``val_fraction`` of the fit data, none under 10 samples);
* up to ``epochs`` passes of Adam (L2 weight decay as ``torch.optim.Adam``) on BCE over
  seeded mini-batches of ``batch_size``; the epoch with the lowest validation loss is kept,
  and training stops once ``patience`` epochs have passed without the validation loss
  falling ``MIN_IMPROVEMENT`` below its last real improvement (the kept epoch is still the
  lowest loss seen; on
  permuted labels, where there is nothing to learn, this ends most fits within ~30 epochs
  and is what makes the permutation test affordable). A network stopped early leaves the
  batch, so the others run on at full speed.

Each batch of networks shows a progress task over its epochs (``scorer: training 64
networks: 12/100 epochs``), inside the audit's ``cross-fitting`` task; its time left is an
upper bound, as early stopping may end it sooner.

Networks: ``mlp`` (F-512-256-128-1, ReLU: PartCrop's and EncoderMI's attacker), ``mlp-rmsnorm``
(the same widths with Tanh, and a parameter-free RMSNorm on the input and after every hidden
linear layer: PartCrop-v2's attacker, see :class:`~leakprobe.attacks.membership.partcrop.
PartCropV2`) and ``deepset`` (EncoderMI's set network). Initialisation follows ``nn.Linear``
(uniform in +-1/sqrt(fan_in) for weights and biases). All random draws of a network come from
a generator seeded with its own ``seed``. :meth:`TrainedNetworks.module` gives a trained MLP
as a plain ``nn.Sequential`` (the same function, for inspection).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from leakprobe.evaluation.results import FitTask
from leakprobe.progress import track
from leakprobe.threads import single_threaded

# Parameters of one batch of networks (elements of the (M, D) tensor); bounds memory.
_MAX_BATCH_PARAMETERS = 24_000_000
# Below this many multiply-adds per sample summed over a batch's networks, one thread beats
# several (see leakprobe.threads): ~16 MLPs or ~16 set networks.
_MULTITHREAD_MACS = 3_000_000
MLP_HIDDEN = (512, 256, 128)
# PartCrop-v2's attacker: MLP_HIDDEN with RMSNorm (no gain, eps inside the root) and Tanh.
RMS_MLP, RMS_EPS = "mlp-rmsnorm", 1e-6
MLPS = ("mlp", RMS_MLP)
# Validation-loss decrease (BCE, nats) that counts as progress for early stopping.
MIN_IMPROVEMENT = 1e-3
# Epochs without a real improvement after which a network stops (see the module docstring).
PATIENCE = 10
DEEPSET_WIDTH = 64


def _layer_shapes(network: str, in_dim: int) -> list[tuple[int, int]]:
    """(fan_in, fan_out) of each linear layer, in order."""
    if network in MLPS:
        dims = (in_dim, *MLP_HIDDEN, 1)
        return list(zip(dims[:-1], dims[1:], strict=True))
    w = DEEPSET_WIDTH
    return [(1, w), (w, w), (2 * w, w), (w, 1)]


def _n_params(shapes: list[tuple[int, int]]) -> int:
    return sum(a * b + b for a, b in shapes)


def _macs_per_sample(network: str, shapes: list[tuple[int, int]], in_dim: int) -> int:
    """Multiply-adds of one network's forward pass on one sample."""
    if network in MLPS:
        return sum(a * b for a, b in shapes)
    (_, w), (_, _), (a3, b3), (a4, b4) = shapes
    return in_dim * (2 * w + w * w) + a3 * b3 + a4 * b4


def _unflatten(flat: torch.Tensor, shapes: list[tuple[int, int]]) -> list[torch.Tensor]:
    """Views (M, in, out) and (M, 1, out) of every layer's weight and bias."""
    m, out, o = flat.shape[0], [], 0
    for a, b in shapes:
        out.append(flat[:, o:o + a * b].view(m, a, b))
        o += a * b
        out.append(flat[:, o:o + b].view(m, 1, b))
        o += b
    return out


def _forward(network: str, x: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    """Logits (M, B) of M networks on their inputs x: (M, B, F) (mlp) or (M, B, S) (set)."""
    if network in MLPS:
        rms = network == RMS_MLP
        h = F.rms_norm(x, (x.shape[-1],), eps=RMS_EPS) if rms else x
        for i in range(0, len(params), 2):
            h = torch.baddbmm(params[i + 1], h, params[i])
            if i < len(params) - 2:
                h = torch.tanh(F.rms_norm(h, (h.shape[-1],), eps=RMS_EPS)) if rms \
                    else torch.relu(h)
        return h.squeeze(-1)
    w1, b1, w2, b2, w3, b3, w4, b4 = params
    pooled = _SetPool.apply(x, w1, b1, w2, b2, torch.is_grad_enabled())  # (M, B, 2W)
    h = torch.relu(torch.baddbmm(b3, pooled, w3))
    return torch.baddbmm(b4, h, w4).squeeze(-1)


# Elements (B*S*W floats) of the per-element tensors one chunk of set networks works on:
# ~3 MB, so that they stay in a core's cache between the operations of a chunk.
_SET_CHUNK_ELEMENTS = 4 * 64 * 45 * DEEPSET_WIDTH


class _SetPool(torch.autograd.Function):
    """The set network's element encoder and pooling, computed a few networks at a time.

    For each element s of a set: phi(s) = relu(W2^T relu(w1 s + b1) + b2) (a scalar in,
    W out); the set is pooled to [mean_s phi(s), max_s phi(s)]. Written out by hand because
    the per-element tensors (M, B*S, W) are what the set network's time goes into: autograd
    keeps them all and passes over them ~20 times per step, from memory. Here a chunk of
    networks at a time goes through all its operations while its tensors are in cache;
    backward recomputes the cheap first layer instead of storing it and keeps only the sign
    of the second (one byte) and the max's argmax. Same values and gradients as the
    composition of ``baddbmm``/``relu``/``sum``/``max`` (up to float summation order);
    twice as fast on 2 cores.
    """

    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2, training):  # noqa: D102 - see the class docstring
        m, b, s = x.shape
        w = w1.shape[-1]
        chunk = max(1, _SET_CHUNK_ELEMENTS // max(1, b * s * w))
        mean, top = x.new_empty(m, b, w), x.new_empty(m, b, w)
        arg = torch.empty(m, b, w, dtype=torch.long, device=x.device)
        positive = (torch.empty(m, b * s, w, dtype=torch.bool, device=x.device) if training
                    else None)
        for i in range(0, m, chunk):
            k = min(chunk, m - i)
            sl = slice(i, i + k)
            h1 = torch.addcmul(b1[sl], x[sl].reshape(k, b * s, 1), w1[sl]).relu_()
            h2 = torch.baddbmm(b2[sl], h1, w2[sl])
            if positive is not None:
                torch.gt(h2, 0, out=positive[sl])
            h2 = h2.relu_().view(k, b, s, w)
            torch.sum(h2, 2, out=mean[sl])
            torch.max(h2, 2, out=(top[sl], arg[sl]))
        mean.mul_(1.0 / s)
        if positive is not None:
            ctx.save_for_backward(x, w1, b1, w2, arg, positive)
        return torch.cat([mean, top], dim=-1)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        x, w1, b1, w2, arg, positive = ctx.saved_tensors
        m, b, s = x.shape
        w = w1.shape[-1]
        chunk = max(1, _SET_CHUNK_ELEMENTS // max(1, b * s * w))
        g_mean = (grad[..., :w] * (1.0 / s)).contiguous()
        g_top = grad[..., w:].contiguous()
        gw1, gb1 = torch.empty_like(w1), torch.empty_like(b1)
        gw2, gb2 = torch.empty_like(w2), torch.empty_like(grad[:, :1, :w])
        for i in range(0, m, chunk):
            k = min(chunk, m - i)
            sl = slice(i, i + k)
            xs = x[sl].reshape(k, b * s, 1)
            h1 = torch.addcmul(b1[sl], xs, w1[sl]).relu_()
            # d/d phi: the mean's share on every element, the max's on its argmax.
            g2 = g_mean[sl].unsqueeze(2).expand(k, b, s, w).contiguous()
            g2.scatter_add_(2, arg[sl].unsqueeze(2), g_top[sl].unsqueeze(2))
            g2 = g2.view(k, b * s, w).mul_(positive[sl])
            torch.bmm(h1.transpose(1, 2), g2, out=gw2[sl])
            torch.sum(g2, 1, keepdim=True, out=gb2[sl])
            g1 = torch.ops.aten.threshold_backward(torch.bmm(g2, w2[sl].transpose(1, 2)), h1, 0)
            torch.bmm(xs.transpose(1, 2), g1, out=gw1[sl])
            torch.sum(g1, 1, keepdim=True, out=gb1[sl])
        return None, gw1, gb1, gw2, gb2, None


def _pad(rows: Sequence[np.ndarray], width: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack per-network (n_m, dim) arrays into (M, width, dim) plus a (M, width) mask."""
    out = torch.zeros(len(rows), width, dim, dtype=torch.float32)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.as_tensor(r, dtype=torch.float32).reshape(len(r), dim)
        mask[i, :len(r)] = True
    return out, mask


def _masked_bce(logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-network mean BCE over its valid entries (0 where it has none): (M,)."""
    m = mask.float()
    per = F.binary_cross_entropy_with_logits(logits, y, reduction="none") * m
    return per.sum(1) / m.sum(1).clamp(min=1.0)


def fit_score_networks(
    network: str,
    features: np.ndarray,
    tasks: Sequence[FitTask],
    *,
    epochs: int = 100,
    lr: float = 1e-3,
    weight_decay: float = 5e-4,
    batch_size: int = 64,
    val_fraction: float = 0.2,
    seed: int = 0,
    patience: int = PATIENCE,
) -> list[np.ndarray]:
    """Train one network per task (all at once, in memory-bounded batches); score its test part.

    Args:
        network: ``mlp`` (F-512-256-128-1, ReLU), ``mlp-rmsnorm`` (the same widths, RMSNorm
            and Tanh) or ``deepset`` (a permutation-invariant network over a set of scalars).
        features: (N, F) features shared by all tasks.
        tasks: what each network fits on and scores.
        epochs, lr, weight_decay, batch_size, val_fraction, patience: the training recipe.
        seed: every network's generator is seeded with it, so two tasks with equal data give
            equal networks (the procedure is a fixed function of its data).
    Returns:
        Per task, the membership probabilities of its test samples (float64).
    """
    x_all = np.asarray(features, dtype=np.float64)
    if x_all.ndim == 1:
        x_all = x_all[:, None]
    shapes = _layer_shapes(network, x_all.shape[1])
    per_batch = max(1, _MAX_BATCH_PARAMETERS // _n_params(shapes))
    # Networks train together only when they take the same number of steps per epoch.
    groups: dict[int, list[int]] = {}
    for i, t in enumerate(tasks):
        n = len(t.train)
        n_train = n - (int(round(n * val_fraction)) if n >= 10 else 0)
        groups.setdefault(max(1, math.ceil(n_train / batch_size)), []).append(i)
    out: list[np.ndarray | None] = [None] * len(tasks)
    for members in groups.values():
        for start in range(0, len(members), per_batch):
            idx = members[start:start + per_batch]
            many = len(idx) * _macs_per_sample(network, shapes, x_all.shape[1]) \
                >= _MULTITHREAD_MACS
            with contextlib.nullcontext() if many else single_threaded():
                scores = _fit_batch(network, shapes, x_all, [tasks[i] for i in idx], epochs,
                                    lr, weight_decay, batch_size, val_fraction, seed,
                                    patience)[1]
            for i, sc in zip(idx, scores, strict=True):
                out[i] = sc
    return out  # type: ignore[return-value]


def train_network(network: str, features: np.ndarray, labels: np.ndarray, *, epochs: int = 100,
                  lr: float = 1e-3, weight_decay: float = 5e-4, batch_size: int = 64,
                  val_fraction: float = 0.2, seed: int = 0,
                  patience: int = PATIENCE) -> TrainedNetworks:
    """One network trained on all of ``features`` (the procedure of :func:`fit_score_networks`)."""
    x = np.asarray(features, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
    task = FitTask(np.arange(len(x)), np.asarray(labels), np.arange(0))
    with single_threaded():
        return _fit_batch(network, _layer_shapes(network, x.shape[1]), x, [task], epochs, lr,
                          weight_decay, batch_size, val_fraction, seed, patience)[0]


@dataclass
class TrainedNetworks:
    """Trained networks: flat parameters (M, D) and each network's standardisation."""

    network: str
    shapes: list[tuple[int, int]]
    params: torch.Tensor
    means: list
    stds: list

    def score(self, features: np.ndarray, index: int = 0) -> np.ndarray:
        """Membership probabilities of network ``index`` on (N, F) features (float64)."""
        x = np.asarray(features, dtype=np.float64)
        x = x[:, None] if x.ndim == 1 else x
        z = torch.as_tensor((x - self.means[index]) / self.stds[index], dtype=torch.float32)
        with single_threaded(), torch.inference_mode():
            logits = _forward(self.network, z[None], _unflatten(self.params[index:index + 1],
                                                                 self.shapes))
        return torch.sigmoid(logits[0]).double().numpy()

    def module(self, index: int = 0) -> torch.nn.Sequential:
        """MLP ``index`` as a plain torch module from standardised features to logits: the
        function :meth:`score` computes before its sigmoid (``mlp`` or ``mlp-rmsnorm``)."""
        if self.network not in MLPS:
            raise ValueError(f"no module view of a {self.network!r} network")
        rms = self.network == RMS_MLP
        nn = torch.nn
        layers: list[torch.nn.Module] = []
        if rms:
            layers.append(nn.RMSNorm(self.shapes[0][0], eps=RMS_EPS, elementwise_affine=False))
        weights = _unflatten(self.params[index:index + 1], self.shapes)
        for j, (a, b) in enumerate(self.shapes):
            linear = nn.utils.skip_init(nn.Linear, a, b)  # no draw from the global RNG
            with torch.no_grad():
                linear.weight.copy_(weights[2 * j][0].T)
                linear.bias.copy_(weights[2 * j + 1][0, 0])
            layers.append(linear)
            if j < len(self.shapes) - 1:
                layers += [nn.RMSNorm(b, eps=RMS_EPS, elementwise_affine=False), nn.Tanh()] \
                    if rms else [nn.ReLU()]
        return nn.Sequential(*layers)


def _optimizer(params: list[torch.Tensor], lr: float, weight_decay: float):
    """Adam over the batched parameters: the fused kernel where this torch has it.

    Every network of a batch takes the same number of steps (batches are grouped by steps
    per epoch), so one step count serves them all and Adam's update of each network is
    exactly ``torch.optim.Adam`` on that network alone.
    """
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError):  # no fused kernel for this device / build
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, foreach=True)


def _compact(params: list[torch.Tensor], opt, keep: torch.Tensor, lr: float,
             weight_decay: float):
    """Parameters and Adam state of the networks ``keep`` only (the others stopped)."""
    new = [p.detach()[keep].clone().requires_grad_(True) for p in params]
    new_opt = _optimizer(new, lr, weight_decay)
    for old_p, new_p in zip(params, new, strict=True):
        state = opt.state.get(old_p)
        if state:
            new_opt.state[new_p] = {k: (v[keep].clone() if k != "step" else v.clone())
                                    for k, v in state.items()}
    return new, new_opt


def _fit_batch(network, shapes, x_all, tasks, epochs, lr, weight_decay, batch_size,
               val_fraction, seed, patience) -> tuple[TrainedNetworks, list[np.ndarray]]:
    m_count = len(tasks)
    gens, tr_rows, tr_y, va_rows, va_y, te_rows = [], [], [], [], [], []
    means, stds = [], []
    for t in tasks:
        x = x_all[np.asarray(t.train)]
        y = np.asarray(t.labels, dtype=np.float32)
        if network in MLPS:
            mean, std = x.mean(axis=0), x.std(axis=0)
            std = np.where(std > 1e-12, std, 1.0)
        else:  # a set's elements share one scale
            mean, std = x.mean(), max(float(x.std()), 1e-12)
        means.append(mean)
        stds.append(std)
        g = torch.Generator().manual_seed(int(seed))
        gens.append(g)
        perm = torch.randperm(len(y), generator=g).numpy()
        n_val = int(round(len(y) * val_fraction)) if len(y) >= 10 else 0
        z = (x - mean) / std
        va_rows.append(z[perm[:n_val]])
        va_y.append(y[perm[:n_val]])
        tr_rows.append(z[perm[n_val:]])
        tr_y.append(y[perm[n_val:]])
        te_rows.append((x_all[np.asarray(t.test)] - mean) / std)
    dim = x_all.shape[1]
    xtr, mtr = _pad(tr_rows, max(len(r) for r in tr_rows), dim)
    ytr, _ = _pad([r[:, None] for r in tr_y], xtr.shape[1], 1)
    xva, mva = _pad(va_rows, max(1, max(len(r) for r in va_rows)), dim)
    yva, _ = _pad([r[:, None] for r in va_y], xva.shape[1], 1)
    xte, _ = _pad(te_rows, max(1, max(len(r) for r in te_rows)), dim)
    ytr, yva = ytr.squeeze(-1), yva.squeeze(-1)
    has_val = mva.any(1)

    # nn.Linear's initialisation, drawn per network from its own generator.
    flat = torch.empty(m_count, _n_params(shapes))
    for i, g in enumerate(gens):
        parts = []
        for a, b in shapes:
            bound = 1.0 / math.sqrt(a)
            parts += [(torch.rand(a * b, generator=g) * 2 - 1) * bound,
                      (torch.rand(b, generator=g) * 2 - 1) * bound]
        flat[i] = torch.cat(parts)
    # One leaf per layer (slicing one flat leaf makes backward fill a full-size zero
    # gradient per slice); every tensor is (M, ., .), so per-network factors are (M, 1, 1).
    params = [p.clone().requires_grad_(True) for p in _unflatten(flat, shapes)]
    opt = _optimizer(params, lr, weight_decay)
    best_loss = torch.full((m_count,), float("inf"))
    best = [p.detach().clone() for p in params]
    last = [p.detach().clone() for p in params]
    since_best = torch.zeros(m_count, dtype=torch.long)
    patience_ref = torch.full((m_count,), float("inf"))
    alive = torch.arange(m_count)  # the task of each row of the training tensors
    n_tr = xtr.shape[1]
    what = f"scorer: training {m_count} network{'s' if m_count > 1 else ''}"
    for _ in track(range(epochs), what, unit="epochs"):  # at most: early stopping ends it
        keys = torch.stack([torch.rand(n_tr, generator=gens[i]) for i in alive.tolist()])
        keys[~mtr] = 2.0  # padding last
        order = keys.argsort(dim=1)
        for s in range(0, n_tr, batch_size):
            idx = order[:, s:s + batch_size]
            xb = torch.gather(xtr, 1, idx[..., None].expand(-1, -1, dim))
            yb, mb = torch.gather(ytr, 1, idx), torch.gather(mtr, 1, idx)
            loss = _masked_bce(_forward(network, xb, params), yb, mb)
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
        with torch.no_grad():
            for lst, p in zip(last, params, strict=True):
                lst.index_copy_(0, alive, p)
            val = has_val[alive]
            if not val.any():
                continue
            v = _masked_bce(_forward(network, xva, params), yva, mva)
            better = val & (v < best_loss[alive])
            rows = alive[better]
            best_loss[rows] = v[better]
            for b, p in zip(best, params, strict=True):
                b.index_copy_(0, rows, p[better])
            # Patience restarts only on a real improvement (MIN_IMPROVEMENT): a loss creeping
            # down by 1e-5 per epoch on labels with nothing to learn does not keep it going.
            real = val & (v < patience_ref[alive] - MIN_IMPROVEMENT)
            patience_ref[alive[real]] = v[real]
            since_best[alive] = torch.where(real, 0, since_best[alive] + 1)
            done = val & (since_best[alive] >= patience)
            if done.any():  # drop finished networks from the batch
                keep = (~done).nonzero().squeeze(1)
                if keep.numel() == 0:
                    break
                alive = alive[keep]
                params, opt = _compact(params, opt, keep, lr, weight_decay)
                xtr, ytr, mtr = xtr[keep], ytr[keep], mtr[keep]
                xva, yva, mva = xva[keep], yva[keep], mva[keep]
    with torch.no_grad():
        final = [torch.where(has_val.view(-1, 1, 1), b, lst)
                 for b, lst in zip(best, last, strict=True)]
        final_flat = torch.cat([f.reshape(m_count, -1) for f in final], dim=1)
        probs = torch.sigmoid(_forward(network, xte, final))
    trained = TrainedNetworks(network, shapes, final_flat, means, stds)
    return trained, [probs[i, :len(te_rows[i])].double().numpy() for i in range(m_count)]
