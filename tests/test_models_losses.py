"""Tests of compute._models and compute._losses against numpy written here (THEORY.md)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from compute._errors import InputError
from compute._limits import MAX_DEPTH, MAX_PARAMS, MAX_WIDTH
from compute._losses import (
    cross_entropy_loss,
    flat_objective,
    loss_function,
    model_loss,
    squared_loss,
)
from compute._models import (
    ModelSpec,
    flatten_params,
    forward,
    init_params,
    make_model,
    params_from_arrays,
    params_to_arrays,
    spec_from_arrays,
    unflatten_params,
)

NP_ACTIVATIONS = {
    "relu": lambda z: np.maximum(z, 0.0),
    "leaky_relu": lambda z: np.where(z > 0, z, 0.01 * z),
    "tanh": np.tanh,
    "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)),
    "identity": lambda z: z,
}


def np_forward(weights, biases, X, act):
    """f(X) = σ(… σ(X W_1ᵀ + b_1) …) W_Lᵀ + b_L, rows are samples (THEORY.md)."""
    h = X
    for k, W in enumerate(weights):
        h = h @ W.T
        if biases is not None:
            h = h + biases[k]
        if k < len(weights) - 1:
            h = NP_ACTIVATIONS[act](h)
    return h


def random_layers(rng, sizes, bias):
    Ws = [rng.standard_normal((sizes[k + 1], sizes[k])) for k in range(len(sizes) - 1)]
    bs = [rng.standard_normal(sizes[k + 1]) for k in range(len(sizes) - 1)] if bias else None
    return Ws, bs


def as_params(Ws, bs):
    layers = []
    for k, W in enumerate(Ws):
        layer = {"W": jnp.asarray(W, dtype=jnp.float64)}
        if bs is not None:
            layer["b"] = jnp.asarray(bs[k], dtype=jnp.float64)
        layers.append(layer)
    return tuple(layers)


# --------------------------------------------------------------------------- forward


@pytest.mark.parametrize("widths", [(), (4,), (3, 5, 2)])
def test_deep_linear_forward_is_the_matrix_product(rng, widths):
    spec = make_model("linear", 3, 2, widths)
    Ws, _ = random_layers(rng, spec.layer_sizes, False)
    X = rng.standard_normal((7, 3))
    product = np.eye(3)
    for W in Ws:
        product = W @ product
    out = np.asarray(forward(spec, as_params(Ws, None), jnp.asarray(X)))
    np.testing.assert_allclose(out, X @ product.T, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("act", list(NP_ACTIVATIONS))
@pytest.mark.parametrize("bias", [True, False])
def test_mlp_forward_matches_numpy(rng, act, bias):
    spec = make_model("mlp", 3, 2, (5, 4), activation=act, bias=bias)
    Ws, bs = random_layers(rng, spec.layer_sizes, bias)
    X = rng.standard_normal((9, 3))
    out = np.asarray(forward(spec, as_params(Ws, bs), jnp.asarray(X)))
    np.testing.assert_allclose(out, np_forward(Ws, bs, X, act), rtol=1e-12, atol=1e-12)


def test_relu_derivative_at_zero_is_zero():
    """THEORY.md §3: minima on ReLU kinks use the convention relu'(0) = 0."""
    spec = make_model("mlp", 1, 1, (1,), activation="relu", bias=True)
    # w1·x + b1 = 1·1 − 1 = 0 exactly: the hidden unit sits on its kink.
    theta = jnp.array([1.0, -1.0, 2.0, 0.5], dtype=jnp.float64)   # W1, b1, W2, b2
    X = jnp.array([[1.0]], dtype=jnp.float64)
    Y = jnp.array([[3.0]], dtype=jnp.float64)
    g = np.asarray(jax.grad(flat_objective(spec))(theta, X, Y))
    # f = 2·relu(0) + 0.5 = 0.5, residual r = −2.5; ∂L/∂W2 = r·relu(0) = 0, ∂L/∂b2 = r.
    np.testing.assert_allclose(g, [0.0, 0.0, 0.0, -2.5], atol=1e-15)


