"""The dashboard in a real browser: Debian's headless chromium driven by selenium.

One server (started as ``make run`` does) and one browser session serve the whole module;
each test leaves a screenshot in ``tests/artifacts/`` and ends by checking that the page's
console has no errors. Numbers on the page come from the compute server; these tests check
that they arrive, are linked and survive a reload, not their values (the compute tests do).
"""

from __future__ import annotations

import json
import time
import urllib.parse

import pytest

from landscape_app import presets
from tests.browser import AppServer, browser_missing_reason, make_driver, quit_driver

REASON = browser_missing_reason()
pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(REASON is not None, reason=REASON or "")]

IDLE_JS = """
const busy = document.querySelectorAll('[data-dash-is-loading="true"]').length;
const jobs = Array.from(document.querySelectorAll('.progress-wrap'))
  .filter(e => e.style.display !== 'none').length;
return busy + jobs;
"""
GRAPH_JS = """
const gd = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');
if (!gd || !gd.data) { return null; }
const plain = v => {
  if (v && v._inputArray !== undefined) { v = v._inputArray; }
  if (ArrayBuffer.isView(v)) { return Array.from(v); }
  if (Array.isArray(v)) { return v.map(plain); }
  return v;
};
return gd.data.map(t => {
  const out = {};
  for (const k of Object.keys(t)) {
    out[k] = ['x', 'y', 'z', 'customdata'].includes(k) ? plain(t[k]) : t[k];
  }
  return out;
});
"""


class Page:
    """The browser on the dashboard, with waits that know about Dash."""

    def __init__(self, server: AppServer, driver, artifacts) -> None:
        self.server, self.driver, self.artifacts = server, driver, artifacts

    def open(self, query: str = "", timeout: float = 120) -> None:
        self.driver.get(self.server.url + "/" + (("?" + query) if query else ""))
        self.wait_idle(timeout)

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    def wait(self, condition, timeout: float = 60, message: str = "", poll: float = 0.2):
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            try:
                value = condition()
            except Exception:  # noqa: BLE001 - the page may be re-rendering
                value = None
            if value:
                return value
            time.sleep(poll)
        raise AssertionError(f"timed out after {timeout:.0f} s: {message}")

    def wait_idle(self, timeout: float = 120) -> None:
        """No callback in flight and no background job running, twice in a row."""
        time.sleep(0.3)
        streak = [0]

        def idle():
            ready = self.js("return document.readyState") == "complete" and \
                self.js("return !!document.querySelector('#upload input[type=file]')")
            if ready and self.js(IDLE_JS) == 0:
                streak[0] += 1
            else:
                streak[0] = 0
            return streak[0] >= 3

        self.wait(idle, timeout, "the page did not settle", poll=0.25)

    def data(self, graph: str):
        return self.js(GRAPH_JS, graph)

    def trace(self, graph: str, name: str | None = None, uid: str | None = None):
        for t in self.data(graph) or []:
            if (name is not None and t.get("name") == name) or \
                    (uid is not None and t.get("uid") == uid):
                return t
        return None

    def text(self, element_id: str) -> str:
        return self.js(f"const e = document.getElementById('{element_id}');"
                       "return e ? e.innerText : null;") or ""

    def value(self, control: str) -> str:
        return self.js(f"const e = document.getElementById('ctl-{control}');"
                       "return e ? e.value : null;")

    def click(self, css: str) -> None:
        element = self.driver.find_element("css selector", css)
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
        element.click()

    def type_into(self, control: str, text: str) -> None:
        from selenium.webdriver.common.keys import Keys

        box = self.driver.find_element("id", f"ctl-{control}")
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", box)
        box.click()
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(text)
        box.send_keys(Keys.ENTER)

    def shot(self, name: str) -> None:
        self.driver.execute_script("window.scrollTo(0, 0)")
        self.driver.save_screenshot(str(self.artifacts / f"{name}.png"))

    def console_errors(self) -> list[str]:
        return [e["message"] for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]

    def path_signature(self) -> str:
        path = self.trace("contour-graph", name="path")
        return json.dumps([path["x"][:50], path["y"][:50]]) if path else ""


@pytest.fixture(scope="module")
def server():
    srv = AppServer().start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def page(server, artifacts_dir):
    driver = make_driver(1500, 2300)
    try:
        yield Page(server, driver, artifacts_dir)
    finally:
        quit_driver(driver)


@pytest.fixture(autouse=True)
def no_console_errors(page):
    page.console_errors()  # drop what earlier tests left
    yield
    errors = page.console_errors()
    assert not errors, errors


