/* Landscape: client-side callbacks (no server round trip).
 *
 * - play / frame: the path animation. A dcc.Interval advances the slider; each slider value
 *   moves the "now" marker (trace uid "anim-marker") on the contour and the 3-D surface and
 *   the cursor line (layout shape "cursor") on the loss-vs-step plot, by Patch.
 * - select: the selected point (settings "selected_step") as a diamond on both plane views
 *   and a line on the loss plot.
 * - present: presentation mode (large type) on the page and every figure.
 * - copyLink: copies the current address (the whole state lives in the URL).
 * - upload size: a file over the server's limit (the upload box's data-max-bytes) is
 *   refused in the browser with a message, before its bytes are read and sent (the server
 *   would answer the oversized request with a bare 413).
 */
(function () {
  "use strict";
  var ANIM_UID = "anim-marker";
  var SELECTED_UID = "selected-marker";
  var SURFACE_MS = 1000;
  var state = {playing: false, lastSurface: 0, busy: false, busySince: 0};

  function dc() { return window.dash_clientside; }
  function noUpdate() { return window.dash_clientside.no_update; }
  function newPatch() { return new window.dash_clientside.Patch(); }

  function traceIndex(fig, uid) {
    if (!fig || !fig.data) { return -1; }
    for (var i = 0; i < fig.data.length; i++) {
      if (fig.data[i] && fig.data[i].uid === uid) { return i; }
    }
    return -1;
  }

  function shapeIndex(fig, name) {
    var shapes = fig && fig.layout && fig.layout.shapes;
    if (!shapes) { return -1; }
    for (var i = 0; i < shapes.length; i++) {
      if (shapes[i] && shapes[i].name === name) { return i; }
    }
    return -1;
  }

  function fmt(x) {
    if (x === null || x === undefined || !isFinite(x)) { return "—"; }
    var a = Math.abs(x);
    return (a !== 0 && (a < 1e-3 || a >= 1e5)) ? x.toExponential(3) : x.toPrecision(4);
  }

  function nearest(anim, step) {
    var best = 0, bestDist = Infinity;
    for (var i = 0; i < anim.step.length; i++) {
      var d = Math.abs(anim.step[i] - step);
      if (d < bestDist) { bestDist = d; best = i; }
    }
    return best;
  }

  function movePoint(fig, uid, x, y, z) {
    var i = traceIndex(fig, uid);
    if (i < 0) { return noUpdate(); }
    var p = newPatch().assign(["data", i, "x"], x).assign(["data", i, "y"], y);
    if (z !== null) { p.assign(["data", i, "z"], z); }
    return p.build();
  }

  function moveShape(fig, name, x, y) {
    var i = shapeIndex(fig, name);
    if (i < 0) { return noUpdate(); }
    return newPatch()
      .assign(["layout", "shapes", i, "xanchor"], x)
      .assign(["layout", "shapes", i, "yanchor"], y)
      .assign(["layout", "shapes", i, "visible"], true)
      .build();
  }

  function moveLine(fig, name, step, visible) {
    var i = shapeIndex(fig, name);
    if (i < 0) { return noUpdate(); }
    return newPatch()
      .assign(["layout", "shapes", i, "x0"], step)
      .assign(["layout", "shapes", i, "x1"], step)
      .assign(["layout", "shapes", i, "visible"], visible)
      .build();
  }

  // The surface's height at the grid node nearest (a, b), or null when its data are not
  // plain arrays (the selected marker is then left off the 3-D view).
  function surfaceHeight(fig, a, b) {
    var tr = fig && fig.data && fig.data[0];
    if (!tr || !Array.isArray(tr.x) || !Array.isArray(tr.y) || !Array.isArray(tr.z)) {
      return null;
    }
    var i = 0, j = 0, k;
    for (k = 1; k < tr.x.length; k++) {
      if (Math.abs(tr.x[k] - a) < Math.abs(tr.x[j] - a)) { j = k; }
    }
    for (k = 1; k < tr.y.length; k++) {
      if (Math.abs(tr.y[k] - b) < Math.abs(tr.y[i] - b)) { i = k; }
    }
    var row = tr.z[i];
    var z = Array.isArray(row) ? row[j] : null;
    return typeof z === "number" && isFinite(z) ? z : null;
  }

  function hasFrames(anim) { return anim && anim.step && anim.step.length > 0; }

  window.dash_clientside = window.dash_clientside || {};
  window.dash_clientside.landscape = {
    play: function (nClicks, nIntervals, value, max, disabled) {
      var trig = (dc().callback_context.triggered || []).map(function (t) { return t.prop_id; });
      value = value || 0;
      max = max || 0;
      if (trig.indexOf("anim-play.n_clicks") >= 0) {
        if (disabled) {
          state.playing = true;
          return [false, "❚❚ Pause", value >= max ? 0 : value];
        }
        state.playing = false;  // the last frame again, now drawn in 3-D too
        return [true, "▶ Play", value];
      }
      if (disabled) { return [noUpdate(), noUpdate(), noUpdate()]; }
      // Never queue frames faster than the page paints them: skip this tick while the
      // last frame has not reached the screen (slow machines, software WebGL).
      if (state.busy && Date.now() - state.busySince < 2000) {
        return [noUpdate(), noUpdate(), noUpdate()];
      }
      var stride = Math.max(1, Math.ceil(max / 120));
      var next = value + stride;
      if (next >= max) { state.playing = false; return [true, "▶ Play", max]; }
      return [noUpdate(), noUpdate(), next];
    },

    frame: function (value, anim, contour, surface, path) {
      if (!hasFrames(anim)) { return [noUpdate(), noUpdate(), noUpdate(), ""]; }
      var k = Math.max(0, Math.min(anim.step.length - 1, Math.round(value || 0)));
      var step = anim.step[k];
      var label = "step " + step + (anim.loss && anim.loss[k] !== null
        ? " · loss " + fmt(anim.loss[k]) : "");
      // Redrawing the WebGL surface is the expensive part of a frame: while playing, move
      // its marker at most every SURFACE_MS (the 2-D views follow every frame).
      var now = Date.now();
      // Busy until the contour has redrawn (plotly_afterplot), or 2 s at most.
      var gd = document.querySelector("#contour-graph .js-plotly-plot");
      if (gd && gd.on && !gd._landscapeHooked) {
        gd._landscapeHooked = true;
        gd.on("plotly_afterplot", function () { state.busy = false; });
      }
      state.busy = !!(gd && gd.on);
      state.busySince = now;
      var playing = (dc().callback_context.triggered || []).length > 0 && state.playing;
      var surfacePatch = noUpdate();
      if (!playing || now - state.lastSurface >= SURFACE_MS) {
        state.lastSurface = now;
        surfacePatch = movePoint(surface, ANIM_UID, [anim.x[k]], [anim.y[k]], [anim.z[k]]);
      }
      return [
        moveShape(contour, ANIM_UID, anim.x[k], anim.y[k]),
        surfacePatch,
        moveLine(path, "cursor", step, true),
        label
      ];
    },

    select: function (view, anim, contour, surface, path) {
      var step = view ? view.selected_step : null;
      var a = view ? view.selected_alpha : null, b = view ? view.selected_beta : null;
      if (typeof a === "number" && typeof b === "number") {
        // a clicked plane point (α, β): the origin when the plane is centred there
        if (view.center === "selected") { a = 0; b = 0; }
        var z = surfaceHeight(surface, a, b);
        return [movePoint(contour, SELECTED_UID, [a], [b], null),
                z === null ? movePoint(surface, SELECTED_UID, [], [], [])
                           : movePoint(surface, SELECTED_UID, [a], [b], [z]),
                moveLine(path, "selected", 0, false)];
      }
      if (step === null || step === undefined || !hasFrames(anim)) {
        return [movePoint(contour, SELECTED_UID, [], [], null),
                movePoint(surface, SELECTED_UID, [], [], []),
                moveLine(path, "selected", 0, false)];
      }
      var k = nearest(anim, step);
      return [movePoint(contour, SELECTED_UID, [anim.x[k]], [anim.y[k]], null),
              movePoint(surface, SELECTED_UID, [anim.x[k]], [anim.y[k]], [anim.z[k]]),
              moveLine(path, "selected", step, true)];
    },

    critical: function (store, anim, contour, surface) {
      if (!store) {
        return [movePoint(contour, "critical-marker", [], [], null),
                movePoint(surface, "critical-marker", [], [], [])];
      }
      return [movePoint(contour, "critical-marker", [store.x], [store.y], null),
              movePoint(surface, "critical-marker", [store.x], [store.y], [store.z])];
    },

    present: function (ui) {
      var on = !!(ui && ui.present);
      // the cards change size with the mode: let plotly re-measure them
      window.setTimeout(function () { window.dispatchEvent(new Event("resize")); }, 60);
      var figs = Array.prototype.slice.call(arguments, 1);
      var out = [on ? "app present" : "app", on ? "btn btn-toggle active" : "btn btn-toggle"];
      for (var i = 0; i < figs.length; i++) {
        var fig = figs[i];
        var current = fig && fig.layout && fig.layout.font && fig.layout.font.size;
        var size = on ? 17 : 12;
        out.push(fig && fig.layout && current !== size
          ? newPatch().assign(["layout", "font", "size"], size).build() : noUpdate());
      }
      return out;
    },

    copyLink: function () {
      var url = window.location.href;
      try {
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(url).catch(function () { /* shown below anyway */ });
        } else {
          var area = document.createElement("textarea");
          area.value = url;
          document.body.appendChild(area);
          area.select();
          document.execCommand("copy");
          document.body.removeChild(area);
        }
      } catch (e) { /* the link is shown in the address bar anyway */ }
      return "link copied";
    }
  };

  function tooBig(files, box) {
    var limit = Number(box.getAttribute("data-max-bytes"));
    if (!limit || !files) { return null; }
    for (var i = 0; i < files.length; i++) {
      if (files[i].size > limit) {
        return files[i].name + " is " + (files[i].size / 1048576).toFixed(1) +
          " MiB; uploads are limited to " + (limit / 1048576).toFixed(0) +
          " MiB: use fewer rows or save it as a compressed .npz.";
      }
    }
    return null;
  }

  function refuse(event, files) {
    var box = document.getElementById("upload-wrap");
    var message = box && tooBig(files, box);
    if (!message) { return; }
    event.preventDefault();
    event.stopImmediatePropagation();
    if (event.target && event.target.value !== undefined) { event.target.value = ""; }
    if (dc() && dc().set_props) {
      dc().set_props("err-upload", {children: message});
      dc().set_props("upload-status", {children: ""});
    }
  }

  // Capture phase: runs before the upload component's own handlers read the file.
  document.addEventListener("change", function (event) {
    var t = event.target;
    if (t && t.type === "file" && t.closest && t.closest("#upload")) { refuse(event, t.files); }
  }, true);
  document.addEventListener("drop", function (event) {
    var t = event.target;
    if (t && t.closest && t.closest("#upload") && event.dataTransfer) {
      refuse(event, event.dataTransfer.files);
    }
  }, true);
})();
