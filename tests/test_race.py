"""Optimiser races (compute._race) against plain numpy optimisers.

References: gradient descent, heavy-ball momentum and Adam written out in numpy on a
one-hidden-layer linear net with closed-form gradients (THEORY.md's loss
L = (1/2m)‖X W₁ᵀ W₂ᵀ − Y‖²), numpy SVD for the PCA plane and numpy least squares for the
plane coordinates; escape steps against the first step the numpy loss falls below a level.
"""

from __future__ import annotations

import numpy as np
import pytest

from compute import InputError, make_model
from compute._limits import MAX_RACERS
from compute._race import escape_step, optimiser_race

D_X, D_1, D_Y = 3, 2, 2
STEPS = 300
RACERS = [
    {"optimizer": "gd", "lr": 0.05},
    {"optimizer": "momentum", "lr": 0.02, "momentum": 0.8},
    {"optimizer": "adam", "lr": 0.01},
    {"optimizer": "gd", "lr": 200.0, "label": "too big"},
]


def loss_and_grad(theta, X, Y):
    """Loss and its closed-form gradient for the D_X–D_1–D_Y linear net (flat W1, W2)."""
    m = X.shape[0]
    W1 = theta[:D_1 * D_X].reshape(D_1, D_X)
    W2 = theta[D_1 * D_X:].reshape(D_Y, D_1)
    H = X @ W1.T
    R = H @ W2.T - Y
    loss = 0.5 * np.sum(R * R) / m
    gW2 = R.T @ H / m
    gW1 = W2.T @ R.T @ X / m
    return loss, np.concatenate([gW1.ravel(), gW2.ravel()])


def numpy_path(theta0, X, Y, optimizer, lr, steps, momentum=0.9):
    """Losses (T+1,) and points (T+1, n) of a plain numpy optimiser; NaN after a blow-up."""
    theta = theta0.astype(np.float64).copy()
    v = np.zeros_like(theta)
    s = np.zeros_like(theta)
    losses = np.full(steps + 1, np.nan)
    points = np.full((steps + 1, theta.size), np.nan)
    with np.errstate(all="ignore"):
        for t in range(steps + 1):
            loss, g = loss_and_grad(theta, X, Y)
            losses[t], points[t] = loss, theta
            if not (np.isfinite(loss) and np.all(np.isfinite(g))):
                break
            if optimizer == "gd":
                theta = theta - lr * g
            elif optimizer == "momentum":
                v = g + momentum * v
                theta = theta - lr * v
            elif optimizer == "adam":
                v = 0.9 * v + 0.1 * g
                s = 0.999 * s + 0.001 * g * g
                v_hat, s_hat = v / (1 - 0.9 ** (t + 1)), s / (1 - 0.999 ** (t + 1))
                theta = theta - lr * v_hat / (np.sqrt(s_hat) + 1e-8)
    return losses, points


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(7)
    X = rng.standard_normal((40, D_X))
    Y = X @ rng.standard_normal((D_X, D_Y)) + 0.1 * rng.standard_normal((40, D_Y))
    spec = make_model("linear", D_X, D_Y, (D_1,))
    theta0 = 1e-3 * rng.standard_normal(spec.n_params)   # small init near the origin saddle
    return spec, X, Y, theta0


@pytest.fixture(scope="module")
def race(problem):
    spec, X, Y, theta0 = problem
    return optimiser_race(spec, "squared", theta0, X, Y, RACERS, STEPS, weight_stride=3)


@pytest.fixture(scope="module")
def references(problem):
    _, X, Y, theta0 = problem
    return [numpy_path(theta0, X, Y, r["optimizer"], r["lr"], STEPS, r.get("momentum", 0.9))
            for r in RACERS]


@pytest.mark.slow  # the race compiles three optimisers' scans (~8 s cold)
def test_every_racer_follows_its_numpy_optimiser_from_the_same_start(race, problem,
                                                                     references):
    _, X, Y, theta0 = problem
    loss0 = loss_and_grad(theta0, X, Y)[0]
    for racer, (ref_loss, _) in zip(race.racers[:3], references, strict=False):
        assert racer.diverged_at == -1
        np.testing.assert_array_equal(racer.path.weights[0], theta0)
        assert racer.loss[0] == pytest.approx(loss0, rel=1e-14)
        np.testing.assert_allclose(racer.loss, ref_loss, rtol=1e-8, err_msg=racer.label)
    assert race.labels == ["gd η=0.05", "momentum η=0.02 β=0.8", "adam η=0.01", "too big"]


