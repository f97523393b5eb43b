"""The Dash UI of Landscape (placeholder page until the dashboard issue lands)."""

import dash
from dash import html


def create_app() -> dash.Dash:
    app = dash.Dash(__name__, title="Landscape")
    app.layout = html.Div([html.H1("Landscape"), html.P("Loss surfaces of neural networks.")])
    return app