def test_default_view_loads(page):
    start = time.perf_counter()
    page.open()
    assert page.trace("contour-graph", name="path"), "no path on the contour"
    surface = page.data("surface-graph")
    assert surface and surface[0]["type"] == "surface" and len(surface[0]["z"]) == 41
    assert page.text("verdict") not in ("", "—")
    assert page.text("device-badge").startswith(("CPU", "GPU"))
    for status in ("plane-status", "path-status", "spectrum-status", "cuts-status"):
        assert "computed in" in page.text(status), (status, page.text(status))
    assert page.trace("path-graph", name="loss")
    print(f"first full view in {time.perf_counter() - start:.1f} s")
    page.shot("01-default-view")


def test_change_depth_updates_the_surface(page):
    page.open()
    before = page.wait(lambda: json.dumps(page.data("surface-graph")[0]["z"][:3]), 20,
                       "no surface")
    page.click("#depth-plus")
    page.wait(lambda: "widths=4%2C4%2C4" in page.driver.current_url, 20, "URL not updated")
    page.wait_idle()
    assert page.value("widths") == "4, 4, 4"
    after = json.dumps(page.data("surface-graph")[0]["z"][:3])
    assert after != before
    page.shot("02-depth-3-hidden-layers")


def test_bad_input_shows_a_message_next_to_the_control(page):
    page.open()
    page.type_into("lr", "-1")
    message = page.wait(lambda: page.text("err-lr"), 20, "no message under the step size")
    assert "lr must be" in message
    page.type_into("grid", "lots")
    assert "grid must be" in page.wait(lambda: page.text("err-grid"), 20, "no grid message")
    page.shot("03-bad-input")
    page.type_into("lr", "0.05")
    page.type_into("grid", "41")
    page.wait(lambda: not page.text("err-lr") and not page.text("err-grid"), 20,
              "messages did not clear")


@pytest.mark.parametrize("preset", [p.key for p in presets.PRESETS])
def test_preset(page, preset):
    p = presets.get(preset)
    if page.driver.current_url.rstrip("/") == page.server.url or "preset=" in \
            page.driver.current_url:
        pass
    else:
        page.open()
    button = page.driver.find_element("css selector", f"button[id*='\"key\":\"{preset}\"']")
    page.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", button)
    button.click()
    page.wait(lambda: f"preset={preset}" in page.driver.current_url, 20, "preset not in URL")
    page.wait_idle(timeout=180)
    assert "chip-active" in button.get_attribute("class")
    assert p.title in page.text("preset-explanation")
    path = page.trace("contour-graph", name="path")
    assert path and len(path["x"]) > 1, "no path drawn"
    assert page.trace("path-graph", name="loss")
    verdict = page.text("verdict")
    assert verdict not in ("", "—"), page.text("spectrum-status")
    if p.many_starts:
        bars = [t for t in page.data("starts-graph") if t.get("type") == "bar"]
        assert bars and sum(bars[0]["y"]) > 0, page.text("starts-status")
    if p.compare:
        assert page.trace("contour-graph", name=f"{p.compare} path")
    page.shot(f"04-preset-{preset}")


def test_animation_runs_in_the_browser(page):
    page.open()
    def marker():  # the contour's marker is a layout shape anchored at (α, β)
        shape = page.js("return document.querySelector('#contour-graph .js-plotly-plot')"
                        ".layout.shapes.find(s => s.name === 'anim-marker')")
        return {"x": [shape["xanchor"]], "y": [shape["yanchor"]]}

    first = marker()
    requests_before = page.server.request_count()
    play = "document.getElementById('anim-play').click()"
    page.js(play)
    positions = set()
    for _ in range(12):
        time.sleep(0.25)
        m = marker()
        positions.add((round(m["x"][0], 9), round(m["y"][0], 9)))
    assert len(positions) >= 3, positions  # the marker moves
    assert (first["x"][0], first["y"][0]) != (m["x"][0], m["y"][0])
    label = page.text("anim-label")
    assert label.startswith("step ") and label != "step 0"
    page.shot("05-animation-playing")
    page.js(play)  # pause
    page.wait(lambda: page.text("anim-play").startswith("▶"), 30, "did not pause")
    time.sleep(1.0)
    paused = marker()
    time.sleep(0.5)
    assert marker()["x"] == paused["x"]
    # the 3-D view and the loss-vs-step cursor moved with it
    assert page.trace("surface-graph", uid="anim-marker")["x"] == paused["x"]
    cursor = page.js("return document.querySelector('#path-graph .js-plotly-plot')"
                     ".layout.shapes[0]")
    assert cursor["visible"] and cursor["x0"] > 0
    assert page.server.request_count() == requests_before, "frames went to the server"