@pytest.mark.slow  # the race compiles three optimisers' scans (~8 s cold)
def test_a_diverging_racer_is_reported_and_does_not_disturb_the_others(race, references):
    big = race.racers[3]
    ref_loss, _ = references[3]
    first_bad = int(np.argmax(~np.isfinite(ref_loss)))
    assert big.diverged_at >= 0 and abs(big.diverged_at - first_bad) <= 1
    assert big.escape_step is None
    np.testing.assert_allclose(big.loss[:big.diverged_at], ref_loss[:big.diverged_at],
                               rtol=1e-6)
    after = race.frame_steps >= big.diverged_at
    assert np.all(np.isnan(race.frame_coords[3][after]))
    assert np.all(np.isfinite(race.frame_coords[:3]))


@pytest.mark.slow  # the race compiles three optimisers' scans (~8 s cold)
def test_frames_are_in_sync_on_the_pca_plane_of_the_racers(race, problem, references):
    _, _, _, theta0 = problem
    frames = np.arange(0, STEPS + 1, 3)
    np.testing.assert_array_equal(race.frame_steps, frames)
    for racer in race.racers[:3]:
        np.testing.assert_array_equal(racer.path.weight_steps, frames)
    # PCA of every finishing racer's frames together, relative to the shared start.
    stacked = np.concatenate([pts[frames] for _, pts in references[:3]]) - theta0
    _, s, Vt = np.linalg.svd(stacked, full_matrices=False)
    plane = race.plane
    np.testing.assert_allclose(plane.center, theta0)
    assert abs(plane.direction1 @ Vt[0]) == pytest.approx(1.0, abs=1e-8)
    assert abs(plane.direction2 @ Vt[1]) == pytest.approx(1.0, abs=1e-8)
    np.testing.assert_allclose(race.explained_variance, s[:2] ** 2 / np.sum(s ** 2),
                               rtol=1e-7)
    D = np.column_stack([plane.direction1, plane.direction2])
    for k, (_, pts) in enumerate(references[:3]):
        coords = np.linalg.lstsq(D, (pts[frames] - theta0).T, rcond=None)[0].T
        np.testing.assert_allclose(race.frame_coords[k], coords, atol=1e-8)
        residual = pts[frames] - theta0 - coords @ D.T
        np.testing.assert_allclose(race.frame_distance[k], np.linalg.norm(residual, axis=1),
                                   atol=1e-8)
        inside = (plane.alpha_range[0] <= coords[:, 0]) & (coords[:, 0] <= plane.alpha_range[1])
        assert inside.all()


@pytest.mark.slow  # the race compiles three optimisers' scans (~8 s cold)
def test_escape_from_the_origin_plateau_matches_the_numpy_loss(race, references):
    f = race.escape_fraction
    for racer, (ref_loss, _) in zip(race.racers[:3], references, strict=False):
        L0, end = ref_loss[0], ref_loss[-1]
        level = L0 - f * (L0 - end)
        expected = int(np.argmax(ref_loss < level))
        assert np.all(ref_loss[expected:] < level)   # monotone enough: first = for good
        assert racer.escape_step is not None
        assert abs(racer.escape_step - expected) <= 1, racer.label
        assert racer.plateau_level == pytest.approx(L0, rel=1e-3)
    gd = race.racers[0]
    assert gd.escape_step > 30          # it did sit on the plateau at L(0) first


def test_an_explicit_escape_level_is_the_first_step_below_it(problem, references):
    spec, X, Y, theta0 = problem
    ref_loss, _ = references[0]
    level = 0.5 * (ref_loss[0] + ref_loss[-1])
    result = optimiser_race(spec, "squared", theta0, X, Y, RACERS[:1], STEPS,
                            escape_level=level, weight_stride=3)
    assert result.racers[0].escape_step == int(np.argmax(ref_loss < level))
    never = optimiser_race(spec, "squared", theta0, X, Y, RACERS[:1], STEPS,
                           escape_level=ref_loss[-1] - 1.0, weight_stride=3)
    assert never.racers[0].escape_step is None


