"""The built distribution carries the browser pages and the npm files they load: a wheel
built with ``python -m build`` (through its sdist), installed in a fresh virtual
environment, serves a working client page with nothing from this checkout."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest

from privml.transport._tokens import TokenStore, default_tokens_path
from privml.transport.tls import init_federation
from tests._browser import CHROMIUM, FLAGS, ROOT, spki_flag

VENDORED = ("tf.min.js", "tf-backend-wasm.min.js", "tfjs-backend-wasm.wasm",
            "tfjs-backend-wasm-simd.wasm", "tfjs-backend-wasm-threaded-simd.wasm")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (found,) = out.glob("privml-*.whl")
    return found


def test_the_wheel_carries_pages_modules_and_npm_files(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for page in ("client.html", "predict.html", "client.js", "predict.js", "api.js",
                 "model.js", "dp.js", "store.js", "secagg/crypto.js", "secagg/messages.js",
                 "secagg/protocol.js",
                 "privml.css", "csp-shim.js", "vendor.json"):
        assert f"privml/web/{page}" in names, page
    for name in VENDORED:
        assert f"privml/web/vendor/{name}" in names, name
    wasm = zipfile.ZipFile(wheel).read("privml/web/vendor/tfjs-backend-wasm.wasm")
    assert wasm[:4] == b"\0asm"


def _fresh_venv(tmp: Path, wheel: Path) -> Path:
    """A new venv with only the wheel installed; its dependencies come from this test's
    environment through a path entry (not its editable privml, whose finder is never run)."""
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q",
                    "--no-deps", "--disable-pip-version-check", str(wheel)], check=True,
                   timeout=300)
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig."
                                "get_paths()['purelib'])"], capture_output=True, text=True,
                               check=True).stdout.strip())
    (site / "zz_privml_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return py


def test_a_fresh_install_serves_a_working_client_page(wheel: Path, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    py = _fresh_venv(tmp_path, wheel)
    where = subprocess.run([str(py), "-c", "import privml; print(privml.__file__)"],
                           capture_output=True, text=True, check=True, cwd=tmp_path)
    assert where.stdout.startswith(str(tmp_path / "venv")), where.stdout
    paths = init_federation(tmp_path / "fed")
    token = TokenStore(default_tokens_path(paths.dir)).create("client", label="wheel-page")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    server = subprocess.Popen(
        [str(py), "-m", "privml", "server", "--federation", str(paths.dir), "--rounds", "1",
         "--clients-per-round", "1", "--device-port", "0", "--web-port", "0",
         "--model", "logreg"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    try:
        assert server.stdout is not None
        url, seen = None, []
        deadline = time.monotonic() + 120
        while url is None and time.monotonic() < deadline:
            line = server.stdout.readline()
            seen.append(line)
            if m := re.search(r"browser client page: (https://\S+)/client", line):
                url = m.group(1)
        assert url is not None, "".join(seen)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM,
                                         args=[*FLAGS, spki_flag(paths.server_cert)])
            try:
                page = browser.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(f"{url}/client")
                for _ in range(300):
                    if page.evaluate("!!(window.privmlClient && window.privmlClient.ready)"):
                        break
                    time.sleep(0.1)
                page.fill("#token", token)
                page.click("#join")
                for _ in range(300):
                    if page.text_content("#join-msg"):
                        break
                    time.sleep(0.1)
                assert "Joined as web-wheel-page" in str(page.text_content("#join-msg"))
                backend = page.evaluate("""async () => {
                  tf.wasm.setWasmPaths("/vendor/");
                  await tf.setBackend("wasm");
                  await tf.ready();
                  return tf.getBackend() + " " + tf.tensor([1, 2, 3]).sum().dataSync()[0]; }""")
                assert backend == "wasm 6"
                assert not errors, errors
            finally:
                browser.close()
    finally:
        server.terminate()
        server.wait(30)