def test_click_a_path_point_selects_it(page):
    page.open()
    from selenium.webdriver.common.action_chains import ActionChains

    graph = page.driver.find_element("css selector", "#contour-graph .js-plotly-plot")
    page.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", graph)
    px, py, step, w, h = page.js("""
      const gd = document.querySelector('#contour-graph .js-plotly-plot');
      const tr = gd._fullData.find(t => t.name === 'path');
      const k = Math.floor(tr.x.length / 3);
      const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
      const r = gd.getBoundingClientRect();
      return [xa._offset + xa.l2p(tr.x[k]), ya._offset + ya.l2p(tr.y[k]), tr.customdata[k],
              r.width, r.height];""")
    # every path step drawn within 10 px of the click counts as what was clicked
    near = page.js("""
      const gd = document.querySelector('#contour-graph .js-plotly-plot');
      const tr = gd._fullData.find(t => t.name === 'path');
      const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, out = [];
      for (let i = 0; i < tr.x.length; i++) {
        const dx = xa._offset + xa.l2p(tr.x[i]) - arguments[0];
        const dy = ya._offset + ya.l2p(tr.y[i]) - arguments[1];
        if (dx * dx + dy * dy < 100) { out.push(String(tr.customdata[i])); }
      }
      return out;""", px, py)
    assert str(int(step)) in near
    ActionChains(page.driver).move_to_element_with_offset(graph, px - w / 2, py - h / 2) \
        .click().perform()
    page.wait(lambda: page.value("selected_step") in near, 20,
              f"none of steps {near} selected (got {page.value('selected_step')!r})")
    step = int(page.value("selected_step"))
    page.wait_idle()
    assert f"at step {step}" in page.text("selected-info")
    selected = page.trace("contour-graph", uid="selected-marker")
    assert selected and len(selected["x"]) == 1
    assert f"selected_step={step}" in page.driver.current_url
    page.shot("06-selected-point")
    page.click("#recentre")
    page.wait(lambda: page.js("return document.querySelector('#ctl-center input[value=selected]')"
                              ".checked"), 20, "not re-centred")
    page.wait_idle()
    assert "centred at the step" in page.text("contour-status")
    page.shot("07-recentred")


def test_click_the_contour_off_the_path_selects_a_plane_point(page):
    """A click far from the path selects that point (α, β) of the plane: the spectrum is
    computed there and the URL holds the point."""
    page.open()
    from selenium.webdriver.common.action_chains import ActionChains

    graph = page.driver.find_element("css selector", "#contour-graph .js-plotly-plot")
    page.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", graph)
    # the grid node farthest from every drawn path point, and its pixel position
    px, py, a, b, w, h = page.js("""
      const gd = document.querySelector('#contour-graph .js-plotly-plot');
      const c = gd._fullData[0], tr = gd._fullData.find(t => t.name === 'path');
      const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
      let best = null;
      for (let j = 2; j < c.x.length - 2; j += 2) {
        for (let i = 2; i < c.y.length - 2; i += 2) {
          const X = xa.l2p(c.x[j]), Y = ya.l2p(c.y[i]);
          let d = Infinity;
          for (let k = 0; k < tr.x.length; k++) {
            d = Math.min(d, Math.hypot(xa.l2p(tr.x[k]) - X, ya.l2p(tr.y[k]) - Y));
          }
          if (!best || d > best[0]) { best = [d, X, Y, c.x[j], c.y[i]]; }
        }
      }
      const r = gd.getBoundingClientRect();
      return [xa._offset + best[1], ya._offset + best[2], best[3], best[4], r.width,
              r.height];""")
    ActionChains(page.driver).move_to_element_with_offset(graph, px - w / 2, py - h / 2) \
        .click().perform()
    page.wait(lambda: page.value("selected_alpha") not in ("", None), 20,
              "no plane point selected")
    page.wait_idle()
    alpha, beta = float(page.value("selected_alpha")), float(page.value("selected_beta"))
    cell = page.js("""
      const c = document.querySelector('#contour-graph .js-plotly-plot')._fullData[0];
      return [Math.abs(c.x[1] - c.x[0]), Math.abs(c.y[1] - c.y[0])];""")
    assert abs(alpha - a) <= 1.01 * cell[0] and abs(beta - b) <= 1.01 * cell[1]
    assert page.value("selected_step") in ("", None)
    assert "selected_alpha=" in page.driver.current_url
    info = page.text("selected-info")
    assert "α" in info and "β" in info, info
    page.shot("06b-selected-plane-point")


