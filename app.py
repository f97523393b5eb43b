"""Landscape dashboard entry point: ``python app.py`` (or ``make run``) serves on
http://127.0.0.1:8050; ``HOST`` and ``PORT`` change that. ``app.server`` is the WSGI app
for gunicorn (``gunicorn app:server``)."""

import os

from landscape_app import create_app

app = create_app()
server = app.server

if __name__ == "__main__":
    app.run(host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "8050")),
            debug=False)
