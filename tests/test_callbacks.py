"""Callback bodies (landscape_app/callbacks.py) called directly with plain inputs.

The service layer is replaced by a fake ``cached_task`` that serves synthetic payloads, so
these tests check the UI logic alone: URL ⇄ controls ⇄ settings, error messages, routing of
small and large jobs, the figures built from payloads (against the payload's own numbers),
clicks, uploads and exports. One test checks the web process stays free of JAX.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from landscape_app import callbacks as cb
from landscape_app import figures, presets
from landscape_app import settings as schema
from landscape_app.compute_server import TaskError
from landscape_app.layout import CONTROL_FIELDS, EXTRA_FIELDS

ROOT = Path(__file__).resolve().parents[1]


def _view(**overrides) -> dict:
    clean, errors = schema.validate_settings({**schema.DEFAULTS, **overrides})
    assert not errors, errors
    return {**clean, "compare": None, "many_starts": False, "critical": False}


def _surface_payload(n: int = 21) -> dict:
    alpha = np.linspace(-1, 1, n)
    beta = np.linspace(-2, 2, n)
    loss = 0.5 + alpha[None, :] ** 2 + 0.25 * beta[:, None] ** 2
    t = np.linspace(0, 1, 11)
    coords = np.stack([1 - t, 2 - 2 * t], axis=1) * 0.8
    P = 5
    rng = np.random.default_rng(0)
    return {"alpha": alpha.astype(np.float32), "beta": beta.astype(np.float32),
            "loss": loss.astype(np.float32), "path_coords": coords,
            "path_steps": np.arange(11) * 200, "path_loss": 0.5 + (1 - t),
            "path_distance": np.full(11, 1e-3), "explained_variance": np.array([0.9, 0.08]),
            "center": rng.normal(size=P), "direction1": np.eye(P)[0],
            "direction2": np.eye(P)[1], "marks": {"init": [0.8, 1.6], "final": [0.0, 0.0],
                                                   "center": [0.0, 0.0]},
            "seconds": 0.25, "device": {"platform": "cpu", "kind": "cpu", "count": 1},
            "cache_hit": False}


class FakeService:
    """Stands in for landscape_app.cache.cached_task; records the calls."""

    def __init__(self):
        self.calls: list[tuple[str, dict]] = []
        self.fail: dict[str, Exception] = {}
        self.diverged_at = -1

    def __call__(self, name, settings, progress=None):
        self.calls.append((name, dict(settings)))
        assert "compare" not in settings and "many_starts" not in settings
        if name in self.fail:
            raise self.fail[name]
        if progress is not None:
            progress(0.5, "half way")
        if name == "surface":
            return _surface_payload()
        if name == "path":
            steps = np.arange(0, 2001, 10)
            loss = 0.1 + np.exp(-steps / 400.0)
            if settings["optimizer"] == "gd" and "weights_seed" not in settings:
                pass
            weights = _surface_payload()["center"] + np.outer(np.linspace(1, 0, 7),
                                                              [0.3, -0.2, 0, 0, 0])
            return {"steps": steps, "loss": loss, "grad_norm": np.exp(-steps / 500.0),
                    "lambda_steps": np.arange(0, 2001, 500), "lambda_min": np.zeros(5),
                    "lambda_max": np.ones(5), "plateaus": [{"entry": 100, "exit": 300,
                                                            "level": 0.8}],
                    "global_min": 0.1, "diverged_at": self.diverged_at, "weights": weights,
                    "seconds": 1.5, "device": {"platform": "cpu"}}
        if name == "theory":
            return {"global_min": 0.1, "gap": 0.0, "saxe_steps": np.arange(100),
                    "saxe_loss": np.linspace(1, 0.1, 100), "notes": []}
        if name == "spectrum":
            return {"eigenvalues": np.array([-0.5, 0.0, 1.0, 2.0]), "verdict": "strict saddle",
                    "step": settings.get("selected_step"), "loss": 0.7, "grad_norm": 1e-9,
                    "index": 1, "n_params": 4, "density": None, "method": "exact",
                    "seconds": 0.1, "device": {"platform": "cpu"}}
        if name == "cut":
            t = np.linspace(-1, 1, 41)
            return {"t": t, "loss": t**2, "line_t": np.linspace(-0.25, 1.25, 41),
                    "line_loss": np.linspace(1, 0, 41), "seconds": 0.05}
        if name == "critical_point":
            p = _surface_payload()
            point = p["center"] + 0.4 * p["direction1"] - 0.1 * p["direction2"]
            return {"point": point, "verdict": "strict saddle", "loss": 0.9, "grad_norm": 1e-10,
                    "distance": 0.2, "start_step": settings.get("selected_step"),
                    "seconds": 3.0}
        if name == "many_starts":
            return {"final_losses": np.array([0.1, 0.1, 0.3, np.inf]), "global_min": 0.1,
                    "converged_fraction": 0.5, "seconds": 2.0}
        raise AssertionError(name)


@pytest.fixture
def service(monkeypatch):
    fake = FakeService()
    monkeypatch.setattr(cb, "_cached_task", fake)
    return fake


# --------------------------------------------------------------------------- URL & controls


def test_url_to_controls_shows_bad_values_with_messages():
    search = "?lr=abc&widths=8,8,8&grid=5000&compare=adam&starts=1&preset=jellyfish&present=1"
    controls, extras, view, errors, new_search, ui = cb.sync_state(
        search, [None] * len(CONTROL_FIELDS), [None] * 3, None, None, None)
    shown = dict(zip(CONTROL_FIELDS, controls, strict=True))
    assert shown["lr"] == "abc"  # the bad text stays visible next to its message
    assert shown["widths"] == "8, 8, 8" and shown["grid"] == "5000"
    assert "lr" in errors and "grid" in errors and "widths" not in errors
    assert view["lr"] == schema.DEFAULTS["lr"] and view["widths"] == [8, 8, 8]
    assert view["grid"] <= schema.LIMITS.MAX_GRID
    assert extras == ["adam", ["on"], []] and view["compare"] == "adam" and view["many_starts"]
    assert ui == {"preset": "jellyfish", "present": True}
    # the URL is rewritten with the clean values only
    assert "lr=" not in new_search and "grid=" not in new_search
    assert "widths=8%2C8%2C8" in new_search and "starts=1" in new_search


def test_controls_round_trip_through_the_url():
    view0 = _view(widths=[3, 5], lr=0.0123, optimizer="adam", plane="hessian",
                  selected_step=40, log_scale=True, n_samples=50)
    view0.update(compare="gd", many_starts=True, critical=True)
    query = cb.page_query(view0, {"preset": None, "present": False})
    controls, extras, view, errors, _, _ = cb.sync_state(
        "?" + query, [None] * len(CONTROL_FIELDS), [None] * 3, None, None, None)
    assert not errors and view == view0
    # and the controls it shows produce the same view again
    _, _, again, errors, search, _ = cb.sync_state(
        "?" + query, controls, extras, None, {"x": 1}, "controls")
    assert not errors and again == view0 and search is None  # URL already right


def test_controls_change_updates_view_errors_and_url():
    base = cb.control_values(schema.DEFAULTS)
    current = _view()
    vals = dict(zip(CONTROL_FIELDS, base, strict=True))
    vals["steps"] = "-5"
    vals["lr"] = "0.2"
    _, _, view, errors, search, _ = cb.sync_state(
        "", [vals[f] for f in CONTROL_FIELDS], ["none", [], []], {}, current, "controls")
    assert "steps" in errors and "steps must be" in errors["steps"]
    assert view["lr"] == 0.2 and view["steps"] == schema.DEFAULTS["steps"]
    assert search == "?lr=0.2"
    out = cb.error_children(errors)
    assert len(out) == len(CONTROL_FIELDS) + 1
    assert out[CONTROL_FIELDS.index("steps")] == errors["steps"] and out[-1] == ""
    # nothing changed: the view is not re-sent (no recompute downstream)
    _, _, again, _, _, _ = cb.sync_state("?lr=0.2", [vals[f] for f in CONTROL_FIELDS],
                                         ["none", [], []], {}, view, "controls")
    assert again is None


def test_hostile_url_never_raises():
    for search in ("?widths=" + "9," * 5000, "?%ZZ&&&=", "?grid=nan&lr=inf&seed=1e400",
                   None, "?dataset=upload:" + "0" * 64, "?preset=<script>"):
        _, _, view, errors, _, ui = cb.sync_state(search, [None] * len(CONTROL_FIELDS),
                                                  [None] * 3, None, None, None)
        assert view is not None and isinstance(errors, dict)
        assert ui["preset"] is None


def test_presets_are_valid_settings_with_short_explanations():
    assert len(presets.PRESETS) == 7
    for p in presets.PRESETS:
        raw = presets.preset_settings(p.key, schema.DEFAULTS)
        clean, errors = schema.validate_settings(raw)
        assert not errors, (p.key, errors)
        sentences = [s for s in p.explanation.replace("e.g.", "eg").split(". ") if s.strip()]
        assert 2 <= len(sentences) <= 3, p.key
        _, _, view, errors, _, _ = cb.sync_state(
            "", cb.control_values(raw), cb.extra_control_values(
                {"compare": p.compare, "many_starts": p.many_starts, "critical": p.critical}),
            {}, {}, "controls")
        assert not errors and view["many_starts"] == p.many_starts
        assert view["critical"] == p.critical
        assert {k: view[k] for k in p.settings} == {k: clean[k] for k in p.settings}


def test_depth_buttons():
    assert cb.widths_with_depth("4, 4", +1) == "4, 4, 4"
    assert cb.widths_with_depth("4, 6", -1) == "4"
    assert cb.widths_with_depth("", -1) == ""
    assert cb.widths_with_depth("", +1) == "4"
    assert cb.widths_with_depth("junk", +1) == "4, 4, 4"  # falls back to the defaults


def test_clicks_select_path_steps():
    anim = {"x": [0.0, 1.0, 2.0], "y": [0.0, 0.5, 0.0], "step": [0, 50, 100]}
    on_path = {"points": [{"curveNumber": 3, "x": 1.0, "y": 0.5, "customdata": 50}]}
    assert cb.step_from_click(on_path, anim) == 50
    on_contour = {"points": [{"curveNumber": 0, "x": 1.8, "y": 0.2, "customdata": 0.7}]}
    assert cb.step_from_click(on_contour, anim) == 100  # nearest recorded point
    assert cb.step_from_click(on_contour, None) is None
    assert cb.step_from_click({"points": []}, anim) is None


# --------------------------------------------------------------------------- routing


def test_default_view_is_fast_and_big_jobs_go_to_the_background():
    view = _view()
    assert cb.is_fast("surface", view) and cb.is_fast("path", view)
    big = _view(widths=[64, 64], n_samples=2000, grid=51, steps=200)
    assert not cb.is_fast("surface", big)
    assert not cb.is_fast("many_starts", view)
    key = cb.plane_key(view)
    assert cb._route("surface", view, key, key, None) == ("same", None)
    route, arg = cb._route("surface", big, "k", None, None)
    assert route == "job" and arg["run"] and arg["view"]["widths"] == [64, 64]
    # a fast view while a job runs cancels it (a no-op job replaces it)
    assert cb._route("surface", view, "k2", None, {"run": True}) == \
        ("fast", {"run": False, "key": "k2"})


def test_plane_key_ignores_selection_but_not_log_scale():
    a = _view(selected_step=10)
    assert cb.plane_key(a) == cb.plane_key(_view(selected_step=20))
    assert cb.plane_key(a) != cb.plane_key(_view(selected_step=10, log_scale=True))
    assert cb.plane_key(_view(center="selected", selected_step=10)) != \
        cb.plane_key(_view(center="selected", selected_step=20))


# --------------------------------------------------------------------------- panels


def test_build_plane_draws_the_payload(service):
    view = _view(selected_step=400)
    pv = cb.build_plane(view)
    p = _surface_payload()
    np.testing.assert_allclose(np.asarray(pv.contour.data[0].z), p["loss"])
    np.testing.assert_allclose(np.asarray(pv.surface.data[0].z), p["loss"])
    path = [t for t in pv.contour.data if t.name == "path"][0]
    np.testing.assert_allclose(np.asarray(path.x), p["path_coords"][:, 0])
    assert pv.anim["step"] == p["path_steps"].tolist()
    sel = [t for t in pv.contour.data if t.uid == figures.SELECTED_MARKER_UID][0]
    assert (sel.x[0], sel.y[0]) == tuple(p["path_coords"][2])  # step 400 = third point
    assert not [t for t in pv.contour.data if t.name == "centre"]  # same point as the end
    text = pv.status[0].children
    assert "21×21" in text and "250 ms" in text and "cpu" in text
    assert "PCA explains 90.0% + 8.0%" in pv.contour_status[0]
    assert [c[0] for c in service.calls] == ["surface"]


def test_build_plane_projects_the_comparison_path(service):
    view = {**_view(), "compare": "adam"}
    pv = cb.build_plane(view)
    other = [t for t in pv.contour.data if t.name == "adam path"][0]
    # weights = center + s·(0.3 d1 − 0.2 d2): plane coordinates (0.3 s, −0.2 s)
    s = np.linspace(1, 0, 7)
    np.testing.assert_allclose(np.asarray(other.x), 0.3 * s, atol=1e-12)
    np.testing.assert_allclose(np.asarray(other.y), -0.2 * s, atol=1e-12)
    assert ("path", {**cb.task_settings(view), "optimizer": "adam"}) in service.calls


def test_build_path_figure_status_and_overlays(service):
    fig, status = cb.build_path({**_view(), "compare": "adam"})
    names = [t.name for t in fig.data]
    assert "Saxe et al. theory" in names and "adam" in names and "L* = 0.1" in names
    rect = [s for s in fig.layout.shapes if s.type == "rect"][0]
    assert (rect.x0, rect.x1) == (100, 300)
    assert "final loss 0.1" in status[0].children and "1.50 s" in status[0].children


def test_spectrum_cuts_starts_theory(service):
    fig, verdict, info, status = cb.build_spectrum(_view(selected_step=0))
    assert verdict == "strict saddle" and "at step 0" in info and "index 1" in info
    assert sorted(np.concatenate([np.asarray(t.y, dtype=float) for t in fig.data
                                  if t.xaxis == "x" and t.y is not None])) == [-0.5, 0, 1, 2]
    fig, status = cb.build_cuts(_view())
    assert len([t for t in fig.data if t.mode == "lines" and t.name != "L*"]) >= 2
    fig, status = cb.build_starts({**_view(), "many_starts": True})
    assert any("50%" in a.text for a in fig.layout.annotations)
    table, status = cb.build_theory(_view())
    assert "L*" in str(table)
    info, marker, status = cb.build_critical(_view(selected_step=400))
    assert "strict saddle" in str(info) and "step 400" in str(info)
    assert marker["x"] == pytest.approx(0.4) and marker["y"] == pytest.approx(-0.1)
    assert marker["z"] == pytest.approx(0.9 + 0.01 * (2.5 - 0.5))  # loss + 1% of the range


def test_work_estimate_counts_the_hessian_plane():
    view = {**schema.DEFAULTS, "widths": [32, 32], "n_samples": 200, "grid": 11,
            "center": "init", "plane": "random"}
    flat = cb.estimated_work("surface", view)
    hessian = cb.estimated_work("surface", {**view, "plane": "hessian"})
    P = 8 * 32 + 32 * 32 + 32 * 4
    # A deep linear net's Hessian work runs on its d_x + d_y = 12 sufficient rows.
    assert hessian - flat == pytest.approx(4 * P * 12 * P + P ** 3 / 3)
    mlp = {**view, "model": "mlp", "bias": False}
    assert cb.estimated_work("surface", {**mlp, "plane": "hessian"}) - cb.estimated_work(
        "surface", mlp) == pytest.approx(4 * P * 200 * P + P ** 3 / 3)
    assert cb.is_fast("surface", view) and not cb.is_fast("surface", {**view, "plane":
                                                                        "hessian"})


def test_spectrum_at_the_end_of_a_diverged_path_says_so(service):
    _, _, info, _ = cb.build_spectrum(_view())
    assert "diverged" not in info
    service.diverged_at = 1234
    _, _, info, _ = cb.build_spectrum(_view())
    assert "diverged at step 1234" in info and "last finite" in info
    _, _, info, _ = cb.build_spectrum(_view(selected_step=100))  # before it diverged
    assert "diverged" not in info


def test_task_errors_become_messages_not_tracebacks(service):
    service.fail["surface"] = TaskError("grid must be at most 201.", "input")
    pv = cb.build_plane(_view())
    assert pv.status[0].className == "status-error"
    assert pv.status[0].children == "grid must be at most 201."
    service.fail["path"] = RuntimeError("secret /etc/passwd")
    fig, status = cb.build_path(_view())
    assert "internal error" in status[0].children and "passwd" not in str(status)
    assert "passwd" not in fig.to_json()


def test_missing_service_says_not_available(monkeypatch):
    def missing(*a, **k):
        raise cb.ServiceUnavailable("The compute service is not available yet (tasks).")

    monkeypatch.setattr(cb, "_cached_task", missing)
    out = cb.fetch("surface", _view())
    assert out.kind == "unavailable" and "not available yet" in out.error
    fig, _ = cb.build_cuts(_view())
    assert "not available yet" in fig.layout.annotations[0].text


def test_device_badge():
    assert cb.device_badge({"platform": "gpu", "kind": "NVIDIA H100"})[0].startswith("GPU")
    label, cls = cb.device_badge({"platform": "cpu", "kind": "cpu"})
    assert label.startswith("CPU") and "badge-cpu" in cls


def test_progress_adapter_reports_percent():
    seen = []
    report = cb._progress_adapter(seen.append)
    report(0.25, "surface")
    report(0.3, "too soon")  # throttled
    report(1.0, "done")
    assert seen == [("25", "surface"), ("100", "done")]


# --------------------------------------------------------------------------- uploads & exports


def test_upload_checks_type_and_size(monkeypatch):
    def data_url(raw: bytes) -> str:
        return "data:application/octet-stream;base64," + base64.b64encode(raw).decode()

    dataset, status, error = cb.handle_upload(data_url(b"x"), "evil.exe")
    assert dataset is None and ".npz" in error
    monkeypatch.setattr(schema.LIMITS, "MAX_UPLOAD_BYTES", 10)
    dataset, _, error = cb.handle_upload(data_url(b"0" * 11), "big.csv")
    assert dataset is None and "limit" in error
    dataset, _, error = cb.handle_upload("data:;base64,@@@", "x.csv")
    assert dataset is None and "could not be read" in error


def test_upload_stored_through_the_service(monkeypatch):
    import landscape_app.cache as cache

    seen = {}

    def fake_store(data, name):
        seen["data"], seen["name"] = data, name
        return "upload:" + "a" * 64, {"rows": 3, "d_x": 2, "d_y": 1}

    monkeypatch.setattr(cache, "store_upload", fake_store)
    raw = b"x1,x2,y\n1,2,3\n4,5,6\n7,8,9\n"
    url = "data:text/csv;base64," + base64.b64encode(raw).decode()
    dataset, status, error = cb.handle_upload(url, "d.csv")
    assert dataset == "upload:" + "a" * 64 and not error and seen["data"] == raw
    assert "3 rows, 2 → 1" in status

    def refuse(data, name):
        raise TaskError("row 2 has a NaN.", "input")

    monkeypatch.setattr(cache, "store_upload", refuse)
    dataset, status, error = cb.handle_upload(url, "d.csv")
    assert dataset is None and error == "d.csv: row 2 has a NaN."


def test_exports(service):
    view = _view()
    blob = cb.csv_export(view)[0]
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        surface = np.loadtxt(io.StringIO(zf.read("surface.csv").decode()), delimiter=",",
                             skiprows=1)
        path = np.loadtxt(io.StringIO(zf.read("path.csv").decode()), delimiter=",",
                          skiprows=1)
        settings = json.loads(zf.read("settings.json"))
    p = _surface_payload()
    aa, bb = np.meshgrid(p["alpha"], p["beta"])
    np.testing.assert_allclose(surface[:, 2], p["loss"].ravel(), rtol=1e-6)
    np.testing.assert_allclose(surface[:, 0], aa.ravel(), rtol=1e-6)
    np.testing.assert_allclose(surface[:, 1], bb.ravel(), rtol=1e-6)
    assert path.shape[1] == 3 and settings["lr"] == view["lr"]
    arrays = cb.export_arrays(view)[0]
    with np.load(io.BytesIO(cb.npz_bytes(arrays)), allow_pickle=False) as npz:
        np.testing.assert_allclose(npz["surface_loss"], p["loss"])
        assert "path_grad_norm" in npz.files and "spectrum_eigenvalues" in npz.files
    page = cb.html_export({"contour": figures.contour(p["alpha"], p["beta"],
                                                     p["loss"]).to_plotly_json(),
                           "empty": figures.placeholder("x").to_plotly_json(),
                           "none": None})
    assert page.count("Plotly.newPlot") == 1


# --------------------------------------------------------------------------- the app


def test_app_is_jax_free_and_healthz_is_fast(tmp_path):
    code = (
        "import sys, time\n"
        "from landscape_app import create_app\n"
        "app = create_app()\n"
        "client = app.server.test_client()\n"
        "t = time.perf_counter(); r = client.get('/healthz'); dt = time.perf_counter() - t\n"
        "assert r.status_code == 200 and r.data == b'ok', r\n"
        "assert dt < 1.0, dt\n"
        "bad = [m for m in sys.modules if m == 'jax' or m.startswith(('jax.', 'compute'))]\n"
        "assert not bad, bad\n"
        "print('OK', len(app.callback_map))\n"
    )
    env = {"LANDSCAPE_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("OK")
    assert not list(tmp_path.glob("compute-server-*.json"))  # /healthz started nothing


def test_callbacks_wired(tmp_path, monkeypatch):
    monkeypatch.setenv("LANDSCAPE_CACHE_DIR", str(tmp_path))
    from landscape_app import create_app

    app = create_app()
    client = app.server.test_client()
    deps = client.get("/_dash-dependencies").get_json()
    by_input = {}
    for d in deps:
        for i in d["inputs"]:
            by_input.setdefault(f"{i['id']}.{i['property']}", []).append(d)
    # every card listens to the clean settings; the plane card has a background twin
    outputs = " ".join(d["output"] for d in by_input["settings-store.data"])
    for graph in ("surface-graph.figure", "path-graph.figure", "cuts-graph.figure",
                  "spectrum-graph.figure", "starts-graph.figure"):
        assert graph in outputs
    assert any("surface-graph.figure" in d["output"] for d in by_input["plane-job.data"])
    assert any(d.get("clientside_function") for d in by_input["anim-slider.value"])
    assert not any(d.get("clientside_function") is None
                   for d in by_input["anim-interval.n_intervals"])
    # the state callback answers a browser-shaped request without touching the compute
    sync = [d for d in by_input["url.search"]][0]
    body = {"output": sync["output"],
            "outputs": [_output_spec(o) for o in sync["output"].strip(".").split("...")],
            "inputs": [{"id": i["id"], "property": i["property"],
                        "value": "?lr=-1" if i["id"] == "url" else None}
                       for i in sync["inputs"]],
            "state": [{"id": s["id"], "property": s["property"], "value": None}
                      for s in sync["state"]],
            "changedPropIds": ["url.search"]}
    r = client.post("/_dash-update-component", json=body)
    assert r.status_code == 200
    response = r.get_json()["response"]
    assert "lr must be" in response["err-lr"]["children"]
    assert response["settings-store"]["data"]["lr"] == schema.DEFAULTS["lr"]
    assert EXTRA_FIELDS == ("compare", "starts", "critical")


def _output_spec(text: str) -> dict:
    cid, prop = text.rsplit(".", 1)
    return {"id": cid, "property": prop}


# --------------------------------------------------------------------------- background jobs


@pytest.mark.parametrize("job", [[1, 2], "notadict", {"run": True}, 7,
                                 {"run": True, "key": "k", "view": [1, 2]},
                                 {"run": True, "key": ["k"], "view": {}}])
def test_malformed_background_job_gets_one_sentence(job):
    view, why = cb.job_view(job)
    assert view is None
    assert why.startswith("This background job request is malformed")
    assert "Traceback" not in why and "attribute" not in why


def test_background_job_with_bad_settings_names_them():
    view, why = cb.job_view({"run": True, "key": "k", "view": {"steps": "abc"}})
    assert view is None and "steps" in why and "Traceback" not in why


def test_background_job_that_is_off_does_nothing():
    assert cb.job_view(None) == (None, None)
    assert cb.job_view({"run": False, "key": "k"}) == (None, None)
    view, why = cb.job_view({"run": True, "key": "k", "view": _view(steps=50)})
    assert why is None and view["steps"] == 50


def test_background_job_error_shows_a_log_reference_not_the_traceback(monkeypatch, caplog):
    shown = {}
    monkeypatch.setattr(cb, "set_props", lambda cid, props: shown.update({cid: props}))
    exc = Exception("An error occurred inside a background callback: 'list' object has no "
                    "attribute 'get'\nTraceback (most recent call last):\n  File \"/x.py\"")
    with caplog.at_level("ERROR", logger="landscape.callbacks"):
        cb._job_error("path", "path-status")(exc)
    text = shown["path-status"]["children"][0].children
    assert "Traceback" not in text and "attribute" not in text and "\n" not in text
    ref = text.split("log reference ")[1].split(")")[0]
    assert len(ref) == 8
    logged = caplog.text
    assert ref in logged and "'list' object has no attribute 'get'" in logged


def test_a_lost_background_job_shows_the_managers_sentence(monkeypatch):
    """The Celery manager reports a job whose worker died with its own sentence and no
    traceback (celery_app.lost_reason): the card shows that sentence, not a reference."""
    shown = {}
    monkeypatch.setattr(cb, "set_props", lambda cid, props: shown.update({cid: props}))
    reason = ("The compute worker running this job stopped before it finished; press the "
              "button again to retry on another worker.")
    cb._job_error("path", "path-status")(
        Exception(f"An error occurred inside a background callback: {reason}\n"))
    assert shown["path-status"]["children"][0].children == reason


# ---------------------------------------------------------------- exports that lose a part


def test_exports_say_which_results_are_missing(service):
    service.fail["spectrum"] = TaskError("the Hessian does not fit in memory.", "input")
    service.fail["path"] = TaskError("steps must be at most 100000.", "input")
    arrays, omitted = cb.export_arrays(_view())
    assert "surface_loss" in arrays and not any(k.startswith("spectrum") for k in arrays)
    assert "spectrum omitted: the Hessian does not fit in memory." in omitted
    assert "path omitted: steps must be at most 100000." in omitted
    blob, omitted = cb.csv_export(_view())
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        assert "path.csv" not in zf.namelist() and "surface.csv" in zf.namelist()
        note = zf.read("omitted.txt").decode()
    assert "path omitted: steps must be at most 100000." in note


def test_csv_export_with_no_result_says_why_instead_of_a_settings_only_zip(service):
    service.fail["surface"] = TaskError("grid must be at most 201.", "input")
    service.fail["path"] = TaskError("the path diverged at once.", "input")
    blob, omitted = cb.csv_export(_view())
    assert blob is None
    message = cb.export_note(omitted, nothing=True)
    assert "surface omitted: grid must be at most 201." in message
    assert "path omitted: the path diverged at once." in message


def test_vtp_export_says_when_the_index_map_is_left_out(service):
    service.fail["index_map"] = TaskError("the index map needs at most 400 parameters.",
                                          "input")
    text, note = cb.mesh_text(_view(explore="index_map"), "vtp")
    assert text is not None and "morse_index" not in text
    assert note == "index map omitted: the index map needs at most 400 parameters."


# --------------------------------------------------------------------------- concurrent jobs


def _hold_slot(ready, release):
    with cb.job_slot() as held:
        assert held
        ready.set()
        release.wait(30)


def test_background_jobs_beyond_the_limit_are_refused_with_one_sentence(
        tmp_path, monkeypatch, service):
    import multiprocessing

    monkeypatch.setenv("LANDSCAPE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cb, "MAX_BACKGROUND_JOBS", 2)
    outputs = [("cuts-graph", "figure"), ("cuts-status", "children"), ("cuts-key", "data")]
    job = {"run": True, "key": "k", "view": _view()}
    forked = multiprocessing.get_context("fork")
    ready, release = forked.Event(), forked.Event()
    other = forked.Process(target=_hold_slot, args=(ready, release))  # another job's process
    other.start()
    try:
        assert ready.wait(30)
        with cb.job_slot() as held:
            assert held  # the second of two slots
            values = cb.background_outputs(cb.build_cuts, outputs, job, None, lambda v: None)
        status = values[1][0].children
        assert status == ("The server is busy: 2 computations are running; try again in a "
                          "moment.")
        assert values[2] is cb.no_update and not [c for c in service.calls if c[0] == "cut"]
    finally:
        release.set()
        other.join(30)
    values = cb.background_outputs(cb.build_cuts, outputs, job, None, lambda v: None)
    assert values[2] == "k" and [c for c in service.calls if c[0] == "cut"]


# ----------------------------------------------------------------- cards without a job twin


def _big_view(**overrides) -> dict:
    return _view(model="mlp", widths=[32, 32], dataset="two_moons", n_samples=5000,
                 steps=6568, lambda_every=0, n_starts=5, **overrides)


def test_theory_estimate_counts_the_path_it_trains(monkeypatch):
    big = _big_view()
    monkeypatch.setattr(cb, "path_is_cached", lambda view: False)
    assert not cb.is_fast("theory", big)
    monkeypatch.setattr(cb, "path_is_cached", lambda view: True)
    assert cb.is_fast("theory", big)  # the path is trained: only the closed forms remain


def _post_card(client, deps, prefix: str, view: dict) -> dict:
    dep = [d for d in deps if d["output"].startswith(prefix) and not d.get("background")
           and d["inputs"][0]["id"] == "settings-store"][0]
    values = {"settings-store": view, "plane-cancel": 1}
    body = {"output": dep["output"],
            "outputs": [_output_spec(o) for o in dep["output"].strip(".").split("...")],
            "inputs": [{**i, "value": values.get(i["id"])} for i in dep["inputs"]],
            "state": [{**s, "value": None} for s in dep["state"]],
            "changedPropIds": ["plane-cancel.n_clicks"]}
    r = client.post("/_dash-update-component", json=body)
    assert r.status_code == 200, r.data[:300]
    return r.get_json()["response"]


def test_cards_without_a_background_job_refuse_large_work(tmp_path, monkeypatch, service):
    monkeypatch.setenv("LANDSCAPE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cb, "path_is_cached", lambda view: False)
    from landscape_app import create_app

    client = create_app().server.test_client()
    deps = client.get("/_dash-dependencies").get_json()
    answer = _post_card(client, deps, "..theory-table", _big_view())
    status = json.dumps(answer["theory-status"]["children"])
    assert "Too large for a quick pass" in status and "path" in status
    answer = _post_card(client, deps, "..index_map-graph", _big_view(explore="index_map"))
    status = json.dumps(answer["index_map-status"]["children"])
    assert "Too large for a quick pass" in status and "background" in status
    assert answer["index_map_coarse-key"]["data"]  # the full pass may start
    assert not service.calls  # nothing was computed in the request
