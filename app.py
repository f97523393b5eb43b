"""Landscape dashboard entry point: ``python app.py`` (or ``make run``) serves on
http://127.0.0.1:8050; ``HOST`` and ``PORT`` change that. ``app.server`` is the WSGI app
for gunicorn (``gunicorn app:server``).

Run directly, it also warms up in the background while the browser loads the page: it starts
the compute server (a separate JAX process) and computes the default view into the result
cache, so the first page shows its surface sooner. ``LANDSCAPE_WARM=0`` turns that off.
"""

import logging
import os
import threading

from landscape_app import create_app

app = create_app()
server = app.server


def warm_up() -> None:
    """Start the compute server and cache the default view's path and surface."""
    try:
        from landscape_app.cache import cached_task
        from landscape_app.settings import DEFAULTS

        for task in ("path", "surface"):
            cached_task(task, DEFAULTS)
    except Exception:  # noqa: BLE001 - warming is an optimisation; the page still works
        logging.getLogger("landscape").warning("warm-up failed", exc_info=True)


if __name__ == "__main__":
    if os.environ.get("LANDSCAPE_WARM", "1") != "0":
        threading.Thread(target=warm_up, name="landscape-warm-up", daemon=True).start()
    app.run(host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "8050")),
            debug=False)
