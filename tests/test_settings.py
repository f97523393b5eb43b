"""The settings layer: validation of hostile input, URL state, canonical cache keys, and the
web process staying free of JAX."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from landscape_app import settings as S
from tests.reference import path_step_rows

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- no JAX on the web


@pytest.mark.parametrize("statement", [
    "import landscape_app",
    "import landscape_app.settings, landscape_app.cache, landscape_app.compute_server",
    "import app",
])
def test_web_process_imports_no_jax(statement):
    code = f"{statement}; import sys; print(sorted(m for m in sys.modules " \
           "if m == 'jax' or m.startswith('jax.') or m == 'compute' or m.startswith('compute.')))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("LANDSCAPE_INPROCESS", None)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1].replace("'", '"')) == []


def test_limits_are_read_from_compute_limits_file():
    from compute import _limits

    for name in ("MAX_GRID", "MAX_STEPS", "MAX_PARAMS", "MAX_SAMPLES", "MAX_STARTS",
                 "MAX_LANCZOS_STEPS", "MAX_SPAN", "MAX_DEPTH", "MAX_WIDTH"):
        assert getattr(S.LIMITS, name) == getattr(_limits, name)


def test_cache_dir_agrees_with_compute_backend():
    from compute._backend import cache_dir

    assert S.cache_dir() == cache_dir()


# --------------------------------------------------------------------------- datasets table


@pytest.mark.parametrize("name", list(S.BUILTIN_DATASETS))
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("n_samples", [None, 30])
def test_builtin_table_matches_the_loader(name, signed, n_samples):
    from compute import InputError
    from compute._datasets import BUILTIN_DATASETS, load_dataset

    assert set(S.BUILTIN_DATASETS) == set(BUILTIN_DATASETS)
    s = {**S.DEFAULTS, "dataset": name, "signed_targets": signed, "n_samples": n_samples}
    clean, errors = S.validate_settings(s)
    try:
        ds = load_dataset(name, n_samples=n_samples, one_hot=not signed)
    except InputError:  # e.g. ±1 targets for three classes: validation must refuse too
        assert "signed_targets" in errors
        return
    assert "signed_targets" not in errors
    rows, d_x, d_y, task = S.dataset_shape(clean)
    assert (rows, d_x, d_y, task) == (ds.n_samples, ds.d_x, ds.d_y, ds.task)


def test_n_params_matches_model_spec():
    from compute import make_model

    for kind, widths, bias in [("linear", (4, 4), False), ("mlp", (3, 5, 2), True),
                               ("mlp", (), True), ("mlp", (7,), False)]:
        spec = make_model(kind, 6, 3, widths, bias=bias)
        assert S.n_params([6, *widths, 3], bias) == spec.n_params


# --------------------------------------------------------------------------- validation


def test_defaults_are_valid_and_complete():
    clean, errors = S.validate_settings(S.DEFAULTS)
    assert errors == {}
    assert clean == S.DEFAULTS
    assert S.validate_settings({}) == (S.DEFAULTS, {})


BAD = [
    ({"grid": 1000}, "grid", "201"),
    ({"grid": 2}, "grid", "3"),
    ({"grid": "many"}, "grid", "whole number"),
    ({"grid": 41.5}, "grid", "whole number"),
    ({"grid": True}, "grid", "whole number"),
    ({"steps": 10**30}, "steps", "100000"),
    ({"steps": float("nan")}, "steps", "whole number"),
    ({"steps": -5}, "steps", "from 1"),
    ({"lr": 0}, "lr", "greater than 0"),
    ({"lr": "nan"}, "lr", "number"),
    ({"lr": float("inf")}, "lr", "number"),
    ({"lr": [0.1]}, "lr", "number"),
    ({"momentum": 1.0}, "momentum", "below 1"),
    ({"span": -1}, "span", "greater than 0"),
    ({"span": 1e9}, "span", "1000"),
    ({"noise": -0.1}, "noise", "from 0"),
    ({"init_scale": {"a": 1}}, "init_scale", "number"),
    ({"model": "transformer"}, "model", "linear, mlp"),
    ({"model": None}, "model", "linear, mlp"),
    ({"activation": ["relu"]}, "activation", "one of"),
    ({"plane": "hessian "}, "plane", "one of"),
    ({"dataset": "mnist"}, "dataset", "linear_teacher"),
    ({"dataset": "/etc/passwd"}, "dataset", "one of"),
    ({"dataset": "upload:" + "0" * 64}, "dataset", "upload"),
    ({"dataset": "upload:../../x"}, "dataset", "one of"),
    ({"widths": [4, 0]}, "widths", "from 1 to 512"),
    ({"widths": [4] * 9}, "widths", "at most 8"),
    ({"widths": [[4]]}, "widths", "list"),
    ({"widths": "4,y"}, "widths", "list"),
    ({"widths": 4}, "widths", "list"),
    ({"widths": [600]}, "widths", "512"),
    ({"bias": "maybe"}, "bias", "true or false"),
    ({"seed": -1}, "seed", "from 0"),
    ({"n_samples": 0}, "n_samples", "from 1"),
    ({"n_samples": 10**6}, "n_samples", "100000"),
    ({"batch": 500}, "batch", "number of samples (200)"),
    ({"k": 0}, "k", "from 1"),
    ({"n_starts": 5000}, "n_starts", "1024"),
    ({"precision": "float16"}, "precision", "float32, float64"),
    ({"loss": "cross_entropy"}, "loss", "regression"),
    ({"loss": "cross_entropy", "dataset": "swirszcz_d1"}, "loss", "regression"),
    ({"signed_targets": True, "dataset": "iris"}, "signed_targets", "3 classes"),
    ({"n_samples": 5, "dataset": "linear_teacher"}, "n_samples", "at least 8"),
    ({"widths": [512] * 8, "model": "mlp"}, "widths", "200,000"),
    ({"spectrum_method": "exact", "widths": [64, 64]}, "spectrum_method", "lanczos"),
    ({"selected_step": 5000, "steps": 100}, "selected_step", "between 0 and steps (100)"),
    ({"center": "selected"}, "center", "selected point"),
    ({"dataset": "blobs", "n_samples": 100000, "widths": [512, 256], "model": "mlp",
      "steps": 100000}, "steps", "too much work"),
    ({"dataset": "blobs", "n_samples": 100000, "widths": [512, 256], "model": "mlp",
      "steps": 10, "grid": 201}, "grid", "too much work"),
]


@pytest.mark.parametrize("raw, field, phrase", BAD, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD)])
def test_bad_input_gives_a_message_on_its_field(raw, field, phrase):
    clean, errors = S.validate_settings({**S.DEFAULTS, **raw})
    assert field in errors, errors
    assert phrase in errors[field], errors[field]
    assert len(errors[field]) < 300
    _assert_within_limits(clean)
    # the field falls back to a safe value, and the other fields keep theirs
    again, errors2 = S.validate_settings(clean)
    assert errors2 == {} and again == clean


GOOD = [
    ({"grid": "61"}, "grid", 61),
    ({"grid": 61.0}, "grid", 61),
    ({"lr": "0.1"}, "lr", 0.1),
    ({"widths": "16, 16"}, "widths", [16, 16]),
    ({"widths": ""}, "widths", []),
    ({"widths": [3.0, "5"]}, "widths", [3, 5]),
    ({"bias": "false"}, "bias", False),
    ({"bias": []}, "bias", False),
    ({"bias": ["on"]}, "bias", True),
    ({"n_samples": ""}, "n_samples", None),
    ({"noise": None}, "noise", None),
    ({"preprocess": "standardize"}, "preprocess", "standardise"),
    ({"loss": "cross_entropy", "dataset": "two_moons"}, "loss", "cross_entropy"),
]


@pytest.mark.parametrize("raw, field, value", GOOD)
def test_loose_but_clear_input_is_accepted(raw, field, value):
    clean, errors = S.validate_settings({**S.DEFAULTS, **raw})
    assert errors == {}
    assert clean[field] == value and type(clean[field]) is type(value)


@pytest.mark.parametrize("raw", [None, 3, "grid=5", [1, 2], {"grid": object()}, {1: 2},
                                 {"grid": float("-inf")}])
def test_non_mappings_and_junk_never_raise(raw):
    clean, errors = S.validate_settings(raw)
    _assert_within_limits(clean)
    assert set(clean) == set(S.DEFAULTS)


def test_a_selected_step_dropped_by_the_steps_budget_is_reported():
    """Regression: the work budget lowers steps; a selected step (and a 'selected' centre)
    beyond the new steps must get a message, not silently become None / 'final'."""
    raw = {"model": "mlp", "n_samples": 100_000, "steps": 100_000, "selected_step": 100_000,
           "center": "selected"}
    clean, errors = S.validate_settings(raw)
    assert clean["steps"] < 100_000 and "steps" in errors
    assert clean["selected_step"] is None and "selected_step" in errors
    assert clean["center"] == "final" and "center" in errors
    assert clean["n_samples"] == 100_000 and "n_samples" not in errors
    assert S.validate_settings(clean) == (clean, {})


def test_unknown_keys_are_ignored():
    clean, errors = S.validate_settings({"__proto__": 1, "grid": 11, "GRID": 99})
    assert errors == {} and clean["grid"] == 11


def _assert_within_limits(s: dict) -> None:
    L = S.LIMITS
    assert set(s) == set(S.DEFAULTS)
    assert s["model"] in ("linear", "mlp")
    assert isinstance(s["widths"], list) and len(s["widths"]) <= L.MAX_DEPTH
    assert all(type(w) is int and 1 <= w <= L.MAX_WIDTH for w in s["widths"])
    assert type(s["grid"]) is int and S.MIN_GRID <= s["grid"] <= L.MAX_GRID
    assert type(s["steps"]) is int and 1 <= s["steps"] <= L.MAX_STEPS
    assert type(s["n_starts"]) is int and 1 <= s["n_starts"] <= L.MAX_STARTS
    assert type(s["k"]) is int and 1 <= s["k"] <= L.MAX_LANCZOS_STEPS
    assert isinstance(s["lr"], float) and 0 < s["lr"] <= S.MAX_LR and math.isfinite(s["lr"])
    assert 0 < s["span"] <= L.MAX_SPAN
    assert 0 <= s["momentum"] < 1
    assert s["n_samples"] is None or 1 <= s["n_samples"] <= L.MAX_SAMPLES
    assert s["selected_step"] is None or 0 <= s["selected_step"] <= s["steps"]
    # centre "selected" needs a selected point: a path step or a point of the plane
    assert s["center"] != "selected" or s["selected_step"] is not None \
        or s["selected_alpha"] is not None
    rows, d_x, d_y, _ = S.dataset_shape(s)
    bias = s["bias"] and s["model"] == "mlp"
    P = S.n_params([d_x, *s["widths"], d_y], bias)
    assert P <= L.MAX_PARAMS
    assert s["batch"] is None or s["batch"] <= rows
    step_rows = path_step_rows(s, rows, d_x, d_y)
    assert s["steps"] * step_rows * P <= S.MAX_PATH_WORK or s["steps"] == 1
    assert s["grid"] ** 2 * rows * P <= S.MAX_SURFACE_WORK or s["grid"] == S.MIN_GRID
    assert s["n_starts"] * s["steps"] * step_rows * P <= S.MAX_STARTS_WORK \
        or s["n_starts"] == 1
    for name in ("bias", "signed_targets", "log_scale"):
        assert type(s[name]) is bool


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20)

field_values = {
    name: st.one_of(json_values, st.sampled_from(list(S._CHOICES.get(name, ("x",)))),
                    st.integers(-10, 3000), st.floats(-10, 1e6),
                    st.lists(st.integers(-2, 600), max_size=10),
                    st.sampled_from(list(S.BUILTIN_DATASETS)))
    for name in S.DEFAULTS
}


@hyp_settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_fuzz_any_json_value_never_raises(raw):
    clean, errors = S.validate_settings(raw)
    _assert_within_limits(clean)
    assert all(isinstance(k, str) and isinstance(v, str) and v for k, v in errors.items())


@hyp_settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.fixed_dictionaries({}, optional=field_values))
def test_fuzz_schema_shaped_payloads_stay_within_limits(raw):
    clean, errors = S.validate_settings(raw)
    _assert_within_limits(clean)
    for name in raw:
        blank = raw[name] is None or (isinstance(raw[name], str) and not raw[name].strip())
        assert name in errors or clean[name] is not None or blank \
            or name in ("n_samples", "noise", "batch", "selected_step")
    # clean settings are a fixed point
    assert S.validate_settings(clean) == (clean, {})


# --------------------------------------------------------------------------- URL state


valid_settings = st.fixed_dictionaries({}, optional=field_values).map(
    lambda raw: S.validate_settings(raw)[0])


@hyp_settings(max_examples=120, deadline=None)
@given(valid_settings)
def test_url_round_trip(s):
    query = S.settings_to_query(s)
    assert len(query) < 2000
    back, errors = S.validate_settings(S.settings_from_query("?" + query))
    assert errors == {}
    assert back == s


def test_url_of_defaults_is_empty_and_junk_queries_are_harmless():
    assert S.settings_to_query(S.DEFAULTS) == ""
    raw = S.settings_from_query("grid=abc&lr=&widths=1,,2&bias=yes&zzz=1&steps=1e3")
    assert raw == {"grid": "abc", "lr": "", "widths": [1, 2], "bias": "yes", "steps": 1000.0}
    clean, errors = S.validate_settings(raw)
    assert set(errors) == {"grid", "lr"} and clean["steps"] == 1000 and clean["bias"] is True
    assert S.settings_from_query(None) == {}
    assert S.settings_from_query("%%%&&&==") == {}
    assert S.settings_from_query("a=" + "x" * 100_000) == {}


# --------------------------------------------------------------------------- cache keys


def test_key_ignores_display_fields_and_float_noise():
    base = S.DEFAULTS
    for task in S.TASK_NAMES:
        key = S.canonical_key(task, base)
        assert key.startswith(f"landscape:{task}:")
        assert S.canonical_key(task, {**base, "log_scale": True}) == key
        assert S.canonical_key(task, {**base, "lr": 0.05000000000001}) == key
        assert S.canonical_key(task, dict(reversed(list(base.items())))) == key
        assert S.canonical_key(task, {**base, "span": 1}) == key  # 1 and 1.0 agree
    assert S.canonical_key("path", {**base, "init_scale": 0.1000000000001}) == \
        S.canonical_key("path", base)
    assert S.canonical_key("path", {**base, "lr": 0.0501}) != S.canonical_key("path", base)


CHANGES = {
    "model": "linear", "widths": [4, 5], "activation": "tanh", "bias": False,
    "loss": "cross_entropy", "dataset": "two_moons", "n_samples": 50, "noise": 0.2,
    "data_seed": 1, "preprocess": "whiten", "signed_targets": True, "init": "xavier",
    "init_scale": 0.2, "seed": 3, "optimizer": "adam", "lr": 0.01, "steps": 100, "batch": 8,
    "momentum": 0.5, "lambda_every": 10, "plane": "random", "span": 2.0, "grid": 21,
    "center": "init", "selected_step": 7, "spectrum_method": "lanczos", "k": 3,
    "n_starts": 8, "precision": "float32",
}


@pytest.mark.parametrize("task", S.TASK_NAMES)
def test_key_changes_with_every_field_the_task_uses(task):
    base = {**S.DEFAULTS, "model": "mlp", "center": "selected", "selected_step": 3}
    key = S.canonical_key(task, base)
    used = set(S.compute_fields(task, base))
    assert "log_scale" not in used
    for field, value in CHANGES.items():
        changed = S.canonical_key(task, {**base, field: value})
        assert (changed != key) == (field in used), field
    # what each task must depend on, at least
    must = {"dataset", "widths", "seed", "init_scale", "precision", "loss"}
    assert must <= used
    if task in ("surface", "cut"):
        assert {"plane", "span", "grid", "center", "selected_step"} <= used
    if task in ("path", "many_starts", "surface", "spectrum", "theory"):
        assert {"lr", "steps", "optimizer"} <= used
    if task == "spectrum":
        assert {"spectrum_method", "k", "selected_step"} <= used
    if task == "many_starts":
        assert "n_starts" in used


def test_linear_models_ignore_activation_and_bias_in_keys():
    base = S.DEFAULTS
    assert base["model"] == "linear"
    key = S.canonical_key("path", base)
    assert S.canonical_key("path", {**base, "activation": "tanh", "bias": False}) == key


def test_key_is_stable_across_processes():
    code = ("from landscape_app.settings import canonical_key, DEFAULTS; "
            "print(canonical_key('surface', {**DEFAULTS, 'lr': 0.1, 'widths': [3, 2]}))")
    keys = set()
    for seed in ("0", "123"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60)
        keys.add(out.stdout.strip())
    assert keys == {S.canonical_key("surface", {**S.DEFAULTS, "lr": 0.1, "widths": [3, 2]})}
