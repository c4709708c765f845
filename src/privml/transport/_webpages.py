"""The web port's pages: the coordinator's dashboard (``/``) and its runs page (``/runs``),
the browser client (``/client``), the inference page (``/predict``), their ES modules
(``/web/...``) and the npm libraries they load (``/vendor/...``).

Pages and scripts are public — a page has to load before its user can type a token — and
hold no secret; every API call they make carries the token in a header (the dashboard's
carry its session cookie instead: see :mod:`._dashboard`). The libraries come
from the wheel (``privml/web/vendor/``, copied from ``node_modules`` by ``setup.py`` at
build time) or, in a source checkout, from ``node_modules`` itself; never from a CDN.

Every answer of the web port carries the security headers below. The CSP allows scripts
from this origin only, plus ``'wasm-unsafe-eval'`` (compiling the TF.js wasm backend) and
nothing wider: no inline script or style, no eval, no other origin to connect to.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import Response

from privml._exceptions import ProtocolError

__all__ = ["CSP", "SECURITY_HEADERS", "WEB_DIR", "is_public", "page_routes", "vendor_files"]

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
CSP = ("default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; connect-src 'self'; "
       "img-src 'self' blob: data:; style-src 'self'; base-uri 'none'; form-action 'none'; "
       "frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Strict-Transport-Security": "max-age=31536000",
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
PAGES = {"/": "dashboard.html", "/runs": "runs.html", "/client": "client.html",
         "/predict": "predict.html"}
_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html; charset=utf-8",
          ".wasm": "application/wasm", ".json": "application/json"}
_SOURCE_NODE_MODULES = WEB_DIR.parent.parent.parent / "node_modules"  # a source checkout


def is_public(method: str, path: str) -> bool:
    """Whether a request is for a public page or asset (no token, no protocol header)."""
    return method in ("GET", "HEAD") and (
        path in PAGES or path.startswith(("/web/", "/vendor/")) or path == "/favicon.ico")


@cache
def vendor_files() -> dict[str, Path]:
    """Served name -> file of every vendored npm asset (those that exist)."""
    table = json.loads((WEB_DIR / "vendor.json").read_text())
    out: dict[str, Path] = {}
    for name, rel in table.items():
        if name.startswith("_"):
            continue
        for candidate in (WEB_DIR / "vendor" / name, _SOURCE_NODE_MODULES / rel):
            if candidate.is_file():
                out[name] = candidate
                break
    return out


@cache
def _web_files() -> dict[str, Path]:
    """URL path under /web/ -> file: the package's own page assets (not the vendor copy)."""
    out: dict[str, Path] = {}
    for path in WEB_DIR.rglob("*"):
        rel = path.relative_to(WEB_DIR).as_posix()
        if path.is_file() and path.suffix in (".js", ".css") and not rel.startswith("vendor/"):
            out[rel] = path
    return out


def _file(path: Path, *, immutable: bool = False) -> Response:
    cache_control = "public, max-age=86400" if immutable else "no-cache"
    return Response(path.read_bytes(), media_type=_TYPES.get(path.suffix, "text/plain"),
                    headers={"Cache-Control": cache_control})


def _missing(what: str) -> ProtocolError:
    return ProtocolError(f"no such file: {what}", code="not_found", status=404)


def page_routes(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def dashboard_page() -> Response:
        return _file(WEB_DIR / PAGES["/"])

    @app.get("/runs", include_in_schema=False)
    async def runs_page() -> Response:
        return _file(WEB_DIR / PAGES["/runs"])

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/client", include_in_schema=False)
    async def client_page() -> Response:
        return _file(WEB_DIR / PAGES["/client"])

    @app.get("/predict", include_in_schema=False)
    async def predict_page() -> Response:
        return _file(WEB_DIR / PAGES["/predict"])

    @app.get("/web/{path:path}", include_in_schema=False)
    async def web_asset(path: str) -> Response:
        found = _web_files().get(path)  # a fixed table: no path ever reaches the disk
        if found is None:
            raise _missing(f"/web/{path}")
        return _file(found)

    @app.get("/vendor/{name}", include_in_schema=False)
    async def vendor_asset(name: str) -> Response:
        found = vendor_files().get(name)
        if found is None:
            raise _missing(f"/vendor/{name} (the npm packages are installed by `make setup`;"
                           " a wheel carries them)")
        return _file(found, immutable=True)
