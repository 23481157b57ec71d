"""Dataset inference for encoders (Dziedzic et al., NeurIPS 2022, "Dataset Inference for
Self-Supervised Models"; code: cleverhans-lab/DatasetInferenceForSelfSupervisedModels,
``dataset-inference/gmm.py``).

Idea: a Gaussian mixture fitted to representations of part of the owner's training data gives
the encoder's *other* training images a higher log-likelihood than held-out images when the
encoder is the victim or a copy of it, and not when it was trained independently.

The released ``gmm.py``, and what leakprobe does:

- it loads one encoder and embeds three sets with it: training part 1 (100,000 ImageNet
  images), training part 2 (50,000) and test data (50,000 validation images); the
  representations are L2-normalised (``F.normalize``);
- ``GaussianMixture(n_components=20, covariance_type="diag", max_iter=1000)`` (scikit-learn)
  is fitted on part 1; the paper uses 10 components for CIFAR10 and SVHN, 50 for ImageNet,
  the diagonal covariance "for efficiency" on ImageNet, and half of the training set for the
  fit on CIFAR10 and SVHN. leakprobe: 10 components, diagonal, ``max_iter=1000``, fitted on a
  seeded random half of the members;
- the log-likelihoods of part 2 and of the test data (``score_samples``) are compared by
  ``scipy.stats.ttest_ind`` (Student's, equal variances) and the p-value is halved. Halving
  gives a one-sided p only when the difference has the expected sign; leakprobe takes the
  one-sided p-value (``alternative="greater"``), which is near 1 for a negative difference;
- ``gmm.py`` embeds each image as one ``RandomResizedCrop(224)`` view; leakprobe embeds the
  image itself (the embeddings the similarity tests use; no draw to seed);
- whose representations the mixture is fitted on: ``gmm.py`` fits and scores the same
  (loaded) encoder, so by default leakprobe fits on the *suspect's* embeddings of the member
  half (``fit_on="suspect"``). ``fit_on="victim"`` fits on the victim's embeddings instead
  (the owner keeps the density model and scores the suspect against it; same width needed).

Validity: with ``fit_on="suspect"`` and a suspect that does not depend on the owner's random
split, the scored member half and the non-members are exchangeable given the fitted mixture,
so the test is as valid as the t-test's normal approximation (good from a few dozen images
per side). With ``fit_on="victim"`` the mixture is a function of an encoder trained on the
scored images; the argument then rests on the suspect's embedding space being unrelated to
the victim's, which independent training makes plausible but does not guarantee.

Sample sizes: a diagonal mixture of C components in D dimensions has ``C (2D + 1) - 1``
parameters; leakprobe runs the test only when the fit half holds at least
``min_per_component`` (default 10) images per component (>= 200 members at C = 10) and at
least :data:`MIN_SCORED` images are scored on each side; otherwise it is listed as skipped,
with why. Large enough to run is not large enough to see anything: on a SimCLR CNN with
300 training and 300 held-out crops (150 fit images) the published test found no signal even
for the victim itself (issue 24's measurement); the paper fits on tens of thousands.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from leakprobe.errors import LeakprobeError
from leakprobe.evaluation.ownership import OwnershipTest

__all__ = ["DI_COMPONENTS", "MIN_PER_COMPONENT", "MIN_SCORED", "dataset_inference_needs",
           "dataset_inference_test"]

DI_COMPONENTS = 10  # the paper's choice for CIFAR10 and SVHN
MIN_PER_COMPONENT = 10  # fit images per mixture component, on average
MIN_SCORED = 20  # scored images per side (the t-test's normal approximation)
MAX_ITER = 1000  # gmm.py's
FIT_ON = ("suspect", "victim")


def dataset_inference_needs(n_members: int, n_nonmembers: int, *,
                            n_components: int = DI_COMPONENTS,
                            min_per_component: int = MIN_PER_COMPONENT) -> str | None:
    """Why the sets are too small for dataset inference (None: large enough)."""
    fit = n_members // 2
    need = n_components * min_per_component
    if fit < need:
        return (f"needs >= {2 * need} members (half of them fit {n_components} mixture "
                f"components with >= {min_per_component} images each); got {n_members}")
    if n_members - fit < MIN_SCORED or n_nonmembers < MIN_SCORED:
        return (f"needs >= {MIN_SCORED} scored images per side; got {n_members - fit} members "
                f"and {n_nonmembers} non-members")
    return None


def dataset_inference_test(
    suspect_members: torch.Tensor,
    suspect_nonmembers: torch.Tensor,
    *,
    victim_members: torch.Tensor | None = None,
    fit_on: str = "suspect",
    n_components: int = DI_COMPONENTS,
    min_per_component: int = MIN_PER_COMPONENT,
    seed: int = 0,
) -> OwnershipTest:
    """Dataset inference: GMM log-likelihood of the other members vs the non-members.

    Args:
        suspect_members: (Nm, D) the suspect's embeddings of the owner's members.
        suspect_nonmembers: (Nn, D) its embeddings of the held-out images.
        victim_members: (Nm, D) the victim's embeddings of the members (``fit_on="victim"``).
        fit_on: whose member embeddings the mixture is fitted on (module docstring).
        n_components: mixture components (diagonal covariances).
        min_per_component: fit images per component below which the test is skipped.
        seed: seeds the member halving and the mixture's initialisation.
    Returns:
        The test (``statistic``: mean log-likelihood of the scored members minus that of the
        non-members; ``p_value``: one-sided Student t-test), or a skipped one with why.
    """
    from scipy.stats import ttest_ind
    from sklearn.mixture import GaussianMixture

    name = "dataset-inference"
    if fit_on not in FIT_ON:
        raise LeakprobeError(f"dataset inference: fit_on must be one of {FIT_ON}, got "
                             f"{fit_on!r}")
    n_m, n_n = int(suspect_members.shape[0]), int(suspect_nonmembers.shape[0])
    reason = dataset_inference_needs(n_m, n_n, n_components=n_components,
                                     min_per_component=min_per_component)
    if reason is not None:
        return OwnershipTest.skip(name, reason)
    source = suspect_members
    if fit_on == "victim":
        if victim_members is None:
            return OwnershipTest.skip(name, "fit on the victim's embeddings: no --victim")
        if victim_members.shape != suspect_members.shape:
            return OwnershipTest.skip(
                name, f"fit on the victim's embeddings needs the suspect's width: victim "
                f"{victim_members.shape[1]}, suspect {suspect_members.shape[1]}")
        source = victim_members
    order = torch.randperm(n_m, generator=torch.Generator().manual_seed(int(seed)))
    fit_idx, scored_idx = order[: n_m // 2], order[n_m // 2:]

    def unit(x: torch.Tensor) -> np.ndarray:
        return F.normalize(x.double(), dim=1).numpy()

    gmm = GaussianMixture(n_components=n_components, covariance_type="diag",
                          max_iter=MAX_ITER, random_state=int(seed))
    gmm.fit(unit(source[fit_idx]))
    ll_members = gmm.score_samples(unit(suspect_members[scored_idx]))
    ll_nonmembers = gmm.score_samples(unit(suspect_nonmembers))
    if not (np.isfinite(ll_members).all() and np.isfinite(ll_nonmembers).all()):
        return OwnershipTest.skip(name, "the mixture gave non-finite log-likelihoods")
    t = ttest_ind(ll_members, ll_nonmembers, equal_var=True, alternative="greater")
    return OwnershipTest(
        name=name, statistic=float(ll_members.mean() - ll_nonmembers.mean()),
        p_value=float(t.pvalue), references=0,
        details={"statistic_name": "mean log-likelihood, members minus non-members",
                 "p_value_method": "one-sided Student t-test", "t": float(t.statistic),
                 "fit_on": fit_on, "components": n_components, "covariance": "diag",
                 "n_fit": int(fit_idx.numel()), "n_scored_members": int(scored_idx.numel()),
                 "n_nonmembers": n_n})