# --------------------------------------------------------------------------- escape_step


def sigmoid_drop(T, centre, width, high, low):
    t = np.arange(T + 1, dtype=np.float64)
    loss = low + (high - low) / (1 + np.exp((t - centre) / width))
    return loss, np.abs(np.gradient(loss))


def test_escape_step_of_a_sigmoid_drop():
    loss, grad = sigmoid_drop(1000, 400.0, 10.0, 1.0, 0.1)
    level, threshold, step = escape_step(loss, grad, fraction=0.1)
    assert level == pytest.approx(1.0, abs=1e-6)
    # L_t < 1 − 0.09 ⇔ t > 400 + 10 ln(0.09 / 0.81): first integer after it.
    crossing = 400 + 10 * np.log(0.09 / 0.81)
    assert threshold == pytest.approx(0.91, abs=1e-6)
    assert step == int(np.floor(crossing)) + 1


def test_escape_step_waits_until_the_loss_stays_below():
    loss, grad = sigmoid_drop(1000, 600.0, 10.0, 1.0, 0.1)
    loss[200:205] = 0.5                       # a brief dip below the threshold, then back
    _, threshold, step = escape_step(loss, grad)
    assert step > 550 and np.all(loss[step:] < threshold) and loss[step - 1] >= threshold


def test_escape_step_is_none_without_a_real_drop_and_counts_an_early_escape():
    flat = 1.0 - 1e-6 * np.arange(501)
    assert escape_step(flat, np.full(501, 1e-6))[2] is None
    # Leaves the start at once, then stalls at a second saddle: the escape is the first drop.
    early, g1 = sigmoid_drop(1000, 5.0, 2.0, 1.0, 0.5)
    late, g2 = sigmoid_drop(1000, 700.0, 10.0, 0.5, 0.0)
    loss = early + late - 0.5
    level, _, step = escape_step(loss, g1 + g2)
    assert level == pytest.approx(loss[0])
    assert step == int(np.argmax(loss < loss[0] - 0.1 * (loss[0] - loss[-1])))


# --------------------------------------------------------------------------- bad input


def test_bad_races_raise_input_error(problem):
    spec, X, Y, theta0 = problem
    run = lambda racers, **kw: optimiser_race(spec, "squared", theta0, X, Y, racers, 10, **kw)
    with pytest.raises(InputError, match=f"1 to {MAX_RACERS} racers"):
        run([{"optimizer": "gd", "lr": 0.1 * (i + 1)} for i in range(MAX_RACERS + 1)])
    with pytest.raises(InputError, match="1 to"):
        run([])
    with pytest.raises(InputError, match="racer 2"):
        run([{"optimizer": "gd", "lr": 0.1}, {"optimizer": "gd", "lr": -1.0}])
    with pytest.raises(InputError, match="unknown option"):
        run([{"optimizer": "gd", "lr": 0.1, "beta": 3}])
    with pytest.raises(InputError, match="optimizer"):
        run([{"optimizer": "lbfgs", "lr": 0.1}])
    with pytest.raises(InputError, match="same label"):
        run([{"optimizer": "gd", "lr": 0.1}, {"optimizer": "gd", "lr": 0.1}])
    with pytest.raises(InputError, match="list"):
        run({"optimizer": "gd", "lr": 0.1})
    with pytest.raises(InputError, match="escape fraction"):
        run([{"optimizer": "gd", "lr": 0.1}], escape_fraction=1.5)
    with pytest.raises(InputError, match="escape level"):
        run([{"optimizer": "gd", "lr": 0.1}], escape_level=float("nan"))
    with pytest.raises(InputError, match="weight stride"):
        run([{"optimizer": "gd", "lr": 0.1}], weight_stride=0)
    with pytest.raises(InputError, match="initial point"):
        optimiser_race(spec, "squared", theta0[:-1], X, Y, [{"optimizer": "gd", "lr": 0.1}], 10)