def test_leaky_relu_slope_below_zero():
    spec = make_model("mlp", 1, 1, (1,), activation="leaky_relu", bias=False)
    params = as_params([np.array([[1.0]]), np.array([[1.0]])], None)
    out = np.asarray(forward(spec, params, jnp.array([[-3.0], [2.0]], dtype=jnp.float64)))
    np.testing.assert_allclose(out.ravel(), [-0.03, 2.0], rtol=1e-14)


# --------------------------------------------------------------------------- flat order


def test_flat_order_is_w1_row_major_then_b1_then_w2():
    spec = make_model("mlp", 3, 2, (4,), activation="tanh", bias=True)
    W1 = np.arange(12.0).reshape(4, 3) + 100
    b1 = np.arange(4.0) + 200
    W2 = np.arange(8.0).reshape(2, 4) + 300
    b2 = np.arange(2.0) + 400
    flat = np.asarray(flatten_params(as_params([W1, W2], [b1, b2])))
    assert flat.shape == (12 + 4 + 8 + 2,) == (spec.n_params,)
    for i in range(4):
        for j in range(3):
            assert flat[i * 3 + j] == W1[i, j]
    np.testing.assert_array_equal(flat[12:16], b1)
    for i in range(2):
        for j in range(4):
            assert flat[16 + i * 4 + j] == W2[i, j]
    np.testing.assert_array_equal(flat[24:26], b2)
    assert spec.param_names() == ["W1", "b1", "W2", "b2"]


def test_flat_order_without_biases():
    W1, W2 = np.array([[1.0, 2.0]]), np.array([[3.0], [4.0], [5.0]])
    flat = np.asarray(flatten_params(as_params([W1, W2], None)))
    np.testing.assert_array_equal(flat, [1, 2, 3, 4, 5])


@pytest.mark.parametrize("bias", [True, False])
def test_unflatten_inverts_flatten(rng, bias):
    spec = make_model("mlp", 4, 3, (5, 2), activation="relu", bias=bias)
    theta = rng.standard_normal(spec.n_params)
    params = unflatten_params(spec, jnp.asarray(theta))
    for layer, ((rows, cols), b) in zip(params, spec.layer_shapes(), strict=True):
        assert layer["W"].shape == (rows, cols)
        assert (layer["b"].shape == (b,)) if bias else ("b" not in layer)
    np.testing.assert_array_equal(np.asarray(flatten_params(params)), theta)
    arrays = params_to_arrays(params)
    assert sorted(arrays) == sorted(spec.param_names())
    again = params_from_arrays(spec, arrays, dtype=jnp.float64)
    np.testing.assert_array_equal(np.asarray(flatten_params(again)), theta)


@pytest.mark.parametrize("sizes,bias", [((3, 2), False), ((3, 4, 2), True),
                                        ((10, 16, 16, 16, 4), True), ((5, 7, 1), False)])
def test_n_params_formula(sizes, bias):
    spec = ModelSpec(sizes, "relu" if bias else "identity", bias)
    expected = sum(sizes[k] * sizes[k + 1] + (sizes[k + 1] if bias else 0)
                   for k in range(len(sizes) - 1))
    assert spec.n_params == expected
    assert spec.depth == len(sizes) - 2


# --------------------------------------------------------------------------- losses


def test_squared_loss_is_half_mean_squared_norm(rng):
    pred, Y = rng.standard_normal((6, 3)), rng.standard_normal((6, 3))
    expected = sum(np.sum((pred[i] - Y[i]) ** 2) for i in range(6)) / (2 * 6)
    assert float(squared_loss(jnp.asarray(pred), jnp.asarray(Y))) == pytest.approx(expected,
                                                                               rel=1e-13)