def test_reload_a_copied_url_gives_the_same_view(page):
    # the adam_vs_gd preset (computed by an earlier test) seen on another plane
    page.open(_preset_query("adam_vs_gd") +
              "&plane=random&span=2.0&log_scale=true&selected_step=300&preset=adam_vs_gd")
    url = page.driver.current_url
    state = _snapshot(page)
    page.driver.get("about:blank")
    page.driver.get(url)
    page.wait_idle()
    assert page.driver.current_url == url
    again = _snapshot(page)
    assert again == state
    assert state["controls"]["ctl-span"] == "2.0" and state["controls"]["ctl-lr"] == "0.01"
    assert state["query"]["compare"] == ["gd"] and state["query"]["plane"] == ["random"]
    page.shot("08-reloaded-url")


def _snapshot(page) -> dict:
    controls = page.js("""const out = {};
      document.querySelectorAll('.ctl-input input').forEach(e => { out[e.id] = e.value; });
      document.querySelectorAll('.ctl-radio input:checked').forEach(e => {
        out[e.closest('.ctl-radio').id] = e.value; });
      return out;""")
    query = urllib.parse.parse_qs(urllib.parse.urlparse(page.driver.current_url).query)
    return {"controls": controls, "query": query, "path": page.path_signature(),
            "verdict": page.text("verdict"), "preset": page.text("preset-explanation"),
            "surface": json.dumps(page.data("surface-graph")[0]["z"][:2])}


def test_upload_a_file_and_a_bad_file(page, tmp_path):
    import numpy as np

    # 200 × 8 → 4 like the default teacher, so the compiled kernels are reused
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 8))
    Y = X @ rng.normal(size=(8, 4)) + 0.1 * rng.normal(size=(200, 4))
    good = tmp_path / "my-data.npz"
    np.savez(good, X=X, Y=Y)
    page.open()
    upload = page.driver.find_element("css selector", "#upload input[type=file]")
    upload.send_keys(str(good))
    page.wait(lambda: "Using my-data.npz" in page.text("upload-status"), 60,
              page.text("err-upload") or "upload not accepted")
    page.wait(lambda: "dataset=upload%3A" in page.driver.current_url, 20, "not in URL")
    page.wait_idle()
    assert page.trace("contour-graph", name="path")
    assert "computed in" in page.text("plane-status")
    page.shot("09-uploaded-npz")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,oops\n")
    upload.send_keys(str(bad))
    message = page.wait(lambda: page.text("err-upload"), 60, "no message for a bad file")
    assert message.startswith("bad.csv")
    page.shot("10-bad-upload")
    # over the size limit: refused in the browser with a message, nothing sent
    huge = tmp_path / "huge.csv"
    with open(huge, "wb") as f:
        f.truncate(21 * 2**20)
    requests = page.server.request_count()
    upload.send_keys(str(huge))
    message = page.wait(lambda: "huge.csv" in page.text("err-upload")
                        and page.text("err-upload"), 20, "no message for a huge file")
    assert "limited to 20 MiB" in message
    time.sleep(1.0)
    assert page.server.request_count() == requests  # its bytes never left the browser


def test_presentation_mode(page):
    page.open("preset=two_hidden_plateau&" + _preset_query("two_hidden_plateau"))
    page.click("#present")
    page.wait(lambda: page.js("return getComputedStyle(document.getElementById('sidebar'))"
                              ".display") == "none", 10, "sidebar still shown")
    page.wait(lambda: page.js("return document.querySelector('#path-graph .js-plotly-plot')"
                              "._fullLayout.font.size") == 17, 10, "figures not enlarged")
    assert "present=1" in page.driver.current_url
    page.shot("11-presentation-mode")
    page.click("#present")
    page.wait(lambda: page.js("return getComputedStyle(document.getElementById('sidebar'))"
                              ".display") != "none", 10, "sidebar not back")


def _preset_query(key: str) -> str:
    from landscape_app import settings as schema
    from landscape_app.callbacks import page_query

    p = presets.get(key)
    clean, _ = schema.validate_settings(presets.preset_settings(key, schema.DEFAULTS))
    return page_query({**clean, "compare": p.compare, "many_starts": p.many_starts}, {})


# --------------------------------------------------------------------------- Explore card

