"""The flow core apart from learning: paths, network, and the ODE engine on closed-form fields."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from scratio.core import GaussianConditionalField, GaussianPath, Solver, ode
from scratio.core.network import ConditionalFlowNet, TimeFeatures

PATHS = [GaussianPath(), GaussianPath(s_min=0.1), GaussianPath(s_path=0.2)]


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_path_derivatives_match_finite_differences(path):
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    h = 1e-6
    numeric = (path.sigma(t + h) - path.sigma(t - h)) / (2 * h)
    torch.testing.assert_close(path.d_sigma(t), numeric, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(path.sigma_d_sigma(t), path.sigma(t) * numeric, rtol=1e-6, atol=1e-6)
    assert float(path.sigma(torch.tensor(0.0))) == pytest.approx(1.0)
    assert float(path.sigma(torch.tensor(1.0))) == pytest.approx(path.s_min)


def test_schedules_round_trip_and_reject_unknown():
    for name in ("deterministic", "noise_at_data", "noise_on_path"):
        path = GaussianPath.from_schedule(name)
        assert path.name == name
        assert GaussianPath.from_dict(path.to_dict()) == path
    with pytest.raises(ValueError, match="Unknown schedule 'linear'"):
        GaussianPath.from_schedule("linear")
    with pytest.raises(ValueError, match="s_min"):
        GaussianPath(s_min=1.5)


def test_time_features_resolve_the_unit_interval():
    features = TimeFeatures(6)(torch.tensor([0.0, 0.01, 0.5, 0.99, 1.0]))
    distances = torch.cdist(features, features)
    assert distances[~torch.eye(5, dtype=bool)].min() > 0.05  # nearby times stay apart


def test_condition_dropout_rate_and_null_codes():
    net = ConditionalFlowNet(3, [4, 2])
    codes = torch.zeros(20000, 2, dtype=torch.long)
    dropped = net.conditions.drop(codes, 0.3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(net.conditions.null_codes(1)[0], torch.tensor([4, 2]))
    rate = (dropped == net.conditions.null_codes(1)).float().mean(0)
    assert torch.allclose(rate, torch.tensor([0.3, 0.3]), atol=0.015)


def test_explicit_forward_mode_matches_torch_func():
    torch.manual_seed(0)
    net = ConditionalFlowNet(5, [3], width=32, head_layers=1, activation="selu").double()
    x = torch.randn(7, 5, dtype=torch.float64)
    codes = torch.tensor([[0], [1], [2], [3], [0], [1], [3]])
    probes = torch.randn(4, 7, 5, dtype=torch.float64)
    [velocity], [score], [quadratic] = net.forward_under_conditions(x, torch.tensor(0.3), [codes], probes)
    expected = torch.zeros(7, dtype=torch.float64)
    for p in range(4):
        _, along = torch.func.jvp(lambda y: net(y, torch.tensor(0.3), codes)[0], (x,), (probes[p],))
        expected += (probes[p] * along).sum(-1)
    torch.testing.assert_close(quadratic, expected)
    torch.testing.assert_close(score, net(x, torch.tensor(0.3), codes)[1])


def gaussian_field(kind: str, path: GaussianPath, d: int):
    """Two conditions with closed-form densities: shifted means, or correlated (MI) vs independent."""
    if kind == "shifted":
        means = torch.stack([torch.full((d,), 1.5), torch.zeros(d)])
        covariances = torch.eye(d).expand(2, d, d)
    else:
        rho = math.sqrt(1 - math.exp(-1))
        block = torch.tensor([[1.0, rho], [rho, 1.0]])
        covariances = torch.stack([torch.block_diag(*[block] * (d // 2)), torch.eye(d)])
        means = torch.zeros(2, d)
    return GaussianConditionalField(means, covariances, path)


CODES = {k: torch.full((64, 1), k) for k in range(3)}  # 0: numerator, 1: denominator, 2: null
TIGHT = Solver(method="rk4", n_steps=60)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
@pytest.mark.parametrize("kind", ["shifted", "mutual_information"])
def test_engine_reproduces_closed_form_log_ratios(path, kind):
    field = gaussian_field(kind, path, 4)
    x = torch.randn(64, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 1.3 + 0.5
    truth = field.log_prob(x, 0) - field.log_prob(x, 1)
    for estimator in ("s1", "s2", "naive"):
        estimate = ode.log_ratio(
            field, x, CODES[0], CODES[1], estimator=estimator, base=CODES[2], solver=TIGHT
        )
        assert (estimate - truth).abs().max() < 1e-4, estimator
    ratios, base_log_density = ode.category_log_ratios(field, x, [CODES[0], CODES[1]], CODES[2], solver=TIGHT)
    assert (ratios[:, 0] - ratios[:, 1] - truth).abs().max() < 1e-4
    assert (base_log_density - field.log_prob(x)).abs().max() < 1e-4
    log_density = ode.log_likelihood(field, x, CODES[0], solver=TIGHT)
    assert (log_density - field.log_prob(x, 0)).abs().max() < 1e-4


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_scoring_at_a_bandwidth_gives_the_smoothed_densities(path, bandwidth=0.7):
    """Entering at the time of a bandwidth scores N(mean, cov + bandwidth^2 I), in closed form."""
    field = gaussian_field("mutual_information", path, 4)
    # the data of ``field`` are N(mean, cov) smoothed by s_min; widen them by the rest
    extra = (bandwidth**2 - path.s_min**2) * torch.eye(4, dtype=torch.float64)
    smoothed = GaussianConditionalField(field.means, field.covariances + extra, path)
    start = path.smoothing_time(bandwidth)
    assert path.bandwidth(start) == pytest.approx(bandwidth)
    solver = Solver(method="rk4", n_steps=20, start=start)
    x = torch.randn(64, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 1.3 + 0.5
    truth = smoothed.log_prob(x, 0) - smoothed.log_prob(x, 1)
    assert (truth - (field.log_prob(x, 0) - field.log_prob(x, 1))).abs().mean() > 0.1  # smoothing matters
    for estimator in ("s1", "s2", "naive"):
        estimate = ode.log_ratio(
            field, x, CODES[0], CODES[1], estimator=estimator, base=CODES[2], solver=solver
        )
        assert (estimate - truth).abs().max() < 1e-4, estimator
    ratios, base_log_density = ode.category_log_ratios(
        field, x, [CODES[0], CODES[1]], CODES[2], solver=solver
    )
    assert (ratios[:, 0] - ratios[:, 1] - truth).abs().max() < 1e-4
    assert (base_log_density - smoothed.log_prob(x)).abs().max() < 1e-4
    log_density = ode.log_likelihood(field, x, CODES[0], solver=solver)
    assert (log_density - smoothed.log_prob(x, 0)).abs().max() < 1e-4


@pytest.mark.parametrize("bandwidth", [0.05, float("inf"), float("nan"), True, "wide"])
def test_bandwidth_below_s_min_or_not_a_number_is_refused(bandwidth):
    with pytest.raises(
        ValueError, match="`bandwidth` must be a finite number at least the model's `s_min` \\(0.1\\)"
    ):
        GaussianPath(s_min=0.1).smoothing_time(bandwidth)
    with pytest.raises(ValueError, match="`start` must lie in \\(0, 1\\]"):
        Solver(start=1.5)


def test_adaptive_solver_is_accurate_on_closed_form():
    field = gaussian_field("mutual_information", GaussianPath(s_min=0.05), 6)
    x = torch.randn(64, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    truth = field.log_prob(x, 0) - field.log_prob(x, 1)
    estimate = ode.log_ratio(
        field, x, CODES[0], CODES[1], solver=Solver(method="dopri5", rtol=1e-7, atol=1e-7)
    )
    assert (estimate - truth).abs().max() < 1e-4


def test_hutchinson_is_unbiased_and_batch_independent():
    field = gaussian_field("mutual_information", GaussianPath(), 6)
    x = torch.randn(64, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    truth = field.log_prob(x, 0) - field.log_prob(x, 1)
    one_probe = Solver(n_steps=20, divergence="hutchinson", n_probes=1)
    single = ode.log_ratio(field, x, CODES[0], CODES[1], solver=one_probe)
    assert (single - truth).abs().max() > 1e-3  # a single probe is noisy on a non-diagonal Jacobian
    many = Solver(n_steps=20, divergence="hutchinson", n_probes=256)
    averaged = ode.log_ratio(field, x, CODES[0], CODES[1], solver=many)
    assert (averaged - truth).pow(2).mean() < 0.1 * (single - truth).pow(2).mean()
    # Probes follow the cell's global index: scoring a cell alone gives the same number.
    alone = ode.log_ratio(
        field, x[5:6], CODES[0][:1], CODES[1][:1], solver=one_probe, index=torch.tensor([5])
    )
    torch.testing.assert_close(alone[0], single[5])


def test_sampling_pushes_noise_to_the_condition():
    field = gaussian_field("shifted", GaussianPath(), 3)
    noise = torch.randn(4000, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    samples = ode.sample(field, torch.zeros(4000, 1, dtype=torch.long), noise, solver=Solver(n_steps=20))
    np.testing.assert_allclose(samples.mean(0).numpy(), 1.5, atol=0.06)
    np.testing.assert_allclose(samples.std(0).numpy(), 1.0, atol=0.05)


def test_solver_options_validate():
    with pytest.raises(ValueError, match="Unknown divergence 'trace'"):
        Solver(divergence="trace")
    with pytest.raises(ValueError, match=r"Unknown precision 'bf16'; choose one of \['32-true'"):
        Solver(precision="bf16")
    with pytest.raises(ValueError, match="Unknown estimator 's3'"):
        ode.log_ratio(None, torch.zeros(1, 2), CODES[0][:1], CODES[1][:1], estimator="s3")
    with pytest.raises(ValueError, match=r"`condition_weight` must lie in \[0, 1\], got 1.5"):
        Solver(condition_weight=1.5)
    field = gaussian_field("shifted", GaussianPath(s_min=0.05), 2)
    with pytest.raises(
        ValueError, match="`condition_weight` 0.5 needs a network with `forward_under_conditions`"
    ):
        ode.log_ratio(
            field, torch.zeros(1, 2), CODES[0][:1], CODES[1][:1], solver=Solver(condition_weight=0.5)
        )


def test_evaluate_returns_exact_divergences_for_both_field_kinds():
    torch.manual_seed(5)
    net = ConditionalFlowNet(4, [2], width=16).double()
    x = torch.randn(6, 4, dtype=torch.float64)
    t = torch.tensor(0.4, dtype=torch.float64)
    codes = (torch.zeros(6, 1, dtype=torch.long), torch.full((6, 1), 2))
    probes = Solver().probes(4, torch.arange(6))
    for field in (net, lambda y, s, c: net(y, s, c)):  # explicit forward mode, and torch.func
        velocities, scores, quadratic = ode.evaluate(field, x, t, codes, probes)
        for code, v, s, q in zip(codes, velocities, scores, quadratic, strict=True):
            jacobians = torch.func.vmap(torch.func.jacrev(lambda y, c: net(y[None], t, c[None])[0][0]))(
                x, code
            )
            torch.testing.assert_close(q, jacobians.diagonal(dim1=1, dim2=2).sum(-1))
            torch.testing.assert_close(v, net(x, t, code)[0])
            torch.testing.assert_close(s, net(x, t, code)[1])


def test_condition_weight_mixes_each_conditions_correction_with_the_null_codes():
    """Velocity, score and divergence: ``null + w (k - null)`` of the correction; at 0 only the base differs."""
    path = GaussianPath(s_min=0.05)
    x, codes = _two_gaussian_groups(n=400)
    torch.manual_seed(3)
    net = ConditionalFlowNet(4, [2], width=16, base="mixture")
    net.base.fit(x, codes, path)
    net.double()
    for head in (net.velocity_head, net.score_head):  # a correction that depends on the condition
        torch.nn.init.normal_(head[-1].weight, std=0.3)
    cells, t = x[::40].double(), torch.tensor(0.4, dtype=torch.float64)
    n = len(cells)
    conditions = (torch.zeros(n, 1, dtype=torch.long), torch.ones(n, 1, dtype=torch.long))
    probes = Solver().probes(4, torch.arange(n)).double()

    def fields(weight, relative=False):
        return net.forward_under_conditions(
            cells, t, conditions, probes, relative=relative, condition_weight=weight
        )

    full, none, half = fields(1.0), fields(0.0), fields(0.5)
    for part_full, part_none, part_half in zip(full, none, half, strict=True):
        for k in range(2):
            torch.testing.assert_close(part_half[k], (part_full[k] + part_none[k]) / 2)
    assert not torch.allclose(full[0][0] - full[0][1], none[0][0] - none[0][1])  # the weight matters
    bases = net.base.under_conditions(cells, t, conditions, divergence=True)
    for part, base_part in zip(none, zip(*bases, strict=True), strict=True):
        torch.testing.assert_close(
            part[0] - part[1], base_part[0] - base_part[1]
        )  # only the base tells them apart
    assert net.cancels_from_ratios(0.0) and not net.cancels_from_ratios(1.0)
    relative = fields(0.0, relative=True)  # the correction cancels: evaluated once, without its divergence
    torch.testing.assert_close(relative[2][0], bases[0][2])
    torch.testing.assert_close(relative[0][0], none[0][0])


def _two_gaussian_groups(n=3000, d=4, shift=1.5, seed=0):
    """Cells of two conditions, ``N(shift 1, A A^T)`` and ``N(0, I)``, with their codes."""
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.eye(d) + 0.3 * torch.randn(d, d, generator=generator)
    x = torch.cat(
        [torch.randn(n, d, generator=generator) @ mixing.T + shift, torch.randn(n, d, generator=generator)]
    )
    codes = torch.cat([torch.zeros(n, 1, dtype=torch.int64), torch.ones(n, 1, dtype=torch.int64)])
    return x, codes


def _assert_base_is_exact(base, exact, codes, exact_codes, cells):
    """The base's velocity and score equal ``exact``'s at three times, and its divergence autograd's."""
    for t in (0.0, 0.4, 0.95):
        velocity, score = base(cells, torch.tensor(t), codes)
        expected_velocity, expected_score = exact(cells.double(), torch.tensor(t), exact_codes)
        torch.testing.assert_close(velocity, expected_velocity.float(), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(score, expected_score.float(), atol=1e-4, rtol=1e-4)
    _, _, divergence = base(cells, torch.tensor(0.4), codes, divergence=True)
    jacobians = torch.func.vmap(
        torch.func.jacrev(lambda y, c: base(y[None], torch.tensor(0.4), c[None])[0][0])
    )(cells, codes)
    torch.testing.assert_close(divergence, jacobians.diagonal(dim1=1, dim2=2).sum(-1), atol=1e-5, rtol=1e-4)


def _fitted_base(x, codes, path):
    from scratio.core.base import GaussianBase

    return GaussianBase([2]).fit(x[::2], codes[::2], path, held_out_x=x[1::2], held_out_codes=codes[1::2])


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_gaussian_base_has_the_closed_form_fields_of_its_fits(path):
    """Per condition and for the null mixture: velocity, score and the velocity's divergence are exact."""
    x, codes = _two_gaussian_groups()
    base = _fitted_base(x, codes, path)
    assert float(base.shrinkage) == 1.0  # well-separated conditions keep their own fits
    covariances = base.eigenvectors * base.eigenvalues[:, None, :] @ base.eigenvectors.transpose(1, 2)
    exact = GaussianConditionalField(base.means, covariances, path, weights=base.log_weights.exp())
    cells = torch.randn(9, 4, generator=torch.Generator().manual_seed(2)) + 0.7
    for code in range(3):  # 2 is null: the mixture of both, weighted by their cells
        codes_ = torch.full((9, 1), code)
        _assert_base_is_exact(base, exact, codes_, codes_, cells)


def test_gaussian_base_shrinks_to_the_pooled_fit_when_labels_carry_nothing():
    x, _ = _two_gaussian_groups(shift=0.0)
    random_codes = torch.randint(2, (len(x), 1), generator=torch.Generator().manual_seed(4))
    base = _fitted_base(x, random_codes, GaussianPath(s_min=0.05))
    assert float(base.shrinkage) == 0.0
    _, score_0 = base(x[:50], torch.tensor(0.7), torch.zeros(50, 1, dtype=torch.int64))
    _, score_1 = base(x[:50], torch.tensor(0.7), torch.ones(50, 1, dtype=torch.int64))
    torch.testing.assert_close(score_0, score_1)  # the base adds nothing to any log-ratio


def test_network_with_a_gaussian_base_scores_its_closed_form_before_learning():
    """The heads' read-outs start at zero, so the network is its base: S1 gives the fits' exact log-ratio."""
    path = GaussianPath(s_min=0.05)
    x, codes = _two_gaussian_groups()
    net = ConditionalFlowNet(4, [2], width=16, base="gaussian")
    assert net.fitted_base is None and net.config["base"] == "gaussian"
    net.base.fit(x, codes, path)
    covariances = (
        net.base.eigenvectors * net.base.eigenvalues[:, None, :] @ net.base.eigenvectors.transpose(1, 2)
    )
    exact = GaussianConditionalField(net.base.means, covariances, path)
    cells = x[::300]
    codes_ = {k: torch.full((len(cells), 1), k) for k in range(3)}
    truth = exact.log_prob(cells.double(), 0) - exact.log_prob(cells.double(), 1)
    estimate = ode.log_ratio(net, cells, codes_[0], codes_[1], solver=Solver(method="rk4", n_steps=20))
    assert (estimate.double() - truth).abs().max() < 1e-2 * truth.abs().max()
    with pytest.raises(ValueError, match="Unknown base 'kde'"):
        ConditionalFlowNet(4, [2], base="kde")


def test_bf16_network_keeps_the_base_and_the_integration_in_float32():
    """Under bfloat16 only the network's correction is rounded: a network that is its base scores exactly."""
    path = GaussianPath(s_min=0.05)
    x, codes = _two_gaussian_groups()
    net = ConditionalFlowNet(4, [2], width=16, base="gaussian")
    net.base.fit(x, codes, path)
    cells, t = x[::300], torch.tensor(0.3)
    group = torch.zeros(len(cells), 1, dtype=torch.long)
    exact = net.base(cells, t, group)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rounded = net.base(cells, t, group)
    for a, b in zip(exact, rounded, strict=True):
        assert b.dtype == torch.float32
        torch.testing.assert_close(a, b)
    solver = Solver(method="rk4", n_steps=4)
    full = ode.log_ratio(net, cells, group, group + 1, solver=solver)
    mixed = ode.log_ratio(net, cells, group, group + 1, solver=replace(solver, precision="bf16-mixed"))
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, full, atol=1e-4, rtol=1e-4)