def test_softmax_cross_entropy_matches_numpy(rng):
    logits = rng.standard_normal((8, 3)) * 3
    labels = rng.integers(0, 3, 8)
    Y = np.eye(3)[labels]
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    expected = -np.mean(log_p[np.arange(8), labels])
    got = float(cross_entropy_loss(jnp.asarray(logits), jnp.asarray(Y)))
    assert got == pytest.approx(expected, rel=1e-13)


def test_logistic_loss_for_one_signed_output(rng):
    f = rng.standard_normal((10, 1)) * 4
    y = np.where(rng.random((10, 1)) < 0.5, -1.0, 1.0)
    expected = np.mean(np.log1p(np.exp(-y * f)))
    got = float(cross_entropy_loss(jnp.asarray(f), jnp.asarray(y)))
    assert got == pytest.approx(expected, rel=1e-13)


def test_model_loss_and_flat_objective_agree_with_numpy(rng):
    spec = make_model("mlp", 2, 2, (3,), activation="sigmoid", bias=True)
    Ws, bs = random_layers(rng, spec.layer_sizes, True)
    X, Y = rng.standard_normal((5, 2)), rng.standard_normal((5, 2))
    expected = np.sum((np_forward(Ws, bs, X, "sigmoid") - Y) ** 2) / 10
    params = as_params(Ws, bs)
    got = float(model_loss(spec, params, jnp.asarray(X), jnp.asarray(Y), "squared"))
    assert got == pytest.approx(expected, rel=1e-13)
    theta = flatten_params(params)
    got_flat = float(flat_objective(spec, "squared")(theta, jnp.asarray(X), jnp.asarray(Y)))
    assert got_flat == pytest.approx(expected, rel=1e-13)


def test_unknown_loss_raises():
    with pytest.raises(InputError):
        loss_function("hinge")


# --------------------------------------------------------------------------- init


def test_init_is_deterministic_by_seed_and_differs_across_seeds():
    spec = make_model("mlp", 3, 2, (8, 8), activation="relu", bias=True)
    a = np.asarray(flatten_params(init_params(spec, 7, method="gaussian")))
    b = np.asarray(flatten_params(init_params(spec, 7, method="gaussian")))
    c = np.asarray(flatten_params(init_params(spec, 8, method="gaussian")))
    np.testing.assert_array_equal(a, b)
    assert np.mean(a == c) < 0.01


@pytest.mark.parametrize("shape", [(6, 4), (4, 6), (5, 5)])
def test_orthogonal_init_is_orthonormal(shape):
    spec = make_model("linear", shape[1], shape[0], ())
    W = np.asarray(init_params(spec, 3, method="orthogonal", dtype=jnp.float64)[0]["W"])
    rows, cols = shape
    gram = W.T @ W if rows >= cols else W @ W.T
    np.testing.assert_allclose(gram, np.eye(min(shape)), atol=1e-12)


def test_init_scale_and_variances():
    spec = make_model("mlp", 300, 200, (), activation="relu", bias=True)
    for method, var in (("xavier", 2.0 / 500), ("he", 2.0 / 300), ("gaussian", 1.0)):
        layer = init_params(spec, 0, method=method, dtype=jnp.float64)[0]
        W = np.asarray(layer["W"])
        # 60 000 entries: the sample variance is within 3 % of the target.
        assert np.var(W) == pytest.approx(var, rel=0.03), method
        if method != "gaussian":
            assert not np.any(np.asarray(layer["b"]))
        scaled = init_params(spec, 0, method=method, scale=1e-3, dtype=jnp.float64)[0]["W"]
        np.testing.assert_allclose(np.asarray(scaled), 1e-3 * W, rtol=1e-12)
    zero = init_params(spec, 0, method="zero")
    assert not np.any(np.asarray(flatten_params(zero)))


def test_init_respects_dtype():
    spec = make_model("linear", 2, 2, (2,))
    assert init_params(spec, 0, dtype=jnp.float32)[0]["W"].dtype == jnp.float32
    assert init_params(spec, 0, dtype=jnp.float64)[0]["W"].dtype == jnp.float64


