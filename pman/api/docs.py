"""The interactive API documentation: Swagger UI served by pman itself.

Swagger UI's files come from the flask-swagger-ui package (its ``dist``
folder: Swagger UI 5, which reads OpenAPI 3.1), so the page works on a
machine without internet access: no CDN, nothing fetched at run time. Only
the few files the page uses are served, by name; any other name is 404.
The page and its files carry no job data and need no credentials
(pman.api.auth.OPEN_PATHS); its "Authorize" button takes a bearer token for
the requests it sends.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from pathlib import Path

from flask import Blueprint, Response, send_file
from werkzeug.exceptions import NotFound

docs = Blueprint("docs", __name__, url_prefix="/api/v1/docs")

#: the files of Swagger UI's distribution the page loads
ASSETS = frozenset(
    {
        "swagger-ui.css",
        "index.css",
        "swagger-ui-bundle.js",
        "swagger-ui-standalone-preset.js",
        "favicon-32x32.png",
        "favicon-16x16.png",
    }
)
#: Swagger UI's options; the document's URL is relative, so a prefix in front works
UI_CONFIG = {
    "url": "../openapi.json",
    "dom_id": "#swagger-ui",
    "layout": "StandaloneLayout",
    "deepLinking": True,
    # Swagger UI would send the document to an online validator: no network calls
    "validatorUrl": None,
}

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="UTF-8">
  <title>pman API</title>
  <link rel="stylesheet" type="text/css" href="swagger-ui.css">
  <link rel="stylesheet" type="text/css" href="index.css">
  <link rel="icon" type="image/png" href="favicon-32x32.png" sizes="32x32">
  <link rel="icon" type="image/png" href="favicon-16x16.png" sizes="16x16">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="swagger-ui-bundle.js"></script>
  <script src="swagger-ui-standalone-preset.js"></script>
  <script>
    window.onload = function () {
      var config = %s;
      config.presets = [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset];
      config.plugins = [SwaggerUIBundle.plugins.DownloadUrl];
      window.ui = SwaggerUIBundle(config);
    };
  </script>
</body>
</html>
"""


@cache
def assets_dir() -> Path:
    return Path(str(files("flask_swagger_ui") / "dist"))


@docs.get("/")
def page() -> Response:
    resp = Response(_PAGE % json.dumps(UI_CONFIG), content_type="text/html; charset=utf-8")
    resp.headers["Cache-Control"] = "no-cache"
    return resp


@docs.get("/<string:asset>")
def asset(asset: str) -> Response:
    if asset not in ASSETS:
        raise NotFound(f"no documentation file named {asset!r}")
    return send_file(assets_dir() / asset, max_age=86400)
