"""Shared by the browser tests: Debian's chromium driven by playwright (never a downloaded
browser), and a static file server on 127.0.0.1 for pages, models and the npm libraries."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VENDOR = {  # URL path -> file under node_modules (UMD builds: they set globalThis.tf)
    "/vendor/tf.min.js": "@tensorflow/tfjs/dist/tf.min.js",
    "/vendor/tf-backend-wasm.min.js": "@tensorflow/tfjs-backend-wasm/dist/tf-backend-wasm.min.js",
    "/vendor/tfjs-backend-wasm.wasm":
        "@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm",
    "/vendor/tfjs-backend-wasm-simd.wasm":
        "@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-simd.wasm",
    "/vendor/tfjs-backend-wasm-threaded-simd.wasm":
        "@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-threaded-simd.wasm",
}


def spki_flag(cert_pem: Path) -> str:
    """The chromium flag that makes it trust this one server certificate (by the sha256 of
    its public key), as a page of the federation would after installing its CA."""
    import base64
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate(cert_pem.read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return "--ignore-certificate-errors-spki-list=" + base64.b64encode(
        hashlib.sha256(spki).digest()).decode()


class _Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map: ClassVar[dict[str, str]] = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".js": "text/javascript", ".wasm": "application/wasm",
                      ".json": "application/json"}

    def translate_path(self, path: str) -> str:
        vendored = VENDOR.get(path.split("?", 1)[0])
        if vendored is not None:
            return str(ROOT / "node_modules" / vendored)
        return super().translate_path(path)

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass


@contextmanager
def static_server(folder: Path) -> Iterator[str]:
    """``folder`` (and the vendored npm files under /vendor/) at http://127.0.0.1:PORT."""
    handler = functools.partial(_Handler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