# --------------------------------------------------------------------------- errors


def test_make_model_linear_forces_identity_without_bias():
    spec = make_model("linear", 3, 2, (4,), activation="relu", bias=True)
    assert spec == ModelSpec((3, 4, 2), "identity", False)
    assert spec.kind == "linear"


@pytest.mark.parametrize("kwargs", [
    dict(kind="cnn", d_x=2, d_y=1),
    dict(kind="mlp", d_x=2, d_y=1, activation="gelu"),
    dict(kind="mlp", d_x=2, d_y=1, widths=(2,) * (MAX_DEPTH + 1)),
    dict(kind="mlp", d_x=2, d_y=1, widths=(0,)),
    dict(kind="mlp", d_x=MAX_WIDTH + 1, d_y=1),
    dict(kind="mlp", d_x=MAX_WIDTH, d_y=MAX_WIDTH, widths=(MAX_WIDTH,) * 2),
])
def test_make_model_rejects_bad_input(kwargs):
    kind, d_x, d_y = kwargs.pop("kind"), kwargs.pop("d_x"), kwargs.pop("d_y")
    widths = kwargs.pop("widths", ())
    if kind == "mlp" and widths == (MAX_WIDTH,) * 2:
        assert ModelSpec((d_x, *widths, d_y), "relu", True).n_params > MAX_PARAMS
    with pytest.raises(InputError):
        make_model(kind, d_x, d_y, widths, **kwargs)


def test_init_rejects_unknown_method_and_bad_scale():
    spec = make_model("linear", 2, 1, ())
    with pytest.raises(InputError):
        init_params(spec, 0, method="kaiming")
    with pytest.raises(InputError):
        init_params(spec, 0, scale=float("nan"))


def test_spec_from_arrays_reads_the_architecture():
    arrays = {"W1": np.zeros((4, 3)), "b1": np.zeros(4), "W2": np.zeros((2, 4)),
              "b2": np.zeros(2)}
    spec = spec_from_arrays(arrays, kind="mlp", activation="tanh")
    assert spec == ModelSpec((3, 4, 2), "tanh", True)
    assert spec_from_arrays({"W1": np.zeros((2, 5))}) == ModelSpec((5, 2), "identity", False)


@pytest.mark.parametrize("arrays,kind", [
    ({}, "linear"),
    ({"W1": np.zeros(3)}, "linear"),
    ({"W1": np.zeros((4, 3)), "W2": np.zeros((2, 5))}, "linear"),
    ({"W1": np.zeros((4, 3)), "b1": np.zeros(4), "W2": np.zeros((2, 4))}, "mlp"),
    ({"W1": np.zeros((4, 3)), "b1": np.zeros(4)}, "linear"),
])
def test_spec_from_arrays_rejects_bad_weights(arrays, kind):
    with pytest.raises(InputError):
        spec_from_arrays(arrays, kind=kind)


@pytest.mark.parametrize("arrays", [
    {"W1": np.zeros((3, 4)), "b1": np.zeros(4), "W2": np.zeros((2, 4)), "b2": np.zeros(2)},
    {"W1": np.zeros((4, 3)), "b1": np.zeros(5), "W2": np.zeros((2, 4)), "b2": np.zeros(2)},
    {"W1": np.full((4, 3), np.nan), "b1": np.zeros(4), "W2": np.zeros((2, 4)),
     "b2": np.zeros(2)},
    {"W1": np.zeros((4, 3)), "b1": np.zeros(4), "W2": np.zeros((2, 4)),
     "b2": np.array([0.0, np.inf])},
])
def test_params_from_arrays_rejects_bad_shapes_and_values(arrays):
    spec = ModelSpec((3, 4, 2), "relu", True)
    with pytest.raises(InputError):
        params_from_arrays(spec, arrays)