# A setting that shows each Explore view at its best (default settings otherwise).
EXPLORE_QUERIES = {
    "index_map": "explore=index_map&imap_grid=31&model=mlp&widths=3&activation=tanh"
                 "&dataset=xor&init=xavier&init_scale=1.0&lr=0.5&plane=points",
    "balance": "explore=balance",
    "race": "explore=race&init_scale=0.01&race=gd+0.05%2C+gd+0.1%2C+momentum+0.05%2C+adam+0.01",
    "honest": "explore=honest&plane=action&init_scale=0.01",
    "lanczos": "explore=lanczos&selected_step=150&k=3&probes=16",
    "connect": "explore=connect",
}


def _explore_keys() -> list[str]:
    from landscape_app import explore

    return [v.key for v in explore.VIEWS]


@pytest.mark.parametrize("key", _explore_keys())
def test_explore_view(page, key):
    """Each Explore view draws from its own task, alone in the card, with a status line."""
    page.open(EXPLORE_QUERIES.get(key, f"explore={key}"), timeout=300)
    assert page.js(f"return getComputedStyle(document.getElementById('explore-{key}'))"
                   ".display") == "block"
    shown = [k for k in _explore_keys() if page.js(
        f"return getComputedStyle(document.getElementById('explore-{k}')).display")
        != "none"]
    assert shown == [key]
    page.wait(lambda: "computed in" in page.text(f"{key}-status"), 120,
              f"no status line for {key}")
    data = page.data(f"{key}-graph")
    assert data and any(t.get("x") for t in data), "no data in the view's graph"
    card = page.driver.find_element("css selector", ".card-explore")
    page.driver.execute_script("arguments[0].scrollIntoView({block: 'start'});", card)
    card.screenshot(str(page.artifacts / f"12-explore-{key}.png"))


def test_index_map_streams_coarse_then_fine(page):
    """A new slice shows an 11 × 11 map before the full one (recorded in the browser)."""
    page.open(EXPLORE_QUERIES["index_map"], timeout=300)
    page.wait(lambda: "full grid" in page.text("index_map-status"), 120, "no full map")
    page.js("""
      window._imap = [];
      window._imapTimer = setInterval(() => {
        const gd = document.querySelector('#index_map-graph .js-plotly-plot');
        if (!gd || !gd._fullData || !gd._fullData[0] || !gd._fullData[0].z) { return; }
        const z = gd._fullData[0].z, sig = z.length + ':' + Array.from(z[0]).join(',');
        if (!window._imap.length || window._imap[window._imap.length - 1] !== sig) {
          window._imap.push(sig);
        }
      }, 30);""")
    page.type_into("span", "0.8")
    page.wait(lambda: "span=0.8" in page.driver.current_url, 20, "URL not updated")
    page.wait_idle(timeout=300)
    page.wait(lambda: page.js("return window._imap.length") >= 3, 30,
              "no new maps drawn: " + str(page.js("return window._imap")))
    sizes = [int(s.split(":")[0]) for s in page.js("clearInterval(window._imapTimer);"
                                                   "return window._imap;")]
    assert sizes[0] == 31 and sizes[-1] == 31 and 11 in sizes[1:-1], sizes


def test_surface_exports_as_obj_and_vtp(page, tmp_path):
    """The OBJ and VTP buttons download the shown surface: N × N vertices at (α, β, loss)."""
    import xml.etree.ElementTree as ET

    import numpy as np

    page.driver.execute_cdp_cmd("Browser.setDownloadBehavior",
                                {"behavior": "allow", "downloadPath": str(tmp_path)})
    page.open()
    surface = page.data("surface-graph")[0]
    n = len(surface["z"])
    page.click("#export-obj")
    obj = page.wait(lambda: next(iter(tmp_path.glob("*.obj")), None), 30, "no .obj download")
    lines = obj.read_text().splitlines()
    vertices = np.array([[float(v) for v in ln.split()[1:4]] for ln in lines
                         if ln.startswith("v ")])
    assert len(vertices) == n * n
    assert sum(ln.startswith("f ") for ln in lines) == 2 * (n - 1) ** 2
    z = np.array(surface["z"], float)
    assert np.allclose(np.sort(vertices[:, 2]), np.sort(z.ravel()), rtol=1e-5, atol=1e-7)
    page.click("#export-vtp")
    vtp = page.wait(lambda: next(iter(tmp_path.glob("*.vtp")), None), 30, "no .vtp download")
    piece = ET.parse(vtp).getroot().find(".//Piece")
    assert int(piece.get("NumberOfPoints")) == n * n
    assert int(piece.get("NumberOfPolys")) == 2 * (n - 1) ** 2
