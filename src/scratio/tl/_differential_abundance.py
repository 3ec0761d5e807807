"""Differential abundance: ``log p(x | target) - log p(x | reference)`` for every cell."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy.special import log_softmax, logsumexp

from scratio._keys import DIFFERENTIAL_ABUNDANCE, Uns
from scratio._settings import logger
from scratio._support import Support
from scratio._validation import is_finite_number, is_whole_number
from scratio.core.calibration import fit_logit_scale
from scratio.core.network import BASES
from scratio.core.paths import GaussianPath
from scratio.core.training import MIN_VALIDATION_CELLS, TrainingOptions

from ._runner import MeasuredSupport, ToolOptions, ToolRun, summarise, tool_function
from ._significance import (
    FDR_METHOD,
    N_PERMUTATIONS,
    STATISTIC,
    SampleDesign,
    check_sample_normalization,
    sample_permutation_test,
)

#: Smoothing of both densities, in standard deviations (see the ``s_min`` entry of the docstring).
DA_S_MIN = 0.4
#: ``bandwidth`` chosen by the held-out cells' labels.
AUTO_BANDWIDTH = "auto"
#: The widths ``"auto"`` chooses from, besides the model's ``s_min`` (see the ``bandwidth`` entry).
BANDWIDTH_CANDIDATES = (0.5, 0.6, 0.8, 1.0, 1.3, 1.6)
#: ``"auto"`` stops scoring wider widths after this many in a row score clearly below the best
#: (by more than two standard errors of their difference over the held-out cells): the score
#: rises while smoothing removes noise and falls once it blurs the difference.
BANDWIDTH_PATIENCE = 2
#: The width ``"auto"`` falls back to without held-out cells: the best on 700 PBMCs.
FALLBACK_BANDWIDTH = 0.6
#: ``condition_weight`` chosen by the held-out cells' labels.
AUTO_CONDITION_WEIGHT = "auto"
#: The weights of the network's dependence on the condition that ``"auto"`` chooses from, least first.
CONDITION_WEIGHT_CANDIDATES = (0.0, 1.0)
#: ``base`` chosen by the design: a mixture base without replicate samples, none with them.
AUTO_BASE = "auto"
#: Training steps of the network over the mixture base that ``base="auto"`` picks (see the ``base`` entry).
AUTO_BASE_N_STEPS = 100
#: The smallest change a call needs by default (with ``sample_key``): 1.5-fold, MELD's 0.6 likelihood
#: cut-off (odds of 1.5) and the threshold of Milo's published benchmark for a truly DA cell.
DEFAULT_MIN_LOG_RATIO = float(np.log(1.5))


@tool_function(DIFFERENTIAL_ABUNDANCE)
def differential_abundance(
    adata: AnnData,
    condition_key: str,
    reference: str,
    target: str | Sequence[str] | None = None,
    *,
    sample_key: str | None = None,
    alpha: float = 0.1,
    batch_key: str | None = None,
    n_permutations: int = N_PERMUTATIONS,
    sample_normalization: Literal["median", "none"] = "median",
    min_log_ratio: float | None = None,
    treat: bool = False,
    groupby: str | None = None,
    s_min: float = DA_S_MIN,
    base: Literal["auto", "mixture", "gaussian"] | None = AUTO_BASE,
    bandwidth: float | Literal["auto"] | None = AUTO_BANDWIDTH,
    condition_weight: float | Literal["auto"] = AUTO_CONDITION_WEIGHT,
    calibrate: bool = False,
    n_neighbors: int | None = None,
    options: ToolOptions,
) -> AnnData | None:
    """Per-cell log-likelihood ratio of target conditions against a reference condition.

    Trains one conditional flow on ``condition_key`` (or reuses ``model``) and scores every
    cell with ``log p(x | target) - log p(x | reference)``: positive where cells are more
    typical of the target. All targets come from one trajectory per cell (the likelihood of
    every category at once). The ratio compares densities, not cell counts, so conditions
    with different numbers of cells but the same distribution score around zero.

    Parameters
    ----------
    adata
        Annotated data with an embedding in ``adata.obsm[use_rep]``.
    condition_key
        Column of ``adata.obs`` with the conditions (categorical, string or numeric).
    reference
        The reference condition (denominator).
    target
        One condition, a list of conditions, or ``None`` for every condition but
        ``reference``.
    sample_key
        Column of ``adata.obs`` with replicate samples, each belonging to one condition. The
        model is then trained on samples and each condition's density is the equal-weight
        mixture of its samples' densities, so that one large sample does not dominate. Every
        cell also gets a q-value from a permutation test over samples (see Notes); the compared
        conditions need at least two samples each.
    alpha
        FDR level at which a cell is called significant (with ``sample_key``).
    batch_key
        Column of ``adata.obs`` with the batch of each sample (with ``sample_key``): the test
        only exchanges samples within a batch, so that batch differences are not taken for
        differential abundance. Each sample must lie in one batch. For paired designs (a
        control and a treated sample per donor), pass the donor column.
    n_permutations
        Most sample assignments the test evaluates (every assignment when there are fewer,
        e.g. 20 with 3 samples per condition; else a random subset). Scoring is not repeated.
    sample_normalization
        What the test (with ``sample_key``) calls. ``"median"``: each sample's densities are
        first divided by a size factor, the median over cells of their ratio to the cell's
        geometric mean over samples (DESeq2's median of ratios; Milo normalises its counts
        likewise, with TMM), so that a call means the cell's abundance changed relative to
        most cells': when one state expands, that state is called, not the others whose share
        it dilutes. ``"none"``: cells whose density differs between conditions, the diluted
        states included. The log-ratios themselves are the same either way.
    min_log_ratio
        Smallest change a call needs (with ``sample_key``), in nats, relative to the typical
        cell (``typical_log_ratio`` in ``uns[key_added]["test"]``): a cell whose change between
        the target's and the reference's samples is at most ``min_log_ratio`` is not called, as
        a volcano plot asks a gene for a fold change besides its q-value, and the test's null
        applies the same rule, so that the q-values stay calibrated (see Notes). ``None``
        (default): ``np.log(1.5)``, changes of 1.5-fold or more (MELD's 0.6 likelihood cut-off,
        in odds). With thousands of cells the test resolves changes of a few percent: on 20,000
        simulated cells it called the weakly enriched edge of a population, where the share of
        treated cells is 0.52-0.6, which the threshold leaves out (benchmarks README, "A
        1.5-fold threshold in the test"). ``0`` calls every change the test resolves. The
        log-ratios written do not depend on it.
    treat
        Test against ``min_log_ratio`` rather than against no change (TREAT, McCarthy and
        Smyth 2009; DESeq2's ``lfcThreshold``): the q-values then ask whether a cell's change
        exceeds ``min_log_ratio`` (see Notes). Stricter: on 700 PBMCs at ``np.log(1.5)`` it
        kept less than half of the default's power.
    groupby
        Column of ``adata.obs`` (e.g. cell type) to summarise the scores by.
    s_min
        Width of the Gaussian kernel that smooths both densities, in standard deviations of
        the standardised representation (the noise-at-data schedule's ``s_min``; with the model
        option ``scaling="global"``, in units of the representation's root mean variance, see
        Notes). Abundance is compared at the scale of cell states rather than single cells: on semi-synthetic
        labels on 700 and 20,000 cells, 0.4 detected differentially abundant cells with a higher
        precision-recall AUC than the model's default 0.05 at every effect size from 0.05 to
        0.45 (benchmarks, section 3), at the price of biased per-cluster means. Use ``0.05`` for
        a closer fit. Must lie in ``[0, 1)``; ignored with ``model``.
    base
        Closed-form field that the network corrects (see "How it works"). ``"auto"`` (default):
        without ``sample_key``, ``"mixture"``: Gaussian cell states that all conditions share,
        each condition with its own weights, and the network trained for 100 steps (unless
        ``n_steps`` is given), so that it corrects the states without adding noise; with
        ``sample_key``, none, the model whose test over samples was measured calibrated.
        Without replicates the mixture made the log-ratios more accurate: on 700 PBMCs (3 seeds)
        it lowered the sd on random labels from 0.196 to 0.096 (MELD 0.093) and raised the
        precision-recall AUC of semi-synthetic effects at delta 0.1 / 0.2 from 0.829 / 0.921
        to 0.907 / 0.976 (MELD 0.994 / 0.999), and with ``condition_weight="auto"`` to 0.048
        and 0.946 / 0.981; on 20,000 cells in 10 PCs from 0.836 / 0.943 to 0.950 / 0.992 at
        delta 0.05 / 0.1 (MELD 0.913 / 0.993) in two thirds of the time.
        Where a condition moves cells rather than changing how many each state holds (two
        Gaussians, one shifted), its log-ratios are flatter than the exact ones (R² 0.91 and
        0.73 for a small and a large shift, against 0.96-0.97 with ``None``), though they order
        the cells nearly as well (correlation 0.98-0.99): for a condition that moves every
        cell, such as a stimulation, pass ``"mixture"``, which trains for the model's default
        steps (R² 0.96 and 0.95, and on random labels the default's noise, at 3-4 times its
        time), or ``None``, the network alone (the default of scratio 0.1).
        ``"gaussian"``: one Gaussian per condition. Ignored with ``model``.
    bandwidth
        Width of the Gaussian kernel, in the same units, that smooths both densities when the
        cells are scored: the model's densities at the time of the flow where they are the
        data's smoothed by ``bandwidth`` rather than ``s_min``, with no retraining (see "How it
        works"). At least the model's ``s_min``; ``None`` scores at ``s_min``. ``"auto"``
        (default) chooses among ``s_min``, 0.5, 0.6, 0.8, 1.0, 1.3 and 1.6 the width whose ratios best
        predict the conditions of the cells held out of training (their mean log-likelihood
        under ``P(condition | x)``, a proper score). It scores them from the narrowest and stops
        once two in a row score below the best by more than two standard errors: the score
        rises while smoothing removes noise and falls once it blurs the difference. The scores
        are written to
        ``uns[key_added]["bandwidth_selection"]``, the width to ``params["bandwidth_used"]``; without
        held-out cells (a passed ``model``, ``validation_fraction=0``), or with ``calibrate=True``
        (whose scale those cells fit), it uses 0.6. On 700 PBMCs with semi-synthetic labels
        (``base=None``), 0.6 predicted held-out labels best on average at every
        effect size, cut the error against the true log-ratio by a quarter and the noise on
        random labels by 30% against 0.4; on 20,000 cells narrower kernels predict and detect
        better (benchmarks README, "Smoothing when scoring"). Scoring the held-out cells (a tenth of
        the cells) at up to seven widths costs up to 0.7 scoring passes (at both weights of
        ``condition_weight="auto"`` at once), of which the last pass reuses the chosen width's
        (it scores the other cells only); a number skips it.
    condition_weight
        With a base: how much of the network's own dependence on the condition the scores keep,
        in ``[0, 1]``. Under each condition the network's correction of the base is its
        correction under no condition plus ``condition_weight`` times the difference (see "How
        it works"). ``1``: the network as trained; ``0``: one correction for all conditions,
        which then differ only through the base (the mixture base: in how many cells each state
        holds). ``"auto"`` (default) scores the held-out cells at 0 and at 1, each at its own
        bandwidth, and keeps the network's dependence only where it predicts their conditions
        better than the base alone by more than one standard error of the paired difference (the
        one-standard-error rule by which the mixture's shrinkage is chosen; the held-out
        likelihood alone favoured 1 on almost every dataset, noise included). The choice is
        written to ``params["condition_weight_used"]`` and every candidate scored to
        ``uns[key_added]["bandwidth_selection"]``. Without held-out cells, without a base (so with
        ``sample_key``, by default) or with a network that does not see the condition, it is 1.
        On 700 PBMCs (3 seeds) ``"auto"`` lowered the random-label sd from 0.096 to 0.048 (MELD
        0.093; every seed below MELD's) and raised the precision-recall AUC at delta 0.1 / 0.2
        from 0.907 / 0.976 to 0.946 / 0.981 (MELD 0.994 / 0.999), at a root-mean-square error
        against the true log-ratio 2-6% higher; where a condition shifts cells it chose 1 (R²
        unchanged). Both weights come from one trajectory per held-out cell (it follows the field
        of no condition, which the weight leaves as it is), and where 0 is chosen the last pass
        needs the network once instead of once per condition.
    calibrate
        Multiply each target's log-ratios by one scale fitted on the cells held out of training
        (``validation_fraction`` of them, 10% by default), so that their size is what those
        cells' labels support (see Notes). Cancels noise: on random labels the scale is 0 in most
        runs. Ranks, and so detection, do not change unless the scale is 0. Needs at least 16 held-out cells
        (``validation_fraction`` in ``train_kwargs``); not with ``model`` or ``sample_key``.
    n_neighbors
        Average each cell's log-ratio over its ``n_neighbors`` nearest cells in the
        representation (itself included; Euclidean, scikit-learn), as MELD smooths over its cell
        graph: less noise per cell, at the price of blurring the boundaries between states.
        ``None`` (default): no averaging. On semi-synthetic labels on 700 PBMCs (``base=None``,
        all 50 PCs, 3 seeds), 15 raised the precision-recall AUC at every effect size
        (0.829 to 0.889 at delta 0.1, 0.921 to 0.954 at 0.2, 0.979 to 0.990 at 0.4) and cut the
        per-cell sd on random labels from 0.20 to 0.12 (benchmarks README, "Noise floor"). With
        ``calibrate=True`` the scale is fitted before averaging. Not with ``sample_key`` (the
        test compares per-cell densities).
    {common}

    Returns
    -------
    {returns}

    ``adata.obs[key_added]`` (one target) or ``adata.obs[f"{key_added}_{target}"]`` (several)
        ``float32`` log-ratios for every cell.
    ``adata.uns[key_added]["params"]``
        Tool, keys, ``reference``, ``targets``, ``groupby``, ``sample_key``, categories,
        representation, seed, schedule, training, solver, final loss, ``columns`` written and
        package version.
    ``adata.uns[key_added]["summary"]``
        One row per target: ``n_cells`` and ``mean`` over all cells, and ``n_cells_{c}``,
        ``mean_{c}`` over the cells of each condition ``c``.
    ``adata.uns[key_added]["groupby_summary"]``
        With ``groupby``: long table with columns ``[groupby, "target", "n_cells", "mean",
        "median", "mean_abs"]``.
    ``adata.obs[f"{{column}}_fdr"]`` and ``adata.obs[f"{{column}}_significant"]``
        With ``sample_key``, for each log-ratio column: ``float32`` q-values in ``[0, 1]`` and
        ``bool`` calls (``fdr < alpha``).
    ``adata.uns[key_added]["test"]``
        With ``sample_key``: ``statistic``, ``fdr_method``, ``samples`` and ``n_samples`` per
        condition, ``strata`` (the ``batch_key``), ``sample_normalization``, ``min_log_ratio``
        (the value used), ``treat``, ``alpha``, and per target ``n_permutations`` (assignments
        evaluated), ``exhaustive``, the ``columns`` written, ``n_significant`` and ``typical_log_ratio`` (the log-ratio the
        normalisation takes as unchanged, 0 with ``"none"``: a call is a change relative to it).
    ``adata.uns[key_added]["bandwidth_selection"]``
        With a choice to make (``bandwidth="auto"``, or ``condition_weight="auto"`` over a base)
        and held-out cells: one row per candidate scored, with its ``condition_weight``,
        ``bandwidth``, ``held_out_gain`` (nats per held-out cell against the prior) and whether it
        was ``chosen``.
    ``adata.uns[key_added]["calibration"]``
        With ``calibrate=True``, one row per target: the ``scale`` applied, the maximum-likelihood
        ``scale_mle``, its ``standard_error``, the ``shrink`` (standard errors subtracted), the
        ``offset`` (log prior odds) and the held-out ``n_cells`` of the two conditions.

    Notes
    -----
    **Significance across replicates.** For each target, a cell's statistic is the difference
    between its mean log-density under the target's samples and under the reference's,
    divided by its standard error between samples plus the median standard error (a moderated
    t, as SAM computes it). The null reassigns which samples are targets (within batches), never
    cells: cells are not replicates, and a test that permutes them calls differences between
    samples of one condition. Each assignment reuses the per-sample log-densities already
    computed, so the test costs no retraining. The false discovery rate is estimated from the
    permuted statistics of all cells pooled (as SAM does), which stays fine-grained with few
    samples; with ``n`` assignments no q-value falls below ``1 / n``, so 3 samples per
    condition (20 assignments) are the fewest that can reach ``alpha = 0.1``. Cells are then
    called only where the observed assignment is the most extreme of the 20 on one side, which
    in a dataset without any effect one assignment in ten is: repeated with every labelling of
    the samples of 43 simulated null datasets (with and without composition noise between
    samples), the default call called cells in at most 12.5% of labellings (none on 20,000 cells
    without composition noise), at most 0.5% of the cells on average (benchmarks README,
    "Relabelled nulls" and "A 1.5-fold threshold in the test"). A cell whose difference is at most
    ``min_log_ratio`` (1.5-fold by default) gets a statistic of 0, in the observed assignment and
    in every other alike (as SAM's fold-change criterion), so it is not called and the q-values
    estimate the false discovery rate of calls that need both. With ``treat=True`` each
    observed difference is instead first moved that much towards 0, so a cell whose change is
    exactly ``min_log_ratio`` is tested as an unchanged cell would be (McCarthy and Smyth's
    TREAT); cells that change less are called less often than ``alpha`` allows.

    A call means that the cell's abundance, relative to most cells' (``sample_normalization``),
    differs between conditions more than it does between samples. Densities themselves are
    relative: when one state expands in the target, every other state's share, and so its
    density and log-ratio, falls, even though its number of cells per sample did not change.
    The default normalisation calls the expanding state only, as count-based methods do;
    ``sample_normalization="none"`` calls the diluted states as depleted too.

    **Calibration.** A log-ratio plus the log prior odds ``log(n_target / n_reference)`` is the
    logit of the probability that a cell belongs to the target rather than the reference. On the
    held-out cells of the two conditions, ``calibrate=True`` fits the scale ``a >= 0`` of
    ``logit = a * log_ratio + log prior odds`` that best predicts their labels (logistic
    likelihood), and applies ``max(0, a - standard error)``: the scale the held-out cells support
    with some confidence. A faithful model gives a scale near 1, an overconfident one (many
    dimensions for few cells) less than 1, and log-ratios that do not predict the labels at all
    give 0, so every cell scores 0. With few held-out cells (70 of 700) a weak difference can
    also be scaled to 0; with thousands the scale is precise.

    **Scaling.** The model standardises each dimension of the representation, so ``s_min`` and
    ``bandwidth`` smooth every principal component alike relative to its spread. The model
    option ``scaling="global"`` scales all dimensions by one number instead, so the kernel is
    round in PCA space, as Euclidean neighbourhoods are, and the components that vary least
    are smoothed over most. On 700 PBMCs (3 seeds, ``base=None``) it lowered the noise sd on
    random labels from 0.196 to 0.081 (MELD 0.093) and raised the precision-recall AUC of
    semi-synthetic effects at delta 0.1 / 0.2 from 0.829 / 0.921 to 0.918 / 0.956; on 20,000
    cells in 50 PCs it lowered it (0.893 / 0.943 to 0.853 / 0.880), and across replicates on
    700 cells its calls were less calibrated (benchmarks README, "Scaling the representation").

    **The mixture base.** ``base="auto"`` without ``sample_key`` lets the conditions share
    Gaussian cell states and differ in how many cells each holds, with a network trained
    briefly on top. The base's divergence is exact in closed form, so Hutchinson's estimate
    only concerns the network's small correction: the default ``divergence="auto"`` takes it,
    with a probe per 16 dimensions, in more than 16 dimensions (on 20,000 cells in 20 PCs the
    same ranking, PR-AUC 0.999 at delta 0.1, in a third of the time), and
    ``divergence="hutchinson"`` in fewer (on 700 PBMCs in 10 PCs, a random-label sd of 0.104
    against 0.096, in 0.8 times the time). ``condition_weight="auto"`` drops the network's
    dependence on the condition where the held-out cells do not ask for it, so that the
    conditions differ only through the states' weights; the model option ``condition_dim=0``
    hides the condition from the network always: on 700 PBMCs both lowered the random-label sd
    to 0.048 and raised the PR-AUC at delta 0.1 to 0.946, but where a condition moves cells
    ``condition_dim=0``'s log-ratios spread a third to two fifths as wide as the exact ones (R²
    0.40-0.54), though they still order the cells (correlation 0.88-0.96), where ``"auto"``
    kept the network in every run. With ``sample_key`` a mixture base is not calibrated: the test called cells in
    2 to 4 of 10 composition-noise nulls (benchmarks README, "A mixture base"), and the tool
    warns.

    Examples
    --------
    >>> sr.tl.differential_abundance(adata, "treatment", reference="control", target="IFNg")
    >>> sc.pl.umap(adata, color="scratio_da", cmap="RdBu_r", vcenter=0)
    """
    targets = None if target is None else [str(t) for t in np.atleast_1d(np.asarray(target, dtype=object))]
    model_base = _base_for(base, sample_key)
    # with the base picked here, the network is trained briefly: it corrects the base without adding noise
    n_steps = (
        AUTO_BASE_N_STEPS if base == AUTO_BASE and model_base and options.n_steps is None else options.n_steps
    )
    options = dataclasses.replace(
        options, model_kwargs={"s_min": s_min, "base": model_base, **options.model_kwargs}, n_steps=n_steps
    )
    if sample_key is None and batch_key is not None:
        raise ValueError("`batch_key` sets the strata of the test over samples; pass `sample_key` too.")
    if not 0 < alpha < 1:
        raise ValueError(f"`alpha` must lie in (0, 1), got {alpha}.")
    if n_permutations < 2:
        raise ValueError(f"`n_permutations` must be at least 2, got {n_permutations}.")
    check_sample_normalization(sample_normalization)
    _check_condition_weight(condition_weight)
    min_log_ratio = _min_log_ratio(min_log_ratio, treat, sample_key)
    if calibrate:
        _check_calibration(adata.n_obs, options, sample_key)
    if n_neighbors is not None:
        _check_neighbours(n_neighbors, adata.n_obs, sample_key)
    if sample_key is not None:
        _warn_if_test_uncalibrated(options)
    keys = [condition_key, *(k for k in (sample_key, batch_key) if k is not None)]
    run = ToolRun.prepare(
        adata, DIFFERENTIAL_ABUNDANCE, options, keys=keys, compared_key=condition_key,
        model_keys=[sample_key or condition_key], required={condition_key: [reference, *(targets or [])]},
    )  # fmt: skip
    reference, conditions = str(reference), run.categories[condition_key]
    targets = list(dict.fromkeys(targets or [c for c in conditions if c != reference]))
    if reference in targets:
        raise ValueError(f"`target` must differ from `reference` ({reference!r}); got {targets}.")
    if groupby is not None:
        run.labels(groupby)  # present, without missing values
    columns = {t: options.key_added if len(targets) == 1 else f"{options.key_added}_{t}" for t in targets}
    test_columns = {t: (f"{c}_fdr", f"{c}_significant") for t, c in columns.items()} if sample_key else {}
    run.check_columns([*columns.values(), *(c for pair in test_columns.values() for c in pair)])
    groups = designs = None
    if sample_key:
        groups = _sample_groups(run, condition_key, sample_key, [reference, *targets])
        strata = _sample_strata(run, sample_key, batch_key) if batch_key else None
        designs = {t: SampleDesign(groups[reference], groups[t], strata) for t in targets}
        _check_replicates(designs, groups, reference, condition_key, sample_key, alpha, n_permutations)
    else:
        logger.info(
            "differential_abundance: no `sample_key`, so no significance: calling cells needs replicate "
            "samples per condition (pass `sample_key`)"
        )

    _check_bandwidth(bandwidth, run.model.path)
    model = run.fit()
    compared = [reference, *targets]
    # Log-likelihoods cost no more than log-ratios unless the network drops out of the ratios;
    # then they also tell which cells lie outside the training data, with no pass of their own.
    weights = _condition_weights(condition_weight, model.network)
    absolute = not model.network.cancels_from_ratios(max(weights))

    def condition_log_densities(x: np.ndarray, width: float | None, weights: Sequence[float]):
        """Per condition weight: ``log p(x | c)`` of every compared condition at one bandwidth, and the per-sample frame.

        Several weights come from one trajectory per cell. Without ``absolute`` both less
        ``log p(x)``, common to every condition and sample; only their differences enter the
        log-ratios and the test.
        """
        score = model.category_log_likelihoods if absolute else model.category_log_ratios
        key, names = (condition_key, compared) if groups is None else (sample_key, None)
        frame = score(
            x, key, categories=names, condition_weights=weights, **{**run.scoring, "bandwidth": width}
        )
        out = {}
        for weight in weights:
            at_weight = frame[weight]
            if groups is None:
                out[weight] = {c: at_weight[c].to_numpy(np.float64) for c in compared}, None
            else:
                # each condition's density is the equal-weight mixture of its samples' densities
                out[weight] = (
                    {
                        c: logsumexp(at_weight[s].to_numpy(np.float64), axis=1, b=1 / len(s))
                        for c, s in groups.items()
                    },
                    at_weight,
                )
        return out

    if bandwidth == AUTO_BANDWIDTH or len(weights) > 1:
        # a passed model's held-out cells need not be these; with calibrate=True they fit the scale,
        # and a choice made on them too would inflate it
        held_out = model.held_out if options.model is None and not calibrate else None
        bandwidth_used, weight_used, selection, held = _select_scoring(
            condition_log_densities, run.x, run.labels(condition_key), held_out, compared,
            bandwidth=bandwidth, weights=weights, s_min=model.path.s_min,
        )  # fmt: skip
    else:
        bandwidth_used, weight_used, selection, held = bandwidth, weights[0], None, None

    def at_choice(x: np.ndarray, width: float | None):
        return condition_log_densities(x, width, (weight_used,))[weight_used]

    if held is None:
        log_p, per_sample = at_choice(run.x, bandwidth_used)
    else:
        log_p, per_sample = held.completed(at_choice, run.x)
    support = None
    if absolute and held is not None:
        support = _compared_support(log_p, held.log_p, run.labels(condition_key), compared, bandwidth_used)
    scores = {t: np.asarray(log_p[t] - log_p[reference], dtype=np.float64) for t in targets}
    calibration = None
    if calibrate:
        calibration = _calibrate(scores, run.labels(condition_key), model.held_out, reference)
        scores = {t: v * calibration.loc[t, "scale"] for t, v in scores.items()}
    if n_neighbors is not None:
        scores = _neighbour_means(scores, run.x, n_neighbors)
    scores = {t: v.astype(np.float32) for t, v in scores.items()}
    calls, test = {}, None
    if designs:
        rng = np.random.default_rng(options.random_state)
        test = {
            "statistic": STATISTIC,
            "fdr_method": FDR_METHOD,
            "samples": groups,
            "n_samples": {c: len(s) for c, s in groups.items()},
            "strata": batch_key,
            "sample_normalization": sample_normalization,
            "min_log_ratio": min_log_ratio,
            "treat": treat,
            "alpha": alpha,
            "n_permutations": {},
            "exhaustive": {},
            "columns": {},
            "n_significant": {},
            "typical_log_ratio": {},
        }
        for t, design in designs.items():
            log_p_samples = per_sample[design.samples].to_numpy(np.float64)
            result = sample_permutation_test(
                log_p_samples,
                design,
                n_permutations=n_permutations,
                rng=rng,
                normalization=sample_normalization,
                min_log_ratio=min_log_ratio,
                treat=treat,
            )
            fdr_column, significant_column = test_columns[t]
            calls[fdr_column] = result.q.astype(np.float32)
            calls[significant_column] = calls[fdr_column] < alpha  # the written q-values decide
            test["n_permutations"][t] = result.n_assignments
            test["exhaustive"][t] = result.n_assignments == design.n_assignments
            test["columns"][t] = [fdr_column, significant_column]
            test["n_significant"][t] = int(calls[significant_column].sum())
            test["typical_log_ratio"][t] = result.typical_log_ratio

    tables = {Uns.SUMMARY: _summary(scores, run.labels(condition_key), conditions)}
    if test is not None:
        tables[Uns.TEST] = test
    if calibration is not None:
        tables[Uns.CALIBRATION] = calibration
    if selection is not None:
        tables[Uns.BANDWIDTH_SELECTION] = selection
    if groupby:
        by = {groupby: run.labels(groupby)}
        per_target = [
            summarise(v, by, ("n_cells", "mean", "median", "mean_abs")).assign(target=t)
            for t, v in scores.items()
        ]
        tables[Uns.GROUPBY_SUMMARY] = pd.concat(per_target, ignore_index=True)[
            [groupby, "target", "n_cells", "mean", "median", "mean_abs"]
        ]
    params = {
        "condition_key": condition_key,
        "reference": reference,
        "targets": targets,
        "groupby": groupby,
        "sample_key": sample_key,
        "batch_key": batch_key,
        "base": base,
        "base_used": model.network.config.get("base"),  # a passed model's own
        "bandwidth": bandwidth,
        "bandwidth_used": bandwidth_used,
        "condition_weight": condition_weight,
        "condition_weight_used": weight_used,
        "calibrate": calibrate,
        "n_neighbors": n_neighbors,
        "categories": {k: v for k, v in run.categories.items() if k in (condition_key, sample_key)},
        **({"samples": groups} if groups else {}),
    }
    ratios = {columns[t]: f"log p(x | {t}) / p(x | {reference})" for t in targets}
    return run.write(
        {columns[t]: v for t, v in scores.items()}, tables, params, ratios, other=calls, support=support
    )


def _base_for(base: str | None, sample_key: str | None) -> str | None:
    """The model's ``base``: ``"auto"`` is a mixture base without ``sample_key`` and none with it."""
    if isinstance(base, str) and base == AUTO_BASE:
        return None if sample_key else "mixture"
    if base not in BASES:  # the model's choices, and the tool's own default
        raise ValueError(
            f"Unknown base {base!r}; choose one of {BASES} or {AUTO_BASE!r} (the default: a mixture base "
            "without `sample_key`, none with it)."
        )
    return base


def _check_bandwidth(bandwidth: float | str | None, path: GaussianPath) -> None:
    """``None``, ``"auto"`` or a number at least the model's ``s_min``, before training."""
    if bandwidth is None or (isinstance(bandwidth, str) and bandwidth == AUTO_BANDWIDTH):
        return
    if isinstance(bandwidth, str):
        raise ValueError(f"`bandwidth` must be a number, {AUTO_BANDWIDTH!r} or None, got {bandwidth!r}.")
    path.smoothing_time(bandwidth)


@dataclasses.dataclass(frozen=True)
class ScoredRows:
    """What ``condition_log_densities`` gave some rows of the cells at one width: log-densities and per-sample frame."""

    rows: np.ndarray
    width: float
    log_p: dict[str, np.ndarray]
    per_sample: pd.DataFrame | None

    def completed(self, condition_log_densities, x: np.ndarray):
        """The log-densities and per-sample frame of every row of ``x`` at :attr:`width`, scoring the other rows only.

        Each cell's values depend on the cell alone, so these rows keep theirs.
        """
        others = np.ones(len(x), dtype=bool)
        others[self.rows] = False
        others_log_p, others_per_sample = condition_log_densities(x[others], self.width)

        def merged(values: np.ndarray, other_values: np.ndarray) -> np.ndarray:
            out = np.empty((len(x), *values.shape[1:]), dtype=values.dtype)
            out[self.rows], out[others] = values, other_values
            return out

        log_p = {c: merged(v, others_log_p[c]) for c, v in self.log_p.items()}
        if self.per_sample is None:
            return log_p, None
        values = merged(self.per_sample.to_numpy(), others_per_sample[self.per_sample.columns].to_numpy())
        return log_p, pd.DataFrame(values, columns=self.per_sample.columns)


def _condition_weights(condition_weight: float | str, network) -> tuple[float, ...]:
    """The condition weights to choose among: the candidates for ``"auto"`` where a choice exists, else the one given."""
    if isinstance(condition_weight, str):
        # without a base a weight only shrinks every ratio; a network blind to the condition has none to weigh
        return (
            CONDITION_WEIGHT_CANDIDATES
            if network.fitted_base is not None and network.sees_conditions
            else (1.0,)
        )
    return (float(condition_weight),)


def _check_condition_weight(condition_weight: float | str) -> None:
    """``"auto"`` or a number in ``[0, 1]``, before training."""
    if isinstance(condition_weight, str) and condition_weight == AUTO_CONDITION_WEIGHT:
        return
    if not (is_finite_number(condition_weight) and 0 <= condition_weight <= 1):
        raise ValueError(
            f"`condition_weight` must be a number in [0, 1] or {AUTO_CONDITION_WEIGHT!r}, got {condition_weight!r}."
        )


def _select_scoring(
    condition_log_densities, x: np.ndarray, labels: np.ndarray, held_out: np.ndarray | None,
    conditions: Sequence[str], *, bandwidth: float | str | None, weights: Sequence[float], s_min: float,
) -> tuple[float | None, float, pd.DataFrame | None, ScoredRows | None]:  # fmt: skip
    """The bandwidth (with ``bandwidth="auto"``) and the condition weight (among ``weights``) that score the cells.

    For each weight the width is chosen as :func:`_select_bandwidth` chooses it, or is the one
    given. Among the weights, the least whose held-out gain at its width lies within one
    standard error of the best's (of their paired difference over the held-out cells): the
    network's own dependence on the condition is kept only where the held-out labels clearly
    ask for it, as the mixture base's shrinkage is chosen. Returns the width, the weight, the
    table of every candidate scored and what the held-out cells scored at the choice (the last
    two ``None`` without enough held-out cells, when the width falls back to
    :data:`FALLBACK_BANDWIDTH` and the weight to 1, the network as trained).
    """
    auto_width = isinstance(bandwidth, str)
    held = np.empty(0, dtype=int) if held_out is None else held_out[np.isin(labels[held_out], conditions)]
    if len(held) < MIN_VALIDATION_CELLS:
        width = max(FALLBACK_BANDWIDTH, s_min) if auto_width else bandwidth
        weight = max(weights)
        logger.info(
            f"differential_abundance: {len(held)} held-out cells of the compared conditions to choose the "
            f"bandwidth and condition weight from (at least {MIN_VALIDATION_CELLS}; none with "
            "`validation_fraction=0`, a passed `model` or `calibrate=True`); "
            f"using bandwidth {width} and condition weight {weight:g}"
        )
        return width, weight, None, None
    truth = pd.Categorical(labels, categories=conditions).codes[held]
    log_prior = _log_shares(labels, conditions)
    held_x = x[held]
    by_width = {}  # every weight's values at a width come from one pass over the held-out cells

    def scored_at(weight: float):
        def log_densities(rows_x: np.ndarray, width: float | None):
            if width not in by_width:
                by_width[width] = condition_log_densities(rows_x, width, weights)
            return by_width[width][weight]

        return log_densities

    found = {}  # per weight: the held-out cells' gains at its width, its table of widths, what they scored
    for weight in weights:
        at_weight = scored_at(weight)
        if auto_width:
            _, table, scored = _select_bandwidth(at_weight, x, labels, held, conditions, s_min)
        else:
            scored, table = ScoredRows(held, bandwidth, *at_weight(held_x, bandwidth)), None
        gains = _held_out_gains(scored.log_p, truth, log_prior, conditions)
        if table is None:
            table = pd.DataFrame(
                {"bandwidth": [bandwidth or s_min], "held_out_gain": [gains.mean()], "chosen": [True]}
            )
        found[weight] = (gains, table, scored)
    best = max(found, key=lambda w: found[w][0].mean())
    weight = next(w for w in sorted(found) if not _trails(found[w][0], found[best][0], 1))
    gains, _, scored = found[weight]
    table = pd.concat(
        [t.assign(condition_weight=w, chosen=t["chosen"] & (w == weight)) for w, (_, t, _) in found.items()],
        ignore_index=True,
    )[["condition_weight", "bandwidth", "held_out_gain", "chosen"]]
    chosen = f"bandwidth {scored.width}" + (f" and condition weight {weight:g}" if len(weights) > 1 else "")
    logger.info(
        f"differential_abundance: {chosen} chosen by the labels of {len(held)} held-out cells "
        f"({gains.mean():.3g} nats per cell against the prior)"
    )
    return scored.width, weight, table, scored


def _select_bandwidth(
    condition_log_densities, x: np.ndarray, labels: np.ndarray, held: np.ndarray,
    conditions: Sequence[str], s_min: float,
) -> tuple[float, pd.DataFrame, ScoredRows]:  # fmt: skip
    """The bandwidth whose ``P(condition | x)`` gives the held-out cells' labels the highest likelihood.

    Also returns the table of the candidates scored and what the held-out cells (``held``, rows
    of the compared ``conditions``, at least :data:`MIN_VALIDATION_CELLS`) scored at the chosen
    bandwidth. Candidates are scored from the narrowest until :data:`BANDWIDTH_PATIENCE` in a
    row score clearly below the best.

    A candidate's score is the mean log-likelihood of the held-out cells' conditions under the
    posterior over the compared conditions, with their shares in the data as prior, minus that
    of the prior alone: nats per cell that the smoothed ratios add.
    """
    candidates = [s_min, *(h for h in BANDWIDTH_CANDIDATES if h > s_min)]
    codes = pd.Categorical(labels, categories=conditions).codes  # -1 outside the compared conditions
    log_prior = _log_shares(labels, conditions)
    truth, held_x = codes[held], x[held]
    cell_gains, scored, best = [], [], 0
    for width in candidates:  # narrowest first
        log_p, per_sample = condition_log_densities(held_x, width)
        cell_gains.append(_held_out_gains(log_p, truth, log_prior, conditions))
        scored.append(ScoredRows(held, width, log_p, per_sample))
        latest = len(cell_gains) - 1
        if cell_gains[latest].mean() > cell_gains[best].mean():
            best = latest
        elif latest - best >= BANDWIDTH_PATIENCE and all(
            _trails(cell_gains[j], cell_gains[best], 2)
            for j in range(latest - BANDWIDTH_PATIENCE + 1, latest + 1)
        ):
            break
    gains = [float(g.mean()) for g in cell_gains]
    table = pd.DataFrame(
        {
            "bandwidth": candidates[: len(gains)],
            "held_out_gain": gains,
            "chosen": np.arange(len(gains)) == best,
        }
    )
    return candidates[best], table, scored[best]


def _held_out_gains(
    log_p: dict[str, np.ndarray], truth: np.ndarray, log_prior: np.ndarray, conditions: Sequence[str]
) -> np.ndarray:
    """Per cell: the log-probability of its condition (code ``truth``) under ``P(condition | x)`` less its prior's.

    Nats that the ratios add to the prior in predicting the cell's condition; the posterior is
    over ``conditions`` with the prior ``log_prior``.
    """
    posterior = log_softmax(np.column_stack([log_p[c] for c in conditions]) + log_prior, axis=1)
    return posterior[np.arange(len(truth)), truth] - log_prior[truth]


def _trails(cell_gains: np.ndarray, best: np.ndarray, n_standard_errors: float) -> bool:
    """Whether a candidate's held-out gains trail the best's by more than ``n_standard_errors`` standard errors of their paired difference."""
    difference = best - cell_gains
    return bool(difference.mean() > n_standard_errors * difference.std(ddof=1) / np.sqrt(len(difference)))


def _log_shares(labels: np.ndarray, conditions: Sequence[str]) -> np.ndarray:
    """``log`` of each compared condition's share of the cells of the compared conditions."""
    counts = np.array([np.sum(labels == c) for c in conditions], dtype=np.float64)
    return np.log(counts / counts.sum())


def _compared_support(
    log_p: dict[str, np.ndarray], held_log_p: dict[str, np.ndarray], labels: np.ndarray,
    conditions: Sequence[str], bandwidth: float,
) -> MeasuredSupport:  # fmt: skip
    """Cells outside the training data by their likelihood under the compared conditions, as scored.

    The likelihood is the mixture of the compared conditions' densities, weighted by their
    shares of the cells; the threshold comes from the held-out cells of those conditions at the
    same bandwidth (:class:`~scratio.Support`), so no pass of its own is needed.
    """
    log_shares = _log_shares(labels, conditions)

    def log_mixture(values: dict[str, np.ndarray]) -> np.ndarray:
        return logsumexp(np.column_stack([values[c] for c in conditions]) + log_shares, axis=1)

    return MeasuredSupport(
        Support.from_log_likelihoods(log_mixture(held_log_p), "held-out"),
        log_mixture(log_p),
        f"log p(x) under the compared conditions' mixture, at bandwidth {bandwidth}",
    )


def _check_calibration(n_cells: int, options: ToolOptions, sample_key: str | None) -> None:
    """``calibrate=True`` needs a model trained in this call with held-out cells, and no samples."""
    if options.model is not None:
        raise ValueError(
            "`calibrate=True` fits a scale on the cells held out of training, which a passed `model` does "
            "not record; pass `model=None` to train one here."
        )
    if sample_key is not None:
        raise ValueError(
            "`calibrate=True` predicts each cell's condition, but with `sample_key` the log-ratios compare "
            "equal-weight mixtures of samples; pass one of the two."
        )
    training = TrainingOptions.from_kwargs(n_steps=options.n_steps, **options.training)
    if training.validation_size(n_cells) == 0:
        raise ValueError(
            f"`calibrate=True` needs cells held out of training, but {n_cells} cells with "
            f"validation_fraction={training.validation_fraction} hold out none (fewer than 16). "
            "Raise `validation_fraction` in `train_kwargs`, or pass `calibrate=False`."
        )


def _min_log_ratio(min_log_ratio: float | None, treat: bool, sample_key: str | None) -> float:
    """The threshold the calls use: a finite, non-negative one, set only for the test over samples."""
    if treat and sample_key is None:
        raise ValueError("`treat` tests the change across replicate samples; pass `sample_key` too.")
    if min_log_ratio is None:
        return DEFAULT_MIN_LOG_RATIO
    if not (is_finite_number(min_log_ratio) and min_log_ratio >= 0):
        raise ValueError(
            f"`min_log_ratio` must be a finite number >= 0 (nats; e.g. np.log(1.5)), got {min_log_ratio!r}."
        )
    if min_log_ratio > 0 and sample_key is None:
        raise ValueError(
            "`min_log_ratio` sets the smallest change the test over samples calls; pass `sample_key` too."
        )
    return float(min_log_ratio)


def _check_neighbours(n_neighbors: int, n_cells: int, sample_key: str | None) -> None:
    if not (is_whole_number(n_neighbors) and 1 <= n_neighbors <= n_cells):
        raise ValueError(
            f"`n_neighbors` must be an integer from 1 to the number of cells ({n_cells}), got {n_neighbors!r}; "
            "pass `None` for no averaging."
        )
    if sample_key is not None:
        raise ValueError(
            "`n_neighbors` averages the log-ratios, but the test over samples (`sample_key`) calls each cell "
            "from its own densities; pass one of the two."
        )


def _warn_if_test_uncalibrated(options: ToolOptions) -> None:
    """The test over samples was measured not to be calibrated with a mixture base."""
    config = options.model.network.config if options.model is not None else options.model_kwargs
    if config.get("base") == "mixture":
        warnings.warn(
            'differential_abundance: with `base="mixture"` the test over samples is not calibrated: on 700 '
            "PBMCs it called cells in 2 to 4 of 10 null datasets with composition noise, where the model "
            'without a base calls in 1 (benchmarks README, "A mixture base"). Leave `base` at "auto" (no base '
            "with `sample_key`) to use the test.",
            UserWarning,
            stacklevel=4,  # the user, the public tool, its body, here
        )


def _neighbour_means(scores: dict[str, np.ndarray], x: np.ndarray, n_neighbors: int) -> dict[str, np.ndarray]:
    """Each cell's scores averaged over its ``n_neighbors`` nearest cells in ``x`` (itself included)."""
    from sklearn.neighbors import NearestNeighbors

    neighbours = NearestNeighbors(n_neighbors=n_neighbors).fit(x).kneighbors(x, return_distance=False)
    logger.info(f"differential_abundance: log-ratios averaged over each cell's {n_neighbors} nearest cells")
    return {t: v[neighbours].mean(axis=1) for t, v in scores.items()}


def _calibrate(
    scores: dict[str, np.ndarray], labels: np.ndarray, held_out: np.ndarray, reference: str
) -> pd.DataFrame:
    """Per target, the held-out scale of its log-ratios (:func:`~scratio.core.calibration.fit_logit_scale`)."""
    rows = {}
    for target, values in scores.items():
        n_target, n_reference = int(np.sum(labels == target)), int(np.sum(labels == reference))
        held = held_out[np.isin(labels[held_out], [target, reference])]
        fit = fit_logit_scale(values[held], labels[held] == target, np.log(n_target / n_reference))
        logger.info(
            f"differential_abundance: {target!r} log-ratios scaled by {fit.scale:.3g} (held-out fit "
            f"{fit.scale_mle:.3g} +- {fit.standard_error:.2g} on {fit.n_cells} cells)"
        )
        rows[target] = fit.to_dict()
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("target")


def _sample_groups(
    run: ToolRun, condition_key: str, sample_key: str, conditions: Sequence[str]
) -> dict[str, list[str]]:
    """The samples of each condition; every sample must belong to exactly one condition."""
    pairs = pd.crosstab(run.labels(sample_key), run.labels(condition_key)) > 0
    shared = pairs.index[pairs.sum(axis=1) > 1]
    if len(shared):
        examples = {s: list(pairs.columns[pairs.loc[s]]) for s in shared[:3]}
        raise ValueError(
            f"Samples of `adata.obs[{sample_key!r}]` must each belong to one condition of "
            f"`adata.obs[{condition_key!r}]`, but {list(shared)} span several (e.g. {examples}). "
            f"Fix the annotation or give each sample x condition its own `{sample_key}` label."
        )
    return {c: [str(s) for s in pairs.index[pairs[c]]] for c in conditions}


def _sample_strata(run: ToolRun, sample_key: str, batch_key: str) -> dict[str, str]:
    """The batch of each sample; every sample must lie in exactly one batch."""
    pairs = pd.crosstab(run.labels(sample_key), run.labels(batch_key)) > 0
    shared = pairs.index[pairs.sum(axis=1) > 1]
    if len(shared):
        raise ValueError(
            f"Samples of `adata.obs[{sample_key!r}]` must each lie in one batch of `adata.obs[{batch_key!r}]`, "
            f"but {list(shared)} span several. Give each sample x batch its own `{sample_key}` label, "
            "or pass `batch_key=None`."
        )
    return {str(s): str(pairs.columns[pairs.loc[s]][0]) for s in pairs.index}


def _check_replicates(
    designs: dict[str, SampleDesign],
    groups: dict[str, list[str]],
    reference: str,
    condition_key: str,
    sample_key: str,
    alpha: float,
    n_permutations: int,
) -> None:
    """At least two samples per compared condition; warn when no q-value can fall below ``alpha``."""
    few = {c: s for c, s in groups.items() if len(s) < 2}
    if few:
        raise ValueError(
            f"The test over samples needs at least two samples of `adata.obs[{sample_key!r}]` per condition of "
            f"`adata.obs[{condition_key!r}]`, but {few} have fewer. Add replicates, or pass `sample_key=None` "
            "for log-ratios without significance."
        )
    for target, design in designs.items():
        n_assignments = min(design.n_assignments, n_permutations)
        if 1 / n_assignments >= alpha:
            warnings.warn(
                f"{target!r} against {reference!r}: {len(design.target)} and {len(design.reference)} samples "
                f"allow {n_assignments} assignments, so no q-value falls below 1/{n_assignments} >= alpha = "
                f"{alpha} and no cell can be called. Add replicates (3 per condition reach 0.05).",
                UserWarning,
                stacklevel=4,  # the user, the public tool, its body, here
            )


def _summary(
    scores: dict[str, np.ndarray], cell_conditions: np.ndarray, conditions: list[str]
) -> pd.DataFrame:
    """Per target: number of cells and mean log-ratio over all cells and per condition."""
    rows = {}
    for target, values in scores.items():
        row = {"n_cells": len(values), "mean": float(values.mean())}
        for condition in conditions:
            mask = cell_conditions == condition
            row[f"n_cells_{condition}"] = int(mask.sum())
            row[f"mean_{condition}"] = float(values[mask].mean()) if mask.any() else np.nan
        rows[target] = row
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("target")
