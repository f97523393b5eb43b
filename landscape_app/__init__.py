"""The Dash UI of Landscape: :func:`create_app` builds the dashboard.

The web process never imports JAX or :mod:`compute` (it forks: gunicorn workers, background
jobs); numerics run in the compute server (:mod:`landscape_app.compute_server`). Importing
this package and calling :func:`create_app` loads Dash, Flask and numpy only.
"""

from __future__ import annotations

import logging
from pathlib import Path

import dash
from flask import Response

__all__ = ["create_app"]

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("landscape")


def _background_manager():
    """The service layer's manager (DiskcacheManager embedded, Celery with Redis)."""
    try:
        from landscape_app.cache import make_background_manager
    except ImportError:  # the service layer is not installed: a local DiskcacheManager
        import diskcache
        from dash import DiskcacheManager

        from landscape_app.settings import cache_dir

        return DiskcacheManager(diskcache.Cache(str(cache_dir() / "background")))
    return make_background_manager()


def create_app() -> dash.Dash:
    """The dashboard: layout, callbacks, hardening, result cache and ``/healthz``.

    ``app.server`` is the Flask (WSGI) app for gunicorn. ``/healthz`` answers 200 "ok" at
    once without touching the compute server.
    """
    from landscape_app.callbacks import register_callbacks
    from landscape_app.layout import make_layout

    app = dash.Dash(
        __name__,
        title="Landscape",
        assets_folder=str(ROOT / "assets"),
        background_callback_manager=_background_manager(),
        update_title=None,
        meta_tags=[{"name": "viewport", "content": "width=device-width, initial-scale=1"}],
    )
    app.layout = make_layout
    register_callbacks(app)

    @app.server.route("/healthz")
    def healthz() -> Response:
        return Response("ok", status=200, mimetype="text/plain")

    try:
        from landscape_app.hardening import install_hardening
    except ImportError:
        log.warning("landscape_app.hardening is missing: no request limits or headers")
    else:
        install_hardening(app.server)
    try:
        from landscape_app.cache import init_cache
    except ImportError:
        log.warning("landscape_app.cache is missing: results will not be cached")
    else:
        init_cache(app.server)
    return app
