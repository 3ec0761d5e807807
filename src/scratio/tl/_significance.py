"""Replicate-aware significance of per-cell log-ratios: a permutation test over samples.

The model gives every cell ``log p(x | s)`` for every sample ``s`` from one trajectory. A
cell's statistic contrasts its log-densities under the target samples with those under the
reference samples, relative to how much they vary between samples of one condition. The null
reassigns which samples are "target" (within strata), never cells, so that sample-to-sample
variation, biological or the model's own, is what a call must beat; no permutation retrains.
The false discovery rate is estimated as SAM does (Tusher et al. 2001): the permuted statistics
of all cells are pooled into one null, which stays fine-grained with few samples.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

#: Most sample assignments a test evaluates; designs with more are sampled at random.
N_PERMUTATIONS = 1000

STATISTIC = (
    "moderated t of per-sample log-densities: (mean over target samples - mean over reference samples) / "
    "(standard error + its median over cells); 0 where that difference is at most min_log_ratio in "
    "absolute value, in every assignment (with treat: the observed difference moved towards 0 by min_log_ratio)"
)
FDR_METHOD = (
    "permutation null over sample assignments within strata, pooled over cells, each direction apart "
    "(SAM); the observed assignment counts among the null; pi0 = 1"
)


@dataclass(frozen=True)
class SampleDesign:
    """Which samples a contrast compares and which of them may be exchanged.

    Parameters
    ----------
    reference
        The samples of the reference condition.
    target
        The samples of the target condition.
    strata
        The stratum (batch) of each sample; samples are only exchanged within their stratum.
    """

    reference: Sequence[str]
    target: Sequence[str]
    strata: Mapping[str, str] | None = None

    @property
    def samples(self) -> list[str]:
        """Reference samples, then target samples: the columns the statistic reads."""
        return [*self.reference, *self.target]

    def _strata(self) -> list[tuple[list[int], int]]:
        """Per stratum: the positions of its samples in :attr:`samples` and how many are targets."""
        strata = self.strata or {}
        groups: dict[str, list[int]] = {}
        for position, sample in enumerate(self.samples):
            groups.setdefault(strata.get(sample, ""), []).append(position)
        n_reference = len(self.reference)
        return [(positions, sum(p >= n_reference for p in positions)) for positions in groups.values()]

    @property
    def n_assignments(self) -> int:
        """How many ways the target label can be given to the samples (the observed one included)."""
        return math.prod(math.comb(len(positions), k) for positions, k in self._strata())

    def assignments(self, n_permutations: int, rng: np.random.Generator) -> np.ndarray:
        """Boolean ``(n, n_samples)`` target masks; row 0 is the observed assignment.

        Every assignment when there are at most ``n_permutations``, else the observed one and
        ``n_permutations - 1`` distinct others drawn at random.
        """
        strata = self._strata()
        observed = np.arange(len(self.samples)) >= len(self.reference)
        if self.n_assignments <= n_permutations:
            per_stratum = [
                [set(chosen) for chosen in itertools.combinations(positions, k)] for positions, k in strata
            ]
            masks = [
                np.isin(np.arange(len(self.samples)), list(set().union(*choice)))
                for choice in itertools.product(*per_stratum)
            ]
            others = [m for m in masks if not np.array_equal(m, observed)]
            return np.array([observed, *others])
        seen, masks = {observed.tobytes()}, [observed]
        while len(masks) < n_permutations:
            mask = np.zeros(len(self.samples), dtype=bool)
            for positions, k in strata:
                mask[rng.choice(positions, size=k, replace=False)] = True
            if mask.tobytes() not in seen:
                seen.add(mask.tobytes())
                masks.append(mask)
        return np.array(masks)


def moderated_t(
    log_p: np.ndarray, is_target: np.ndarray, min_log_ratio: float = 0.0, *, treat: bool = False
) -> np.ndarray:
    """Per cell: difference of mean log-densities between target and reference samples over its s.e.

    The standard error is Welch's; its median over cells is added to it (SAM's fudge factor),
    so that cells where a few samples happen to agree closely do not dominate. A difference of
    at most ``min_log_ratio`` in absolute value gives 0: that cell cannot be called, as SAM's
    fold-change criterion. With ``treat`` each difference is instead moved that much towards 0
    (0 where it is smaller), as TREAT does (McCarthy and Smyth 2009): a cell whose true
    difference is exactly ``min_log_ratio`` then has the statistic of a cell without any, so a
    null of no difference tests ``|difference| <= min_log_ratio``, conservatively inside it.
    """
    target, reference = log_p[:, is_target], log_p[:, ~is_target]
    difference = target.mean(axis=1) - reference.mean(axis=1)
    if treat:
        difference = np.sign(difference) * np.maximum(np.abs(difference) - min_log_ratio, 0.0)
    elif min_log_ratio > 0:
        difference = np.where(np.abs(difference) > min_log_ratio, difference, 0.0)
    se = np.sqrt(
        target.var(axis=1, ddof=1) / target.shape[1] + reference.var(axis=1, ddof=1) / reference.shape[1]
    )
    fudge = np.median(se)
    return difference / (se + (fudge if fudge > 0 else 1.0))


def pooled_permutation_fdr(observed: np.ndarray, permuted: Iterable[np.ndarray]) -> np.ndarray:
    """q-values of the ``observed`` statistics against the ``permuted`` ones, pooled over cells.

    For a threshold ``t`` on one side, the estimated FDR is the mean number of cells past ``t``
    over all assignments (the observed one included) divided by the number of observed cells
    past it. One exceedance is added to the null count, as Phipson and Smyth (2010) add one
    to permutation p-values: else a null dataset whose observed assignment happens to be the
    most extreme of all (1 in 20 per side with 3 samples per condition) gets calls.
    A cell's q-value is the smallest estimate over the thresholds it passes. Each side
    (positive, negative) is estimated apart. Memory is linear in the number of cells: the
    permuted statistics are consumed one assignment at a time.
    """
    sides = []
    for sign in (1.0, -1.0):
        z = sign * observed
        passing = np.flatnonzero(z > 0)
        order = passing[np.argsort(-z[passing], kind="stable")]
        sides.append((sign, order, z[order]))

    def past(statistics: np.ndarray, sign: float, thresholds: np.ndarray) -> np.ndarray:
        ranked = np.sort(sign * statistics)
        return len(ranked) - np.searchsorted(ranked, thresholds, side="left")

    n_called = [past(observed, sign, thresholds) for sign, _, thresholds in sides]
    null_count = [n.astype(np.float64) for n in n_called]
    n_assignments = 1
    for statistics in permuted:
        n_assignments += 1
        for count, (sign, _, thresholds) in zip(null_count, sides, strict=True):
            count += past(statistics, sign, thresholds)
    q = np.ones(len(observed))
    for count, called, (_, order, _) in zip(null_count, n_called, sides, strict=True):
        if order.size:
            fdr = (count + 1) / n_assignments / called
            q[order] = np.minimum(np.minimum.accumulate(fdr[::-1])[::-1], 1.0)
    return q


#: How per-sample log-densities are normalised before the test (see :func:`log_size_factors`).
SAMPLE_NORMALIZATIONS = ("none", "median")


def check_sample_normalization(normalization: str) -> None:
    """Refuse a normalisation that :func:`log_size_factors` does not know."""
    if normalization not in SAMPLE_NORMALIZATIONS:
        raise ValueError(
            f"`sample_normalization` must be one of {SAMPLE_NORMALIZATIONS}, got {normalization!r}."
        )


def log_size_factors(log_p: np.ndarray, normalization: str) -> np.ndarray:
    """Per sample, the log of the factor its densities are divided by before the test.

    ``"none"``: zeros; a call then means the cell's density differs, which is also true of
    every state diluted when another expands. ``"median"``: the median over cells of the
    sample's log-density relative to the cell's mean over samples (DESeq2's median of ratios,
    on densities instead of counts), so that the typical cell counts as unchanged: the
    assumption of count-based tests (Milo normalises with edgeR's TMM), under which a dilution
    shared by most cells is not called.
    """
    check_sample_normalization(normalization)
    if normalization == "none":
        return np.zeros(log_p.shape[1])
    return np.median(log_p - log_p.mean(axis=1, keepdims=True), axis=0)


class SampleTest(NamedTuple):
    """What :func:`sample_permutation_test` found for one contrast."""

    #: Per-cell q-values.
    q: np.ndarray
    #: Sample assignments evaluated, the observed one included.
    n_assignments: int
    #: The log-ratio the normalisation takes as unchanged (0 without normalisation): the target
    #: samples' mean log size factor less the reference samples'. Calls are relative to it.
    typical_log_ratio: float


def sample_permutation_test(
    log_p: np.ndarray,
    design: SampleDesign,
    *,
    n_permutations: int,
    rng: np.random.Generator,
    normalization: str = "none",
    min_log_ratio: float = 0.0,
    treat: bool = False,
) -> SampleTest:
    """Per-cell q-values of ``design``'s contrast, the assignments evaluated and the typical log-ratio.

    ``log_p`` holds ``log p(x | s)`` with one column per sample of ``design.samples``, in that
    order; each column is first divided by its size factor (:func:`log_size_factors`). A cell
    can be called where its normalised log-ratio exceeds ``min_log_ratio`` in absolute value, by
    more than the samples of one condition differ. Every assignment, the observed one and the
    permuted ones, gives 0 to differences within ``min_log_ratio`` (:func:`moderated_t`), so the
    q-values estimate the false discovery rate of that rule under the null of no difference.
    With ``treat`` the observed differences are moved towards 0 by ``min_log_ratio`` instead,
    and the permuted ones (the null of no difference) are not.
    """
    factors = log_size_factors(log_p, normalization)
    log_p = log_p - factors
    masks = design.assignments(n_permutations, rng)
    observed = moderated_t(log_p, masks[0], min_log_ratio, treat=treat)
    null_min_log_ratio = 0.0 if treat else min_log_ratio
    q = pooled_permutation_fdr(observed, (moderated_t(log_p, mask, null_min_log_ratio) for mask in masks[1:]))
    typical = float(factors[masks[0]].mean() - factors[~masks[0]].mean())
    return SampleTest(q, len(masks), typical)
