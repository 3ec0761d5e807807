"""A closed-form base field: the exact velocity and score of a Gaussian fit to each group of cells.

With a base the network learns only the residual of the fields around it. Learned scores are
dominated by their Gaussian part at high noise, and a Gaussian per condition is the whole answer
when the conditions are Gaussian; the network then learns what is not.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import nn

from scratio._settings import logger

from .paths import GaussianPath

#: Shares of each group's own fit, against the pooled one, among which training chooses.
SHRINKAGE_CANDIDATES = (0.0, 0.25, 0.5, 0.75, 1.0)
#: Smallest variance of a fit, relative to its largest.
MIN_VARIANCE = 1e-4
#: Most cells whose ``(cells, Gaussians, d)`` intermediates are formed at once. Each cell's
#: fields are its own, so the chunks change no value; small intermediates stay in the processor's
#: cache (a training batch of 1,024 cells: half the time in one piece; benchmarks/base_timing.py).
ROWS_PER_CHUNK = 256


class GaussianBase(nn.Module):
    """Velocity and score of ``N(mean_g, cov_g)`` per group of cells, carried along a Gaussian path.

    A group is one combination of condition codes seen in training. A query code with some keys
    set to null is the mixture of the groups that agree on its other keys, weighted by their
    numbers of cells; its fields are the responsibility-weighted averages of theirs (exact for
    the mixture). A code that matches no group gets the mixture of all groups.

    Each group's mean and covariance are ``pooled + shrinkage * (own - pooled)``: ``0`` gives
    every group the pooled Gaussian (the base then adds nothing to any log-ratio), ``1`` each
    group its own fit. :meth:`fit` chooses the shrinkage by the
    held-out log-likelihood of the groups, a proper score of how well the base tells them apart.

    Parameters
    ----------
    n_categories
        Number of categories of each condition key; code ``n_categories[k]`` is the null entry.
    """

    def __init__(self, n_categories: Sequence[int] = ()):
        super().__init__()
        self.register_buffer("null_codes", torch.tensor([int(n) for n in n_categories], dtype=torch.int64))
        self.register_buffer("group_codes", torch.zeros(0, len(n_categories), dtype=torch.int64))
        for name in ("means", "eigenvectors", "eigenvalues", "log_weights"):
            self.register_buffer(name, torch.zeros(0))
        self.register_buffer("path_noise", torch.zeros(2))  # s_min and s_path of the path fitted for
        self.register_buffer("shrinkage", torch.tensor(float("nan")))
        # Products of the Gaussians that every evaluation of the fields reads, formed once per fit.
        for name in ("rotated_means", "rotation", "rotation_back"):
            self.register_buffer(name, torch.zeros(0), persistent=False)
        # A saved base has as many groups as it was fitted on: take the saved buffers' shapes.
        self.register_load_state_dict_pre_hook(self._resize_buffers)
        self.register_load_state_dict_post_hook(self._set_rotations_after_loading)

    def _resize_buffers(self, module, state_dict, prefix, *args) -> None:
        for name, buffer in self.named_buffers(recurse=False):
            saved = state_dict.get(prefix + name)
            if saved is not None and saved.shape != buffer.shape:
                setattr(self, name, torch.empty_like(saved, dtype=buffer.dtype))

    def _set_rotations_after_loading(self, module, incompatible_keys) -> None:
        self._set_rotations()

    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` has set the groups."""
        return len(self.means) > 0

    @property
    def path(self) -> GaussianPath:
        """The path the base was fitted for."""
        s_min, s_path = self.path_noise.tolist()
        return GaussianPath(s_min=s_min, s_path=s_path)

    def fit(
        self,
        x: torch.Tensor,
        codes: torch.Tensor,
        path: GaussianPath,
        *,
        held_out_x: torch.Tensor | None = None,
        held_out_codes: torch.Tensor | None = None,
    ) -> GaussianBase:
        """Fit the base to each group of ``codes`` in ``x``; choose how far it separates them on the held-out cells.

        Parameters
        ----------
        x, codes
            ``(n, d)`` training cells (standardised) and their ``(n, n_keys)`` condition codes.
        path
            The path along which the fields are carried (the model's).
        held_out_x, held_out_codes
            Cells not trained on, to choose the shrinkage among :data:`SHRINKAGE_CANDIDATES`.
            Without them each group keeps its own fit (shrinkage 1). A :class:`MixtureBase`
            cross-validates on the training cells instead and does not use them.

        Returns
        -------
        The base itself, fitted.
        """
        group_codes, group_of_cell, counts = np.unique(
            codes.cpu().numpy(), axis=0, return_inverse=True, return_counts=True
        )
        self.group_codes = torch.as_tensor(group_codes, dtype=torch.int64)
        self.log_weights = torch.log(torch.as_tensor(counts / counts.sum(), dtype=torch.float32))
        self.path_noise = torch.tensor([path.s_min, path.s_path], dtype=torch.float32)
        held_out = None
        if held_out_x is not None and len(held_out_x) and len(group_codes) > 1:
            held_out = (held_out_x, held_out_codes)
        self._fit_groups(x.detach().cpu().double().numpy(), group_of_cell.ravel(), counts, held_out)
        return self

    def _fit_groups(self, x64: np.ndarray, group_of_cell: np.ndarray, counts: np.ndarray, held_out) -> None:
        """Set each group's Gaussian, shrunk by the choice of the held-out cells (``held_out``, or ``None``)."""
        pooled_mean, pooled_cov = x64.mean(0), _covariance(x64, np.eye(x64.shape[1]))
        own = [(x64[group_of_cell == g].mean(0), _covariance(x64[group_of_cell == g], pooled_cov))
               for g in range(len(counts))]  # fmt: skip

        def gaussians(shrinkage):
            means = np.stack([pooled_mean + shrinkage * (m - pooled_mean) for m, _ in own])
            covs = np.stack([pooled_cov + shrinkage * (c - pooled_cov) for _, c in own])
            return means, covs

        shrinkage = 1.0
        if held_out is not None:
            scores = {}
            for candidate in SHRINKAGE_CANDIDATES:
                self._set(*gaussians(candidate))
                scores[candidate] = self.held_out_group_log_likelihood(*held_out)
            shrinkage = max(scores, key=scores.get)  # the first of equals: the most shrunk
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(f"Gaussian base: held-out group log-likelihood by shrinkage {scores}.")
        self._set(*gaussians(shrinkage))
        self.shrinkage = torch.tensor(float(shrinkage))
        logger.info(
            f"Gaussian base: {len(counts)} group(s) of cells, shrinkage {shrinkage:g} towards the pooled fit."
        )

    def _set(self, means: np.ndarray, covariances: np.ndarray) -> None:
        eigenvalues, eigenvectors = np.linalg.eigh(covariances)
        # A group of fewer cells than dimensions has a singular covariance: floor its variances.
        eigenvalues = np.maximum(eigenvalues, MIN_VARIANCE * eigenvalues.max(axis=-1, keepdims=True))
        self.means = torch.as_tensor(means, dtype=torch.float32)
        self.eigenvalues = torch.as_tensor(eigenvalues, dtype=torch.float32)
        self.eigenvectors = torch.as_tensor(eigenvectors, dtype=torch.float32)
        self._set_rotations()

    def _set_rotations(self) -> None:
        """Each Gaussian's mean in its eigenbasis (``(G, d)``) and the rotations into and out of every eigenbasis at once."""
        if not self.is_fitted:
            return
        n_gaussians, d = self.means.shape
        self.rotated_means = torch.einsum("gde,gd->ge", self.eigenvectors, self.means)
        self.rotation = self.eigenvectors.transpose(0, 1).reshape(d, n_gaussians * d)  # (d, G * d)
        self.rotation_back = self.eigenvectors.transpose(1, 2).reshape(n_gaussians * d, d)  # (G * d, d)

    def held_out_group_log_likelihood(self, x: torch.Tensor, codes: torch.Tensor) -> float:
        """Mean ``log p(group | x)`` of cells under the groups' densities at the data (``t = 1``)."""
        log_posteriors = self._group_log_posteriors(self._log_densities_at_data(x), codes)
        return float(log_posteriors.sum() / max(len(log_posteriors), 1))

    def _log_densities_at_data(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, G)`` log-densities of ``x`` under each Gaussian at the data (``t = 1``), up to one shared constant."""
        at_data = torch.ones(1, 1, dtype=x.dtype)
        return torch.cat([self._log_densities(x[rows], at_data)[0] for rows in _chunks(len(x))])

    def _group_log_posteriors(self, log_density: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Per cell of Gaussian log-densities ``log_density`` (:meth:`_log_densities_at_data`), ``log p(own group | x)``.

        A cell of a combination never seen in training has no group and is left out.
        """
        log_joint = self._log_group_densities(log_density) + self.log_weights.to(log_density.dtype)
        own = (codes[:, None, :] == self.group_codes[None]).all(-1)
        log_posterior = log_joint - torch.logsumexp(log_joint, dim=1, keepdim=True)
        return log_posterior[own]

    def _log_densities(self, x: torch.Tensor, t: torch.Tensor):
        """Log-densities of ``x`` under each Gaussian at time ``t`` (``(n, 1)``, or ``(1, 1)`` for all cells), up to one shared constant, and the parts of the fields.

        The parts, in every Gaussian's eigenbasis: ``projected``, ``x - t * mean`` (``(n, G, d)``;
        one matrix product rotates the cells into all eigenbases at once); ``whitened``, that
        divided by the variances; and the ``variances`` at ``t`` (``(1, G, d)`` for one time).
        """
        n_gaussians, d = self.means.shape
        sigma2 = self.path.sigma(t) ** 2  # like t
        variances = torch.addcmul(sigma2[:, :, None], t[:, :, None] ** 2, self.eigenvalues)  # one pass
        projected = (
            (x @ self.rotation)
            .view(len(x), n_gaussians, d)
            .addcmul_(t[:, :, None], self.rotated_means, value=-1)
        )
        whitened = projected / variances
        # einsum contracts without the (n, G, d) product that (a * b).sum(-1) would write out
        log_density = -0.5 * (torch.einsum("ngd,ngd->ng", projected, whitened) + torch.log(variances).sum(-1))
        return log_density, projected, whitened, variances

    def _log_group_densities(self, log_density: torch.Tensor) -> torch.Tensor:
        """``(n, groups)`` log-densities of each group from those of the base's Gaussians (here one per group)."""
        return log_density

    def _log_weights_of(self, codes: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``(n, Gaussians)``: log-weights of the base's Gaussians in the mixture of each code's groups."""
        agrees = (codes[:, None, :] == self.group_codes[None]) | (codes == self.null_codes)[:, None, :]
        member = agrees.all(-1)
        member = member | ~member.any(1, keepdim=True)  # an unseen combination: every group
        return torch.where(member, self.log_weights.to(dtype), -torch.inf)

    def _weights(self, log_density: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        return torch.softmax(log_density + self._log_weights_of(codes, log_density.dtype), dim=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, codes: torch.Tensor, divergence: bool = False):
        """Velocity and score of each cell's condition; with ``divergence`` also the velocity's divergence.

        Always in float32, also under a bfloat16 :class:`torch.autocast`: the closed form is
        exact, and only the network's correction is rounded.
        """
        return self.under_conditions(x, t, [codes], divergence=divergence)[0]

    def under_conditions(
        self, x: torch.Tensor, t: torch.Tensor, codes: Sequence[torch.Tensor], *, divergence: bool = False
    ) -> list[tuple[torch.Tensor, ...]]:
        """:meth:`forward` at the same points under several conditions, one tuple per code tensor.

        The Gaussians' densities at the points are computed once; a condition only reweights them.
        """
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        if len(x) > ROWS_PER_CHUNK:
            chunks = [
                self.under_conditions(
                    x[rows], t if t.dim() == 0 else t.expand(len(x))[rows], [c[rows] for c in codes],
                    divergence=divergence,
                )
                for rows in _chunks(len(x))
            ]  # fmt: skip
            return [tuple(map(torch.cat, zip(*fields, strict=True))) for fields in zip(*chunks, strict=True)]
        with torch.autocast(x.device.type, enabled=False):
            # One time for all cells (as when integrating) keeps the variances at (1, G, d).
            t = t.reshape(1, 1) if t.dim() == 0 else t.expand(len(x))[:, None]
            log_density, projected, whitened, variances = self._log_densities(x, t)
            gains = torch.addcmul(self.path.sigma_d_sigma(t)[:, :, None], t[:, :, None], self.eigenvalues)
            traces = (gains / variances).sum(-1) if divergence else None  # (1 or n, G)
            if len(codes) == 1:  # weighting before rotating back takes one product per field
                return [self._fields(self._weights(log_density, codes[0]), whitened, gains, traces)]
            # Several conditions only reweight the Gaussians: rotate each one's fields back once.
            gaussians = self._gaussian_fields(whitened, gains, traces)
            return [self._mixture_fields(self._weights(log_density, c), *gaussians) for c in codes]

    def _fields(self, weights: torch.Tensor, whitened: torch.Tensor, gains: torch.Tensor, traces):
        """Velocity and score of the mixture with ``weights`` ``(n, G)``; with the Gaussians' ``traces`` also its divergence.

        In Gaussian g's eigenbasis, with y = projected and ``whitened`` y / var, its score is
        -y / var and its velocity mean + slope * y, where slope = gain / var and
        gain = t * eigenvalue + sigma * d sigma / dt.
        """
        weighted = weights[..., None] * whitened  # w_g y / var
        weighted_moved = weighted * gains  # w_g slope * y
        # Weighted sums over the Gaussians are taken in their eigenbases and rotated back in one product.
        n = len(weights)
        score = (weighted.view(n, -1) @ self.rotation_back).neg_()
        velocity = weights @ self.means + weighted_moved.view(n, -1) @ self.rotation_back
        if traces is None:
            return velocity, score
        # v = sum_g w_g v_g with grad w_g = w_g (s_g - s): div v = sum_g w_g (tr J_g + s_g . v_g) - s . v,
        # in closed form whatever the number of Gaussians (no Jacobian-vector products). In the
        # eigenbasis tr J_g = sum slope and s_g . v_g = -(y / var) . (rotated mean + slope * y).
        products = torch.einsum("ngd,gd->ng", weighted, self.rotated_means) + torch.einsum(
            "ngd,ngd->ng", weighted_moved, whitened
        )
        return velocity, score, (weights * traces).sum(1) - products.sum(1) - (score * velocity).sum(-1)

    def _gaussian_fields(self, whitened: torch.Tensor, gains: torch.Tensor, traces):
        """Each Gaussian's score and velocity less its mean (``(n, G, d)``), and ``(n, G)`` divergence terms.

        For :meth:`_mixture_fields`: what the mixture of every condition reweights. The divergence
        term of Gaussian g is ``tr J_g + s_g . v_g`` (see :meth:`_fields`); ``None`` without ``traces``.
        """
        moved = whitened * gains  # slope * y
        scores = torch.einsum("nge,gde->ngd", whitened, self.eigenvectors).neg_()
        velocities = torch.einsum("nge,gde->ngd", moved, self.eigenvectors)
        if traces is None:
            return scores, velocities, None
        terms = (
            traces - (whitened * self.rotated_means).sum(-1) - torch.einsum("nge,nge->ng", moved, whitened)
        )
        return scores, velocities, terms

    def _mixture_fields(self, weights: torch.Tensor, scores, velocities, terms):
        """:meth:`_fields` from the Gaussians' own fields (:meth:`_gaussian_fields`)."""
        score = torch.einsum("ng,ngd->nd", weights, scores)
        velocity = weights @ self.means + torch.einsum("ng,ngd->nd", weights, velocities)
        if terms is None:
            return velocity, score
        return velocity, score, (weights * terms).sum(1) - (score * velocity).sum(-1)


def _chunks(n_rows: int) -> list[slice]:
    """Slices of at most :data:`ROWS_PER_CHUNK` rows covering ``n_rows`` (one empty slice for none)."""
    return [slice(start, start + ROWS_PER_CHUNK) for start in range(0, max(n_rows, 1), ROWS_PER_CHUNK)]


def _covariance(x: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Sample covariance of a group; the pooled one for a group of fewer than two cells."""
    return np.cov(x, rowvar=False).reshape(fallback.shape) if len(x) > 1 else fallback


#: Components of each Gaussian mixture fitted to the cells (fewer with fewer cells, see below).
N_COMPONENTS = 16
#: Fewest training cells per component of a fit.
CELLS_PER_COMPONENT = 20
#: Gaussian mixtures fitted, each from another random start; the base is their equal-weight union.
N_FITS = 8
#: The most training cells a fit reads: enough for its components, which need no labels.
MAX_FIT_CELLS = 4096
#: Shares of each group's own weights, against the pooled ones, among which training chooses.
MIXTURE_SHRINKAGE_CANDIDATES = (0.25, 0.5, 0.75, 1.0)
#: Folds of the training cells over which the shrinkage is cross-validated.
N_FOLDS = 5
#: Cells added to every component of every group's weights, so that no weight is 0.
WEIGHT_PSEUDOCOUNT = 0.5


class MixtureBase(GaussianBase):
    """Velocity and score of a Gaussian mixture whose components all groups share, with weights per group.

    The shape of differential abundance: the conditions share their cell states and differ in
    how many cells each holds. The components (full covariances) are the union of
    :data:`N_FITS` Gaussian mixtures of :data:`N_COMPONENTS` each (one per
    :data:`CELLS_PER_COMPONENT` cells, if fewer), fitted to the training cells without their
    labels from different random starts: one fit's partition of the cells into states is
    arbitrary, and the union averages over partitions. A group's weights are its cells' summed
    responsibilities (plus :data:`WEIGHT_PSEUDOCOUNT` cells per component, spread over the fits),
    ``pooled + shrinkage * (own - pooled)``. The log-ratio of two groups then changes between
    states and little within one. :meth:`fit` chooses the shrinkage among
    :data:`MIXTURE_SHRINKAGE_CANDIDATES` by cross-validation: each training cell's
    ``log p(group | x)`` under the weights of the other :data:`N_FOLDS` - 1 folds, taking the most
    shrunk candidate within one standard error of the best. A quarter of each group's own weights
    is always kept, so that weak differences still order the cells; whether they are real is
    the question of the replicate test (:func:`scratio.tl.differential_abundance` with
    ``sample_key``). Codes with null keys mix the groups that agree on their other keys, as for
    :class:`GaussianBase`.

    Parameters
    ----------
    n_categories
        Number of categories of each condition key; code ``n_categories[k]`` is the null entry.
    """

    def __init__(self, n_categories: Sequence[int] = ()):
        super().__init__(n_categories)
        self.register_buffer("component_log_weights", torch.zeros(0))  # (groups, components)

    def _fit_groups(self, x64: np.ndarray, group_of_cell: np.ndarray, counts: np.ndarray, held_out) -> None:
        """Fit the shared components and each group's weights; choose the shrinkage by cross-validation.

        The held-out cells are not used: cross-validating on the training cells scores ten times
        as many cells.
        """
        from sklearn.mixture import GaussianMixture
        from threadpoolctl import threadpool_limits

        rng = np.random.default_rng(0)
        n_components = max(1, min(N_COMPONENTS, len(x64) // CELLS_PER_COMPONENT))
        n_fits = N_FITS if n_components > 1 else 1  # one Gaussian is the same from every start
        fit_cells = x64[rng.permutation(len(x64))[:MAX_FIT_CELLS]]
        fits = [GaussianMixture(n_components, covariance_type="full", reg_covar=1e-3, random_state=seed)
                for seed in range(n_fits)]  # fmt: skip
        # The fits multiply matrices of a few dimensions; BLAS threads there wait on PyTorch's, and
        # on 2 cores the fits took 5 times as long with 2 threads as with one. Instead the fits run
        # side by side, one per PyTorch thread (NumPy releases the GIL): 1.4 times faster on 2 cores.
        with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(torch.get_num_threads()) as pool:
            per_fit = list(pool.map(lambda fit: fit.fit(fit_cells).predict_proba(x64), fits))
        responsibilities = np.concatenate(per_fit, axis=1) / n_fits
        self._set(np.concatenate([f.means_ for f in fits]), np.concatenate([f.covariances_ for f in fits]))
        pseudocount = WEIGHT_PSEUDOCOUNT / n_fits

        def set_weights(cells: np.ndarray, shrinkage: float) -> None:
            """Each group's weights from the ``cells`` (a mask), shrunk towards the pooled ones."""
            own = np.stack(
                [responsibilities[cells & (group_of_cell == g)].sum(0) for g in range(len(counts))]
            )
            own = (own + pseudocount) / (own + pseudocount).sum(1, keepdims=True)
            in_group = np.bincount(group_of_cell[cells], minlength=len(counts))
            pooled = in_group @ own / in_group.sum()
            self.component_log_weights = torch.log(
                torch.as_tensor(pooled + shrinkage * (own - pooled)).float()
            )

        # Folds stratified by group: the cells of each group, in random order, dealt out in turn.
        fold = np.empty(len(x64), dtype=np.int64)
        for g in range(len(counts)):
            members = rng.permutation(np.flatnonzero(group_of_cell == g))
            fold[members] = np.arange(len(members)) % N_FOLDS
        # the candidates change the weights, not the components: their densities are computed once
        log_density = self._log_densities_at_data(torch.as_tensor(x64, dtype=torch.float32))
        codes = self.group_codes[torch.as_tensor(group_of_cell)]
        scores = {}  # per candidate, each cell's log p(group | x) under the weights of the other folds
        for shrinkage in MIXTURE_SHRINKAGE_CANDIDATES:
            scores[shrinkage] = np.empty(len(x64))
            for k in range(N_FOLDS):
                scored = fold == k
                set_weights(~scored, shrinkage)
                scores[shrinkage][scored] = self._group_log_posteriors(
                    log_density[scored], codes[scored]
                ).numpy()
        # The one-standard-error rule: the most shrunk candidate within one standard error of the best.
        best = max(scores, key=lambda c: scores[c].mean())
        shrinkage = next(
            c for c in MIXTURE_SHRINKAGE_CANDIDATES
            if (scores[best] - scores[c]).mean() <= (scores[best] - scores[c]).std() / np.sqrt(len(x64))
        )  # fmt: skip
        set_weights(np.ones(len(x64), dtype=bool), shrinkage)
        self.shrinkage = torch.tensor(float(shrinkage))
        if logger.isEnabledFor(logging.DEBUG):
            means = {c: round(float(v.mean()), 5) for c, v in scores.items()}
            logger.debug(f"Mixture base: cross-validated group log-likelihood by shrinkage {means}.")
        logger.info(
            f"Mixture base: {n_fits} fit(s) of {n_components} component(s) shared by {len(counts)} group(s) of cells, "
            f"shrinkage {shrinkage:g} of their weights towards the pooled ones."
        )

    def _log_group_densities(self, log_density: torch.Tensor) -> torch.Tensor:
        """``(n, groups)``: each group's mixture of the shared components."""
        return torch.logsumexp(
            log_density[:, None, :] + self.component_log_weights.to(log_density.dtype)[None], -1
        )

    def _log_weights_of(self, codes: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``(n, components)``: log-weights of the components in the mixture of each code's groups."""
        log_group = super()._log_weights_of(codes, dtype)  # (n, groups)
        return torch.logsumexp(log_group[:, :, None] + self.component_log_weights.to(dtype)[None], dim=1)
