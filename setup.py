"""Build hook: the wheel and the sdist carry the npm files the coordinator serves to browsers.

``src/privml/web/vendor.json`` names them (served name -> path under node_modules, which
`make setup` fills with `npm ci`). Building a wheel or an sdist copies them into
``src/privml/web/vendor/`` (git-ignored) so they ship as package data; an sdist carries the
copies, so a wheel built from it needs no node_modules. Everything else is in pyproject.toml.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.egg_info import egg_info
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent
WEB = HERE / "src" / "privml" / "web"


def vendor(*, required: bool) -> None:
    table = json.loads((WEB / "vendor.json").read_text())
    target = WEB / "vendor"
    missing = []
    for name, rel in table.items():
        if name.startswith("_"):
            continue
        source, dest = HERE / "node_modules" / rel, target / name
        if source.is_file():
            target.mkdir(exist_ok=True)
            if not dest.is_file() or dest.read_bytes() != source.read_bytes():
                shutil.copyfile(source, dest)
        elif not dest.is_file():
            missing.append(rel)
    if missing and required:
        raise SystemExit("the browser pages need the npm packages: run `npm ci "
                         "--ignore-scripts` (or `make setup`) first; missing: "
                         + ", ".join(missing))


class BuildPy(build_py):
    def run(self) -> None:
        # An editable install (make setup runs it before npm ci) serves node_modules
        # directly, so only a real build insists.
        vendor(required=not getattr(self, "editable_mode", False))
        super().run()


class EggInfo(egg_info):
    def run(self) -> None:
        vendor(required=False)
        super().run()


class Sdist(sdist):
    def run(self) -> None:
        vendor(required=True)
        super().run()


setup(cmdclass={"build_py": BuildPy, "egg_info": EggInfo, "sdist": Sdist})
