"""Hardening of the web process: request limits, safe errors, no debug mode, security headers.

:func:`install_hardening` is called by :func:`landscape_app.create_app` on the Flask server. It

* caps a request body at :data:`MAX_REQUEST_BYTES` (the largest upload, base64-encoded as
  ``dcc.Upload`` sends it, plus 1 MiB for the rest of the callback request): larger bodies
  get 413 before they are read;
* checks the envelope of every ``POST /_dash-update-component`` before Dash sees it: a JSON
  object nested at most :data:`MAX_JSON_DEPTH` deep, with a known ``output``, and
  ``inputs``/``state``/``outputs`` shaped as Dash's renderer sends them (and as many as the
  callback declares). Anything else is answered 400 with one sentence of JSON;
* answers an exception that escapes Dash's dispatch with 400 (Dash could not use the request:
  a wrong type, a missing key) or 422 (the callback itself raised on the values it was given),
  as ``{"error": "... (reference <ref>)"}``; the traceback goes to the log under that
  reference, never to the client. Other routes answer 500 with the same one sentence;
* turns debug mode off and stops exceptions from propagating to a WSGI debugger, and scrubs
  any 5xx body that still looks like a traceback;
* adds security headers (``X-Content-Type-Options``, ``X-Frame-Options``, ``Referrer-Policy``,
  a Content-Security-Policy that Dash and Plotly work under, …) without changing Dash's
  own responses.

Like the rest of the web process this module never imports JAX: the limits are read from
``compute/_limits.py`` by file (see :mod:`landscape_app.settings`).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import uuid
from collections.abc import Callable

import flask
from dash.exceptions import PreventUpdate
from werkzeug.exceptions import HTTPException

from landscape_app.settings import LIMITS

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "MAX_CALLBACK_ARGS",
    "MAX_JSON_DEPTH",
    "MAX_REQUEST_BYTES",
    "SECURITY_HEADERS",
    "check_callback_request",
    "install_hardening",
]

log = logging.getLogger("landscape.hardening")

# dcc.Upload sends a file as a base64 data URL (4 bytes per 3) inside the callback's JSON.
MAX_REQUEST_BYTES = 4 * math.ceil(LIMITS.MAX_UPLOAD_BYTES / 3) + 2**20
MAX_JSON_DEPTH = 64        # nesting of a callback request (figures are about 8 deep)
MAX_CALLBACK_ARGS = 1_000  # inputs + state entries (pattern-matching lists included)
MAX_OUTPUT_ID = 20_000     # characters of the ``output`` string of a multi-output callback
DISPATCH = "_dash-update-component"

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    # Dash's index page starts its renderer and clientside callbacks from inline scripts;
    # Plotly compiles some functions at run time.
    "script-src 'self' 'unsafe-inline' 'unsafe-eval'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data: blob:",
    "font-src 'self' data:",
    "connect-src 'self'",
    "worker-src 'self' blob:",
    "object-src 'none'",
    "base-uri 'self'",
    "form-action 'self'",
    "frame-ancestors 'self'",
])
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "SAMEORIGIN",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
}
_TRACEBACK_MARKERS = (b"Traceback (most recent call last)", b"Werkzeug Debugger",
                      b'File "/')


class BadCallbackRequest(ValueError):
    """A callback request that Dash cannot use; the message is sent to the client (400)."""


# --------------------------------------------------------------------------- the envelope


def _depth_exceeds(value: object, limit: int) -> bool:
    """Whether JSON ``value`` nests deeper than ``limit`` (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


def _is_prop(entry: object) -> bool:
    """A ``{"id": str | dict, "property": str, ...}`` entry as the renderer sends it."""
    return (isinstance(entry, dict) and isinstance(entry.get("property"), str)
            and isinstance(entry.get("id"), (str, dict)))


def _check_props(name: str, entries: object, expected: int | None) -> None:
    if not isinstance(entries, list):
        raise BadCallbackRequest(f"'{name}' must be a list.")
    if expected is not None and len(entries) != expected:
        raise BadCallbackRequest(f"this callback takes {expected} {name}, got {len(entries)}.")
    for entry in entries:
        group = entry if isinstance(entry, list) else [entry]
        if not all(_is_prop(e) for e in group):
            raise BadCallbackRequest(f"each of '{name}' must be an object with 'id' and "
                                     "'property' (or a list of them).")


def check_callback_request(body: object, callback_map: dict | None) -> None:
    """Raise :class:`BadCallbackRequest` unless ``body`` is a usable callback request.

    ``callback_map`` is the Dash app's (``None``: skip the checks that need it).
    """
    if not isinstance(body, dict):
        raise BadCallbackRequest("the request must be a JSON object.")
    if _depth_exceeds(body, MAX_JSON_DEPTH):
        raise BadCallbackRequest(f"the request is nested more than {MAX_JSON_DEPTH} levels deep.")
    output = body.get("output")
    if not isinstance(output, str) or not output or len(output) > MAX_OUTPUT_ID:
        raise BadCallbackRequest("'output' must name a callback.")
    callback = None
    if callback_map is not None:
        callback = callback_map.get(output)
        if callback is None or "callback" not in callback:
            raise BadCallbackRequest("there is no callback for this 'output'.")
    inputs, state = body.get("inputs"), body.get("state", [])
    n_inputs = len(callback["inputs"]) if callback else None
    n_state = len(callback["state"]) if callback else None
    _check_props("inputs", inputs, n_inputs)
    _check_props("state", state, n_state)
    if len(inputs) + len(state) > MAX_CALLBACK_ARGS:
        raise BadCallbackRequest(f"a callback takes at most {MAX_CALLBACK_ARGS} arguments.")
    outputs = body.get("outputs")
    if outputs is not None:
        group = outputs if isinstance(outputs, list) else [outputs]
        flat = [e for g in group for e in (g if isinstance(g, list) else [g])]
        if not all(_is_prop(e) for e in flat):
            raise BadCallbackRequest("'outputs' must be objects with 'id' and 'property'.")
    changed = body.get("changedPropIds", [])
    if not isinstance(changed, list) or not all(isinstance(c, str) for c in changed):
        raise BadCallbackRequest("'changedPropIds' must be a list of strings.")


# --------------------------------------------------------------------------- dispatch guard


def _reference() -> str:
    return uuid.uuid4().hex[:10]


def _json_error(message: str, status: int) -> flask.Response:
    body = json.dumps({"error": message})
    return flask.Response(body, status=status, mimetype="application/json")


def _raised_in_callback(exc: BaseException) -> bool:
    """Whether the traceback goes below Dash's ``_invoke_callback`` (the app's own code)."""
    try:
        from dash._callback import _async_invoke_callback, _invoke_callback
        codes = {_invoke_callback.__code__, _async_invoke_callback.__code__}
    except (ImportError, AttributeError):  # another Dash: judge by file names
        codes = set()
    tb = exc.__traceback__
    inside = False
    while tb is not None:
        code = tb.tb_frame.f_code
        if inside:
            return True
        if code in codes:
            inside = True
        elif not codes and "landscape_app" in code.co_filename and \
                not code.co_filename.endswith("hardening.py"):
            return True
        tb = tb.tb_next
    return False


def _dash_app_of(view: Callable) -> object | None:
    """The Dash app whose dispatch view this is (it closes over it), or None."""
    for cell in getattr(view, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if isinstance(getattr(value, "callback_map", None), dict):
            return value
    return None


def _guard_dispatch(view: Callable) -> Callable:
    """Wrap Dash's dispatch view: envelope checks first, exceptions answered without a 500."""
    dash_app = _dash_app_of(view)

    @functools.wraps(view)
    def guarded(*args, **kwargs):
        try:
            body = flask.request.get_json()  # cached: Dash's own get_json() reuses it
        except HTTPException:  # 400 malformed JSON, 413 too large, 415 not JSON
            raise
        except (RecursionError, ValueError, UnicodeDecodeError):
            return _json_error("the request body is not valid JSON.", 400)
        callback_map = getattr(dash_app, "callback_map", None)
        try:
            check_callback_request(body, callback_map)
        except BadCallbackRequest as exc:
            return _json_error(str(exc), 400)
        try:
            return view(*args, **kwargs)
        except HTTPException:
            raise
        except Exception as exc:
            if isinstance(exc, PreventUpdate):  # Dash's own handler answers 204
                raise
            ref = _reference()
            if _raised_in_callback(exc):
                log.error("callback error (reference %s) for output %.200s", ref,
                          body.get("output"), exc_info=exc)
                return _json_error(f"the dashboard could not use these values "
                                   f"(reference {ref}).", 422)
            log.warning("bad callback request (reference %s): %s: %.300s", ref,
                        type(exc).__name__, exc, exc_info=exc)
            return _json_error(f"the callback request could not be processed "
                               f"(reference {ref}).", 400)

    return guarded


# --------------------------------------------------------------------------- installation


def _handle_exception(exc: Exception):
    """Any route: HTTP errors as they are; anything else one sentence and a log reference."""
    if isinstance(exc, HTTPException):
        if flask.request.path.endswith(DISPATCH):
            return _json_error(exc.description or exc.name, exc.code or 400)
        return exc
    ref = _reference()
    log.error("unhandled error (reference %s) on %s %s", ref, flask.request.method,
              flask.request.path[:200], exc_info=exc)
    return _json_error(f"internal error (reference {ref}).", 500)


def _scrub(response: flask.Response) -> flask.Response:
    """Replace a 5xx body that looks like a traceback (a debugger, a foreign error handler)."""
    if response.status_code >= 500 and not response.direct_passthrough \
            and not response.is_streamed:
        data = response.get_data()
        if any(marker in data for marker in _TRACEBACK_MARKERS):
            ref = _reference()
            log.error("a %d response carried a traceback (reference %s); replaced",
                      response.status_code, ref)
            response.set_data(json.dumps({"error": f"internal error (reference {ref})."}))
            response.mimetype = "application/json"
    return response


def install_hardening(server: flask.Flask) -> None:
    """Limits, error handling, no debug mode and security headers for the dashboard's server.

    Call after Dash has registered its routes (``dash.Dash(...)`` does so at once); calling
    it twice is harmless. ``LANDSCAPE_CSP=off`` drops the Content-Security-Policy header
    (for a proxy that sets its own).
    """
    if server.extensions.get("landscape_hardening"):
        return
    server.extensions["landscape_hardening"] = True
    server.debug = False
    server.config["DEBUG"] = False
    server.config["PROPAGATE_EXCEPTIONS"] = False  # never hand an exception to a debugger
    server.config["TRAP_BAD_REQUEST_ERRORS"] = False
    server.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    for endpoint, view in list(server.view_functions.items()):
        if endpoint.endswith(DISPATCH):
            server.view_functions[endpoint] = _guard_dispatch(view)
    server.register_error_handler(Exception, _handle_exception)
    headers = dict(SECURITY_HEADERS)
    if os.environ.get("LANDSCAPE_CSP", "").strip().lower() in ("off", "0", "none"):
        headers.pop("Content-Security-Policy")

    @server.after_request
    def _harden_response(response: flask.Response) -> flask.Response:
        for name, value in headers.items():
            response.headers.setdefault(name, value)
        return _scrub(response)
