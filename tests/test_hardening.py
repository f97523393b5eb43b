"""Hardening of the web process (landscape_app/hardening.py), the validation layer under
hostile input, and docs/limits.md against compute/_limits.py.

The hardening tests use a tiny Dash app and Flask's test client (no server, no JAX); the
real app's HTTP surface is fuzzed by tests/test_http_fuzz.py.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import re
from collections.abc import Mapping
from pathlib import Path

import dash
import numpy as np
import pytest
from dash import Input, Output, dcc, html
from dash.exceptions import PreventUpdate
from hypothesis import HealthCheck, assume, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from landscape_app import hardening
from landscape_app import settings as S
from landscape_app.hardening import (
    MAX_JSON_DEPTH,
    MAX_REQUEST_BYTES,
    BadCallbackRequest,
    check_callback_request,
    install_hardening,
)
from tests.reference import path_step_rows

ROOT = Path(__file__).resolve().parents[1]
L = S.LIMITS
SECRET = "secret-detail-/etc/passwd"


# --------------------------------------------------------------------------- a tiny app


def tiny_app(hardened: bool = True) -> dash.Dash:
    app = dash.Dash(__name__)
    app.layout = html.Div([dcc.Input(id="x", value="1"), html.Div(id="y")])

    @app.callback(Output("y", "children"), Input("x", "value"))
    def echo(value):
        if value == "boom":
            raise RuntimeError(SECRET)
        if value == "skip":
            raise PreventUpdate
        return f"got {value}"

    @app.server.route("/explode")
    def explode():
        raise RuntimeError(SECRET)

    @app.server.route("/foreign-500")
    def foreign():
        return f'Traceback (most recent call last):\n  File "/app/x.py", line 1\n{SECRET}', 500

    if hardened:
        install_hardening(app.server)
    return app


def body(value: object = "1", **overrides) -> dict:
    return {"output": "y.children", "outputs": {"id": "y", "property": "children"},
            "inputs": [{"id": "x", "property": "value", "value": value}],
            "changedPropIds": ["x.value"], **overrides}


def post(app: dash.Dash, payload: object, *, raw: bool = False,
         content_type: str = "application/json"):
    data = payload if raw else json.dumps(payload)
    return app.server.test_client().post("/_dash-update-component", data=data,
                                         content_type=content_type)


@pytest.fixture(scope="module")
def app() -> dash.Dash:
    return tiny_app()


def assert_no_leak(response) -> None:
    text = response.get_data(as_text=True)
    for marker in ("Traceback", 'File "', SECRET, "site-packages"):
        assert marker not in text, text[:500]


# --------------------------------------------------------------------------- dispatch


def test_normal_callback_answer_is_unchanged(app):
    plain = post(tiny_app(hardened=False), body("hello"))
    hardened = post(app, body("hello"))
    assert hardened.status_code == plain.status_code == 200
    assert hardened.get_json() == plain.get_json() == {
        "multi": True, "response": {"y": {"children": "got hello"}}}
    assert hardened.headers["Content-Type"] == plain.headers["Content-Type"]


def test_prevent_update_is_still_204(app):
    assert post(app, body("skip")).status_code == 204


def test_a_callback_that_raises_answers_422_with_a_logged_reference(app, caplog):
    with caplog.at_level(logging.ERROR, logger="landscape.hardening"):
        response = post(app, body("boom"))
    assert response.status_code == 422
    assert_no_leak(response)
    ref = re.search(r"reference ([0-9a-f]{10})", response.get_json()["error"]).group(1)
    records = [r for r in caplog.records if ref in r.getMessage()]
    assert records and records[0].exc_info and SECRET in str(records[0].exc_info[1])


def test_dash_itself_answers_500_where_hardening_answers_400():
    """Why the guard exists: without it Dash 4 turns these into 500s (its KeyError for an
    unknown output, its AttributeError for a non-object body)."""
    plain, hard = tiny_app(hardened=False), tiny_app()
    plain.server.config["PROPAGATE_EXCEPTIONS"] = False
    for payload in (body(output="nope.children"), [1, 2], body(inputs=[])):
        assert post(plain, payload).status_code == 500
        response = post(hard, payload)
        assert response.status_code == 400, payload
        assert_no_leak(response)


@pytest.mark.parametrize("raw", [
    b"", b"{", b'{"output": ', b"null", b"[]", b'"x"', b"1e308", b"NaN",
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
    b'{"output": 9' + b"9" * 10_000 + b"}",
    b'{"output": "\xff\xfe"}',
], ids=["empty", "brace", "truncated", "null", "list", "string", "number", "nan",
        "nested-list", "nested-dict", "huge-int", "bad-utf8"])
def test_malformed_bodies_answer_400(app, raw):
    response = post(app, raw, raw=True)
    assert response.status_code == 400, response.get_data()[:200]
    assert_no_leak(response)
    assert "error" in response.get_json()


@pytest.mark.parametrize("overrides", [
    {"output": 5}, {"output": ""}, {"output": "nope.children"}, {"output": "x" * 30_000},
    {"inputs": None}, {"inputs": {"a": 1}}, {"inputs": []},
    {"inputs": [{"id": "x", "property": "value"}] * 2},
    {"inputs": [{"value": 1}]}, {"inputs": [{"id": 5, "property": "value"}]},
    {"inputs": [[{"id": "x"}]]}, {"state": "junk"}, {"outputs": [1, 2]},
    {"outputs": {"id": None}}, {"changedPropIds": "x.value"}, {"changedPropIds": [1]},
], ids=lambda o: json.dumps(o)[:40])
def test_malformed_envelopes_answer_400(app, overrides):
    response = post(app, body(**overrides))
    assert response.status_code == 400
    assert_no_leak(response)


def test_nesting_limit(app):
    value: list = []
    for _ in range(MAX_JSON_DEPTH):
        value = [value]
    assert post(app, body(value)).status_code == 400
    shallow: list = []
    for _ in range(MAX_JSON_DEPTH - 8):
        shallow = [shallow]
    assert post(app, body(shallow)).status_code == 200


@pytest.mark.parametrize("value", [1e308, -1e308, 2**200, "NaN", "x" * 2**20, None,
                                   {"a": [1, {"b": None}]}, True])
def test_hostile_values_reach_the_callback_as_values(app, value):
    response = post(app, body(value))
    assert response.status_code == 200
    assert response.get_json()["response"]["y"]["children"] == f"got {value}"


def test_wrong_content_type_is_4xx(app):
    response = post(app, body(), content_type="text/plain")
    assert 400 <= response.status_code < 500
    assert_no_leak(response)


def test_request_size_limit(app):
    """The limit admits the largest legal upload as dcc.Upload sends it (a base64 data URL
    inside the callback's JSON) and refuses anything beyond it with 413."""
    upload = b"\x00" * L.MAX_UPLOAD_BYTES
    url = "data:application/octet-stream;base64," + base64.b64encode(upload).decode()
    largest = json.dumps({"output": "..ctl-dataset.value...ctl-dataset.options..",
                          "inputs": [{"id": "upload", "property": "contents", "value": url}],
                          "state": [{"id": "upload", "property": "filename",
                                     "value": "x" * 200 + ".npz"}]})
    assert len(largest) < MAX_REQUEST_BYTES <= len(largest) + 2**21
    assert app.server.config["MAX_CONTENT_LENGTH"] == MAX_REQUEST_BYTES
    response = post(app, b" " * (MAX_REQUEST_BYTES + 1), raw=True)
    assert response.status_code == 413
    assert_no_leak(response)


# --------------------------------------------------------------------------- the server


def test_other_routes_answer_500_without_a_traceback(app, caplog):
    client = app.server.test_client()
    with caplog.at_level(logging.ERROR, logger="landscape.hardening"):
        response = client.get("/explode")
    assert response.status_code == 500
    assert_no_leak(response)
    assert any(SECRET in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


def test_a_traceback_in_a_5xx_body_is_scrubbed(app):
    response = app.server.test_client().get("/foreign-500")
    assert response.status_code == 500
    assert_no_leak(response)


def test_debug_is_off_even_when_asked_for():
    app = dash.Dash(__name__)
    app.layout = html.Div()
    app.server.debug = True
    app.server.testing = True  # would make Flask re-raise exceptions to the caller
    install_hardening(app.server)
    assert app.server.debug is False
    assert app.server.config["PROPAGATE_EXCEPTIONS"] is False


def test_security_headers_on_every_response(app):
    client = app.server.test_client()
    for response in (client.get("/"), client.get("/_dash-layout"), post(app, body()),
                     post(app, b"{", raw=True), client.get("/explode")):
        for name, value in hardening.SECURITY_HEADERS.items():
            assert response.headers.get(name) == value, (name, response.status_code)
    csp = hardening.CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'self'" in csp and "object-src 'none'" in csp


def test_csp_can_be_turned_off_and_install_is_idempotent(monkeypatch):
    monkeypatch.setenv("LANDSCAPE_CSP", "off")
    app = tiny_app()
    install_hardening(app.server)  # a second call changes nothing
    response = post(app, body("boom"))
    assert response.status_code == 422
    assert "Content-Security-Policy" not in response.headers
    assert response.headers.getlist("X-Frame-Options") == ["SAMEORIGIN"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=25)


@hyp_settings(max_examples=300, deadline=None)
@given(st.one_of(json_values, st.fixed_dictionaries(
    {}, optional={"output": json_values | st.just("y.children"), "inputs": json_values,
                  "state": json_values, "outputs": json_values,
                  "changedPropIds": json_values})))
def test_envelope_check_raises_only_its_own_error(payload):
    for cmap in (None, {"y.children": {"inputs": [1], "state": [], "callback": id}}):
        try:
            check_callback_request(payload, cmap)
        except BadCallbackRequest as exc:
            assert str(exc) and len(str(exc)) < 200


# --------------------------------------------------------------------------- the real app


@pytest.fixture(scope="module")
def real_app():
    from landscape_app import create_app

    return create_app()


def test_create_app_installs_the_hardening(real_app):
    """The lead wires ``install_hardening(app.server)`` into ``create_app``."""
    assert real_app.server.extensions.get("landscape_hardening"), \
        "create_app() does not call landscape_app.hardening.install_hardening(app.server)"
    assert real_app.server.config["MAX_CONTENT_LENGTH"] == MAX_REQUEST_BYTES


def test_real_app_refuses_malformed_envelopes(real_app):
    install_hardening(real_app.server)  # no-op once create_app does it
    client = real_app.server.test_client()
    deps = client.get("/_dash-dependencies").get_json()
    assert deps and all("output" in d for d in deps)
    for payload in ({"output": "nope.children", "inputs": []}, [1],
                    {"output": deps[0]["output"], "inputs": "junk"}):
        response = client.post("/_dash-update-component", json=payload)
        assert response.status_code == 400
        assert_no_leak(response)


# --------------------------------------------------------------------------- validation


INT_FIELDS = {  # field: (low, high, optional) as the compute layer accepts them
    "n_samples": (1, L.MAX_SAMPLES, True), "data_seed": (0, 2**31 - 1, False),
    "seed": (0, 2**31 - 1, False), "steps": (1, L.MAX_STEPS, False),
    "batch": (1, L.MAX_SAMPLES, True), "lambda_every": (0, L.MAX_STEPS, False),
    "grid": (3, L.MAX_GRID, False), "selected_step": (0, L.MAX_STEPS, True),
    # compute.hessian_spectrum: k ≤ MAX_LANCZOS_STEPS // 2 (k at each end of the spectrum)
    "k": (1, L.MAX_LANCZOS_STEPS // 2, False), "n_starts": (1, L.MAX_STARTS, False),
}
FLOAT_FIELDS = {  # field: (low, high, low inclusive, high inclusive, optional)
    "noise": (0.0, 1e3, True, True, True), "init_scale": (0.0, 1e3, True, True, False),
    "lr": (0.0, 1e3, False, True, False), "momentum": (0.0, 1.0, True, False, False),
    "span": (0.0, L.MAX_SPAN, False, True, False),
}


def parameter_count(sizes: list[int], bias: bool) -> int:
    return sum(a * b + (b if bias else 0) for a, b in zip(sizes[:-1], sizes[1:], strict=False))


def assert_computable(s: dict) -> None:
    """Clean settings the compute layer accepts, checked from the limits (not the code)."""
    assert set(s) == set(S.DEFAULTS)
    for name, (low, high, optional) in INT_FIELDS.items():
        v = s[name]
        assert (optional and v is None) or (type(v) is int and low <= v <= high), (name, v)
    for name, (low, high, low_in, high_in, optional) in FLOAT_FIELDS.items():
        v = s[name]
        if optional and v is None:
            continue
        assert isinstance(v, float) and math.isfinite(v), (name, v)
        assert (low <= v if low_in else low < v) and (v <= high if high_in else v < high), \
            (name, v)
    assert type(s["widths"]) is list and len(s["widths"]) <= L.MAX_DEPTH
    assert all(type(w) is int and 1 <= w <= L.MAX_WIDTH for w in s["widths"])
    for name in ("bias", "signed_targets", "log_scale"):
        assert type(s[name]) is bool
    rows, d_x, d_y, _ = S.dataset_shape(s)
    assert 1 <= rows <= L.MAX_SAMPLES and max(d_x, d_y) <= L.MAX_FEATURES
    P = parameter_count([d_x, *s["widths"], d_y], s["bias"] and s["model"] == "mlp")
    assert P <= L.MAX_PARAMS
    assert s["spectrum_method"] != "exact" or P <= L.MAX_PARAMS_EXACT_HESSIAN
    assert s["batch"] is None or s["batch"] <= rows
    assert s["selected_step"] is None or s["selected_step"] <= s["steps"]
    # centre "selected" needs a selected point: a path step or a point of the plane
    assert s["center"] != "selected" or s["selected_step"] is not None \
        or s["selected_alpha"] is not None
    work = rows * P
    step_work = path_step_rows(s, rows, d_x, d_y) * P
    assert s["steps"] * step_work <= S.MAX_PATH_WORK or s["steps"] == 1
    assert s["grid"] ** 2 * work <= S.MAX_SURFACE_WORK or s["grid"] == 3
    assert s["n_starts"] * s["steps"] * step_work <= S.MAX_STARTS_WORK or s["n_starts"] == 1
    S.canonical_key("surface", s)  # keys are computable too


def boundary(low: float, high: float) -> st.SearchStrategy:
    """Values at, just inside and just outside ``[low, high]``, and far outside."""
    points = [low, high, low - 1, high + 1, low + 1, high - 1, -high, 2 * high, high * 10**6]
    return st.sampled_from(points) | st.sampled_from(points).map(float) \
        | st.sampled_from(points).map(lambda v: str(v))


HOSTILE = st.sampled_from([
    float("nan"), float("inf"), -float("inf"), 1e308, -1e308, 5e-324, 2**63, 2**1000,
    -(2**63), "nan", "NaN", "inf", "-Infinity", "1e999", "0x10", "1_000", "١٢", " 12 ",
    "12abc", "", "   ", None, True, False, [], {}, [None], b"12", bytearray(b"1"),
    np.float64("nan"), np.int64(7), np.float32(3.5), np.array([1, 2]), object(),
    "x" * 100_000, [4] * 100_000, "4," * 5_000, {"a": {"b": {"c": []}}},
])

field_strategies = {name: HOSTILE | boundary(low, high)
                    for name, (low, high, _) in INT_FIELDS.items()}
field_strategies.update({name: HOSTILE | boundary(low, high) | st.floats()
                         for name, (low, high, *_rest) in FLOAT_FIELDS.items()})
field_strategies.update({
    "widths": HOSTILE | st.lists(st.one_of(boundary(1, L.MAX_WIDTH), HOSTILE), max_size=10)
    | st.lists(st.integers(1, L.MAX_WIDTH), max_size=L.MAX_DEPTH)
    | st.lists(st.integers(1, L.MAX_WIDTH), max_size=L.MAX_DEPTH).map(
        lambda w: ", ".join(map(str, w))),
    "dataset": HOSTILE | st.sampled_from([*S.BUILTIN_DATASETS, "upload:" + "a" * 64,
                                          "upload:../../etc/passwd", "../x.csv", "IRIS"]),
    "model": HOSTILE | st.sampled_from(["linear", "mlp", "MLP"]),
    "spectrum_method": HOSTILE | st.sampled_from(["auto", "exact", "lanczos"]),
    "center": HOSTILE | st.sampled_from(["init", "final", "selected"]),
    "loss": HOSTILE | st.sampled_from(["squared", "cross_entropy"]),
    "bias": HOSTILE | st.sampled_from([True, False, ["on"], [], "on", 1, 2]),
    "signed_targets": HOSTILE | st.booleans(),
})


@hyp_settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.fixed_dictionaries({}, optional=field_strategies))
def test_validation_never_raises_and_every_accepted_value_is_within_limits(raw):
    clean, errors = S.validate_settings(raw)
    assert_computable(clean)
    assert all(isinstance(v, str) and 0 < len(v) <= 400 for v in errors.values()), errors
    for name, value in raw.items():
        if name not in errors and name in INT_FIELDS and type(value) is int:
            assert clean[name] == value  # a valid number is kept as given, or reported
    assert S.validate_settings(clean) == (clean, {})


@hyp_settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.fixed_dictionaries({}, optional=field_strategies))
def test_service_layer_refuses_bad_settings_before_computing(raw):
    """cached_task validates first: bad settings are an input error carrying the field
    messages, raised before any cache read or computation (no compute server starts)."""
    from landscape_app.cache import cached_task
    from landscape_app.compute_server import TaskError

    _, errors = S.validate_settings(raw)
    assume(errors)
    with pytest.raises(TaskError) as info:
        cached_task("surface", raw)
    assert info.value.kind == "input"
    assert all(message in info.value.message for message in errors.values())


class HostileMapping(Mapping):
    """A Mapping whose iteration blows up part-way."""

    def __getitem__(self, key):
        raise KeyError(key)

    def __iter__(self):
        yield "grid"
        raise RuntimeError("iteration failed")

    def __len__(self):
        return 3


class BadRepr:
    def __repr__(self):
        raise RuntimeError("no repr")

    def __float__(self):
        raise RuntimeError("no float")


@pytest.mark.parametrize("raw", [
    HostileMapping(), {"grid": BadRepr(), "lr": BadRepr(), "widths": [BadRepr()]},
    {i: i for i in range(50_000)}, {"grid": 41, 5: "x", None: 1, ("a",): 2},
    {"widths": [[[[4]]]]}, {"widths": "4" * 10_000}, {"steps": "9" * 5000},
], ids=["raising-mapping", "bad-repr", "many-keys", "odd-keys", "nested-widths",
        "long-widths", "long-number"])
def test_hostile_python_objects_never_raise(raw):
    clean, errors = S.validate_settings(raw)
    assert_computable(clean)
    assert all(len(v) <= 400 for v in errors.values())


@hyp_settings(max_examples=200, deadline=None)
@given(st.text(max_size=300) | st.lists(st.sampled_from(sorted(S.DEFAULTS))).map(
    lambda names: "&".join(f"{n}=%FF%00nan" for n in names)))
def test_any_url_query_gives_computable_settings(query):
    clean, _ = S.validate_settings(S.settings_from_query(query))
    assert_computable(clean)


def test_k_is_limited_as_the_compute_layer_limits_it():
    """compute.hessian_spectrum refuses k > MAX_LANCZOS_STEPS // 2; the form must too
    (today k up to MAX_LANCZOS_STEPS passes validation and fails later on the card)."""
    clean, errors = S.validate_settings({"k": L.MAX_LANCZOS_STEPS // 2 + 1})
    assert "k" in errors and clean["k"] <= L.MAX_LANCZOS_STEPS // 2


# --------------------------------------------------------------------------- docs/limits.md


def limits_table() -> dict[str, tuple[str, str]]:
    """``{NAME: (value cell, the whole row)}`` of docs/limits.md's table."""
    rows = {}
    for line in (ROOT / "docs" / "limits.md").read_text().splitlines():
        m = re.match(r"\|\s*`([A-Z_]+)`\s*\|\s*`([^`]+)`", line)
        if m:
            rows[m.group(1)] = (m.group(2), line)
    return rows


def documented_limits() -> dict[str, float]:
    """Every limit the product enforces: every number in compute/_limits.py, the web
    layer's request limits and settings.MAX_TEXT."""
    values = {k: v for k, v in vars(L).items() if k.isupper() and isinstance(v, (int, float))}
    values["MAX_TEXT"] = S.MAX_TEXT
    for name in ("MAX_REQUEST_BYTES", "MAX_JSON_DEPTH", "MAX_CALLBACK_ARGS"):
        values[name] = getattr(hardening, name)
    return values


def test_every_limit_is_documented_with_its_value():
    table = limits_table()
    for name, value in documented_limits().items():
        assert name in table, f"docs/limits.md has no row for {name}"
        cell = table[name][0]  # a Python expression such as `20 * 2**20`
        documented = eval(cell, {"__builtins__": {}})  # noqa: S307 - our own doc
        assert math.isclose(float(documented), value, rel_tol=1e-12), (name, cell, value)
    assert set(table) <= set(documented_limits()), set(table) - set(documented_limits())


QUOTED = re.compile(r"«([^»]+)»")


@pytest.mark.parametrize("name", ["MAX_DEPTH", "MAX_WIDTH", "MAX_PARAMS", "MAX_GRID",
                                  "MAX_SAMPLES", "MAX_STEPS", "MAX_STARTS", "MAX_SPAN",
                                  "MAX_SEED", "MAX_LR", "MAX_INIT_SCALE", "MAX_NOISE",
                                  "MAX_PARAMS_EXACT_HESSIAN", "MAX_SURFACE_WORK"])
def test_documented_messages_are_the_real_ones(name):
    """Each row quotes (between « ») what the dashboard says for the example it names
    (``example: {json}``); the validation layer must say exactly that."""
    row = limits_table()[name][1]
    example = re.search(r"example: `(\{[^`]+\})`", row)
    quoted = QUOTED.search(row)
    assert example and quoted, row
    raw = json.loads(example.group(1))
    _, errors = S.validate_settings(raw)
    assert quoted.group(1) in errors.values(), (errors, quoted.group(1))