def test_gaussian_base_marginalises_a_null_key_over_the_groups_that_agree():
    """Two keys: (treatment 0, donor null) is the cell-weighted mixture of (0, 0) and (0, 1), exactly."""
    from scratio.core import GaussianBase

    generator = torch.Generator().manual_seed(5)
    sizes = {(0, 0): 300, (0, 1): 100, (1, 0): 200, (1, 1): 200}
    x = torch.cat(
        [
            torch.randn(n, 3, generator=generator) + 2.0 * torch.tensor([a, b, a - b])
            for (a, b), n in sizes.items()
        ]
    )
    codes = torch.cat([torch.tensor([group]).expand(n, 2) for group, n in sizes.items()])
    path = GaussianPath(s_min=0.05)
    base = GaussianBase([2, 2]).fit(x, codes, path)
    assert base.group_codes.tolist() == [list(group) for group in sizes]
    treated_0 = base.group_codes[:, 0] == 0
    covariances = base.eigenvectors * base.eigenvalues[:, None, :] @ base.eigenvectors.transpose(1, 2)
    mixture = GaussianConditionalField(
        base.means[treated_0], covariances[treated_0], path, weights=torch.tensor([0.75, 0.25])
    )
    cells = torch.randn(6, 3, generator=generator)
    velocity, score = base(cells, torch.tensor(0.6), torch.tensor([[0, 2]]).expand(6, 2))
    expected_velocity, expected_score = mixture(cells.double(), torch.tensor(0.6), torch.full((6, 1), 2))
    torch.testing.assert_close(velocity, expected_velocity.float(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(score, expected_score.float(), atol=1e-4, rtol=1e-4)


def _shared_states(n=4000, seed=0):
    """Two conditions over the same three states in 3 dimensions, in shares 0.6/0.3/0.1 and 0.2/0.3/0.5."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 3.0]])
    cells, codes = [], []
    for code, shares in enumerate(([0.6, 0.3, 0.1], [0.2, 0.3, 0.5])):
        states = torch.multinomial(torch.tensor(shares), n, replacement=True, generator=generator)
        cells.append(centres[states] + 0.5 * torch.randn(n, 3, generator=generator))
        codes.append(torch.full((n, 1), code))
    return torch.cat(cells), torch.cat(codes)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_mixture_base_has_the_closed_form_fields_of_its_mixtures(path):
    """Each condition's fields are those of the shared components under its own weights, divergence included."""
    from scratio.core import MixtureBase
    from scratio.core.base import N_COMPONENTS, N_FITS

    x, codes = _shared_states()
    base = MixtureBase([2]).fit(x[::2], codes[::2], path)
    assert len(base.means) == N_FITS * N_COMPONENTS and float(base.shrinkage) == 1.0  # distinct shares kept
    torch.testing.assert_close(base.component_log_weights.exp().sum(1), torch.ones(2))
    covariances = base.eigenvectors * base.eigenvalues[:, None, :] @ base.eigenvectors.transpose(1, 2)
    cells = torch.randn(9, 3, generator=torch.Generator().manual_seed(2)) + 1.0
    for code in range(3):  # 2 is null: both conditions' mixtures, weighted by their cells
        weights = torch.logsumexp(base.log_weights[:, None] + base.component_log_weights, 0).exp()
        weights = weights if code == 2 else base.component_log_weights[code].exp()
        exact = GaussianConditionalField(base.means, covariances, path, weights=weights)
        # The exact field's null code (one past its components) is its weighted mixture.
        null = torch.full((9, 1), len(base.means))
        _assert_base_is_exact(base, exact, torch.full((9, 1), code), null, cells)


def test_network_with_a_mixture_base_scores_the_log_ratio_of_the_states_shares():
    """Untrained, the network is its base: deep in each state S1 gives the log-ratio of its shares."""
    path = GaussianPath(s_min=0.05)
    x, codes = _shared_states()
    net = ConditionalFlowNet(3, [2], width=16, base="mixture")
    net.base.fit(x[::2], codes[::2], path, held_out_x=x[1::2], held_out_codes=codes[1::2])
    centres = torch.tensor([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 3.0]])
    zeros = torch.zeros(3, 1, dtype=torch.int64)
    estimate = ode.log_ratio(net, centres, zeros, zeros + 1, solver=Solver(method="rk4", n_steps=20))
    expected = torch.log(torch.tensor([0.6 / 0.2, 0.3 / 0.3, 0.1 / 0.5]))
    torch.testing.assert_close(estimate, expected, atol=0.1, rtol=0)


def test_base_divergence_is_exact_whatever_the_probes():
    """A base's divergence is taken in closed form: Hutchinson's probes leave its part without noise."""
    x, codes = _shared_states(n=500)
    net = ConditionalFlowNet(3, [2], width=16, base="mixture")  # zero read-outs: the network is its base
    net.base.fit(x, codes, GaussianPath(s_min=0.05))
    cells, t = x[::50], torch.tensor(0.6)
    both = (torch.zeros(len(cells), 1, dtype=torch.int64), torch.ones(len(cells), 1, dtype=torch.int64))
    index = torch.arange(len(cells))
    _, _, exact = ode.evaluate(net, cells, t, both, Solver().probes(3, index))
    _, _, probed = ode.evaluate(net, cells, t, both, Solver(divergence="hutchinson").probes(3, index))
    for e, p in zip(exact, probed, strict=True):
        torch.testing.assert_close(p, e)
        assert e.abs().max() > 0.1  # a real divergence, not zeros


@pytest.mark.parametrize("condition_dim", [0, 4])
def test_relative_divergences_keep_every_difference_between_conditions(condition_dim):
    """``relative=True`` may drop what all conditions share, never what tells them apart."""
    x, codes = _shared_states(n=500)
    torch.manual_seed(1)
    net = ConditionalFlowNet(3, [2], width=16, base="mixture", condition_dim=condition_dim)
    for head in (net.velocity_head, net.score_head):  # a correction that is not zero
        torch.nn.init.normal_(head[-1].weight, std=2.0)
    net.base.fit(x, codes, GaussianPath(s_min=0.05))
    cells, t = x[::25], torch.tensor(0.6)
    conditions = [torch.full((len(cells), 1), c) for c in (0, 1, 2)]  # both groups and null
    probes = Solver().probes(3, torch.arange(len(cells)))
    with torch.no_grad():
        full = ode.evaluate(net, cells, t, conditions, probes)
        relative = ode.evaluate(net, cells, t, conditions, probes, relative=True)
        base_divergence = net.base(cells, t, conditions[0], divergence=True)[2]
    for part in range(2):  # velocities and scores are whole
        for f, r in zip(full[part], relative[part], strict=True):
            torch.testing.assert_close(r, f)
    (f0, *f_rest), (r0, *r_rest) = full[2], relative[2]
    for f, r in zip(f_rest, r_rest, strict=True):
        torch.testing.assert_close(r - r0, f - f0)
    if condition_dim:  # a network that sees the conditions: nothing is left out
        torch.testing.assert_close(r0, f0, rtol=0, atol=0)
    else:  # blind to them: its own divergence is left out, and it is not small
        torch.testing.assert_close(f0 - r0, f0 - base_divergence)
        assert (f0 - base_divergence).abs().max() > 0.1


def test_base_fields_under_several_conditions_are_those_of_each():
    x, codes = _shared_states(n=500)
    net = ConditionalFlowNet(3, [2], width=16, base="mixture")
    net.base.fit(x, codes, GaussianPath(s_min=0.05))
    cells, t = x[::25], torch.tensor(0.3)
    conditions = [torch.full((len(cells), 1), c) for c in (0, 1, 2)]
    for together, code in zip(
        net.base.under_conditions(cells, t, conditions, divergence=True), conditions, strict=True
    ):
        for a, b in zip(together, net.base(cells, t, code, divergence=True), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_base_fields_of_many_cells_are_formed_in_chunks_with_the_same_values(monkeypatch):
    """A training batch's fields (a time per cell) come from chunks of cells, exactly as from one piece."""
    from scratio.core import MixtureBase
    from scratio.core import base as base_module

    x, codes = _shared_states(n=700)
    base = MixtureBase([2]).fit(x, codes, GaussianPath(s_min=0.05))
    t = torch.rand(len(x), generator=torch.Generator().manual_seed(1))
    conditions = [codes, torch.full_like(codes, 2)]
    chunk_sizes = []
    log_densities = MixtureBase._log_densities

    def recorded(self, cells, times):
        chunk_sizes.append(len(cells))
        return log_densities(self, cells, times)

    monkeypatch.setattr(MixtureBase, "_log_densities", recorded)
    chunked = base.under_conditions(x, t, conditions, divergence=True)
    assert max(chunk_sizes) <= base_module.ROWS_PER_CHUNK < len(x) and sum(chunk_sizes) == len(x)
    monkeypatch.setattr(base_module, "ROWS_PER_CHUNK", len(x))
    whole = base.under_conditions(x, t, conditions, divergence=True)
    for chunked_fields, whole_fields in zip(chunked, whole, strict=True):
        for a, b in zip(chunked_fields, whole_fields, strict=True):
            assert a.shape == b.shape and torch.equal(a, b)


def test_mixture_base_keeps_a_quarter_of_the_weights_when_labels_carry_nothing():
    """Random labels: the most shrunk candidate, and log-ratios within sampling noise of 0."""
    x, _ = _shared_states()
    random_codes = torch.randint(2, (len(x), 1), generator=torch.Generator().manual_seed(4))
    net = ConditionalFlowNet(3, [2], width=16, base="mixture")
    net.base.fit(x, random_codes, GaussianPath(s_min=0.05))
    assert float(net.base.shrinkage) == 0.25
    zeros = torch.zeros(200, 1, dtype=torch.int64)
    estimate = ode.log_ratio(net, x[::40], zeros, zeros + 1, solver=Solver(method="rk4", n_steps=8))
    assert estimate.abs().max() < 0.05


def test_mixture_base_fits_on_one_blas_thread(monkeypatch):
    """BLAS threads waited on PyTorch's in the small products of the fits: 5 times slower on 2 cores."""
    from sklearn.mixture import GaussianMixture
    from threadpoolctl import threadpool_info, threadpool_limits

    from scratio.core import MixtureBase

    seen, fit = [], GaussianMixture.fit

    def recording_fit(self, x, y=None):
        seen.append({pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"})
        return fit(self, x, y)

    monkeypatch.setattr(GaussianMixture, "fit", recording_fit)
    x, codes = _shared_states(n=200)
    with threadpool_limits(2, user_api="blas"):  # as on a machine with two cores
        MixtureBase([2]).fit(x, codes, GaussianPath(s_min=0.05))
    assert len(seen) == 8 and all(threads == {1} for threads in seen)


def test_mixture_base_fits_side_by_side_as_one_after_another():
    """The fits run one per PyTorch thread; each has its own seed, so the base is the same."""
    from scratio.core import MixtureBase

    x, codes = _shared_states(n=200)
    threads, bases = torch.get_num_threads(), []
    try:
        for n_threads in (1, 2):
            torch.set_num_threads(n_threads)
            bases.append(MixtureBase([2]).fit(x, codes, GaussianPath(s_min=0.05)))
    finally:
        torch.set_num_threads(threads)
    for name in ("means", "eigenvalues", "component_log_weights"):
        torch.testing.assert_close(getattr(bases[0], name), getattr(bases[1], name), rtol=0, atol=0)


def test_mixture_base_fits_one_gaussian_to_few_cells():
    """Fewer than 40 cells allow one component (20 cells each): the groups share it, and the base is finite."""
    from scratio.core import MixtureBase

    x, codes = _shared_states(n=8)
    base = MixtureBase([2]).fit(x, codes, GaussianPath(s_min=0.05))
    assert len(base.means) == 1 and base.component_log_weights.tolist() == [[0.0], [0.0]]
    assert torch.isfinite(base(x, torch.tensor(0.5), codes)[1]).all()
