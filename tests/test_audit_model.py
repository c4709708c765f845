"""``privml audit model``: malicious pickles are caught without ever being loaded.

Every malicious fixture is built here, and each is proven live: the very same bytes, loaded
by ``pickle.loads`` (or ``torch.load``) in a subprocess in another folder, make the marker
file appear there. The audits run with the working directory set to a folder where the
payload would write the same marker, and the marker never appears.
"""

from __future__ import annotations

import builtins
import functools
import importlib
import json
import logging
import marshal
import os
import pickle
import runpy
import struct
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from privml import params as pm
from privml._exceptions import ConfigError
from privml.audit._findings import AuditReport, Severity
from privml.audit._model import audit_model
from privml.models import Dense, ModelSpec, param_spec_of, save_model

torch = pytest.importorskip("torch")
joblib = pytest.importorskip("joblib")

MARKER = "PWNED"  # relative: a payload writes it into whatever folder it runs in
SCRIPT = "pwn_script.py"  # what the runpy payloads run; it writes the marker


class _Call:
    """Pickles as ``func(*args)``; ``func`` may itself be a ``_Call`` (a chain of calls)."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args

    def __call__(self, *args: Any) -> None:  # pickle wants a callable; never called here
        raise AssertionError("a fixture was called while being built")


_WRITE = f"open({MARKER!r}, 'w').close()"
# name -> (payload, globals that must be named CRITICAL)
PAYLOADS: dict[str, tuple[Any, set[str]]] = {
    "os.system": (_Call(os.system, f"touch {MARKER}"), {"posix.system"}),
    "builtins.exec": (_Call(builtins.exec, _WRITE), {"builtins.exec"}),
    "importlib": (_Call(_Call(getattr, _Call(importlib.import_module, "os"), "system"),
                        f"touch {MARKER}"), {"importlib.import_module", "builtins.getattr"}),
    "marshal": (_Call(builtins.exec, _Call(marshal.loads, marshal.dumps(
        compile(_WRITE, "<payload>", "exec")))), {"marshal.loads", "builtins.exec"}),
    "functools.partial": (_Call(functools.partial(os.system, f"touch {MARKER}")),
                          {"functools.partial", "posix.system"}),
    "runpy.run_path": (_Call(runpy.run_path, SCRIPT), {"runpy.run_path"}),
    "runpy.run_module": (_Call(runpy.run_module, SCRIPT.removesuffix(".py")),
                         {"runpy.run_module"}),
    "subprocess": (_Call(subprocess.call, ["touch", MARKER]), {"subprocess.call"}),
}


def _write_forms(folder: Path, payload: Any) -> list[Path]:
    """The payload as a raw pickle (protocols 2 and 4), torch zip archives (.pt, .bin), a
    legacy torch file, a joblib file, and a pickle with no telling name."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SCRIPT).write_text(_WRITE + "\n")
    raw = pickle.dumps(payload, protocol=2)
    forms = {"evil.pkl": raw, "evil_p4.pickle": pickle.dumps(payload, protocol=4),
             "weights": raw}
    for name, data in forms.items():
        (folder / name).write_bytes(data)
    checkpoint = {"weight": torch.zeros(2), "extra": payload}
    torch.save(checkpoint, folder / "evil.pt")
    torch.save(checkpoint, folder / "pytorch_model.bin")
    torch.save(checkpoint, folder / "legacy.pth", _use_new_zipfile_serialization=False)
    joblib.dump({"w": [1.0], "extra": payload}, folder / "evil.joblib")
    return [folder / n for n in (*forms, "evil.pt", "pytorch_model.bin", "legacy.pth",
                                 "evil.joblib")]


def _critical_globals(report: AuditReport) -> set[str]:
    out = set()
    for f in report.findings:
        if f.id == "PMA-MODEL-001":
            assert f.severity is Severity.CRITICAL
            name = f.title.split()[2]  # protocol 2 writes Python 2 names; unpickling maps them
            out.add(name.replace("__builtin__.", "builtins.").replace("commands.", "subprocess."))
    return out


def _ids(report: AuditReport) -> set[str]:
    return {f.id for f in report.findings}


def _spawn(code: str, *args: str, cwd: Path) -> None:
    subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, check=False, timeout=120,
                   capture_output=True)


# ---- malicious pickles ------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_fixture_is_live(name: str, tmp_path: Path) -> None:
    """Control: the same bytes the audit sees do run their payload when unpickled."""
    control = tmp_path / "control"
    _write_forms(control, PAYLOADS[name][0])
    assert not (control / MARKER).exists()
    _spawn("import pickle, sys; pickle.loads(open(sys.argv[1], 'rb').read())",
           str(control / "evil.pkl"), cwd=control)
    assert (control / MARKER).exists(), f"{name}: the payload did not run"


def test_torch_archive_fixture_is_live(tmp_path: Path) -> None:
    _write_forms(tmp_path, PAYLOADS["os.system"][0])
    _spawn("import sys, torch; torch.load(sys.argv[1], weights_only=False)",
           str(tmp_path / "evil.pt"), cwd=tmp_path)
    assert (tmp_path / MARKER).exists()


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_payload_found_in_every_form_and_never_run(
        name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payload, expected = PAYLOADS[name]
    files = _write_forms(tmp_path, payload)
    monkeypatch.chdir(tmp_path)  # where the payload would drop its marker
    before = set(os.listdir(tmp_path))
    for path in files:
        report = audit_model(path)
        assert report.kind == "model"
        found = _critical_globals(report)
        assert expected <= found, f"{path.name}: {found}"
        assert report.worst() is Severity.CRITICAL
        assert all(f.target == str(path) for f in report.findings)
        assert "PMA-MODEL-003" not in _ids(report), report.to_dict()  # scanned to the end
    assert not (tmp_path / MARKER).exists()
    assert set(os.listdir(tmp_path)) == before  # the audit wrote nothing at all


def test_evidence_names_the_global(tmp_path: Path) -> None:
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(PAYLOADS["os.system"][0], protocol=2))
    (finding,) = audit_model(path).findings
    assert finding.id == "PMA-MODEL-001"
    assert "posix.system" in finding.title and "posix.system" in finding.evidence


def test_truncated_malicious_pickle_is_critical_and_unfinished(tmp_path: Path) -> None:
    data = pickle.dumps(PAYLOADS["os.system"][0], protocol=2)
    path = tmp_path / "cut.pkl"
    path.write_bytes(data[:-3])
    report = audit_model(path)
    assert _critical_globals(report) == {"posix.system"}
    assert "PMA-MODEL-003" in _ids(report)


def test_duplicate_zip_entry_cannot_hide_a_pickle(tmp_path: Path) -> None:
    clean, evil = tmp_path / "clean.pt", tmp_path / "dup.pt"
    torch.save({"w": torch.zeros(1)}, clean)
    with zipfile.ZipFile(clean) as src, zipfile.ZipFile(evil, "w") as dst, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name" is the point
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        pkl = next(i.filename for i in src.infolist() if i.filename.endswith("data.pkl"))
        dst.writestr(pkl, pickle.dumps(PAYLOADS["os.system"][0], protocol=2))
    assert audit_model(evil).worst() is Severity.CRITICAL


def test_pickle_named_safetensors_is_a_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps(PAYLOADS["os.system"][0], protocol=4))
    ids = _ids(audit_model(path))
    assert {"PMA-MODEL-001", "PMA-MODEL-006"} <= ids


# ---- what must pass ---------------------------------------------------------------------

def _net() -> Any:
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3),
                               torch.nn.Linear(3, 2))


@pytest.mark.parametrize("legacy", [False, True])
def test_plain_state_dict_passes(tmp_path: Path, legacy: bool) -> None:
    path = tmp_path / "state.pt"
    torch.save(_net().state_dict(), path, _use_new_zipfile_serialization=not legacy)
    report = audit_model(path)
    assert report.findings == [] and report.passed


def test_state_dict_of_every_dtype_and_parameters_passes(tmp_path: Path) -> None:
    tensors = {str(dt): torch.zeros(2, dtype=dt) for dt in (
        torch.float16, torch.bfloat16, torch.float64, torch.int8, torch.uint8, torch.int64,
        torch.bool, torch.complex64, torch.uint16, torch.float8_e4m3fn)}
    path = tmp_path / "mixed.bin"
    torch.save({**tensors, "p": torch.nn.Parameter(torch.ones(3))}, path)
    assert audit_model(path).findings == []


def test_privml_safetensors_pass(tmp_path: Path) -> None:
    spec = ModelSpec((4,), (Dense(3, name="d"),))
    params = {n: np.ones(s, np.float32) for n, s in param_spec_of(spec).items()}
    save_model(tmp_path / "model.safetensors", spec, params)
    (tmp_path / "update.params").write_bytes(pm.encode(params))  # sniffed, not named
    report = audit_model(tmp_path)
    assert report.findings == []
    assert len(report.passed) == 2 and report.metrics["files"] == 2


def test_pickled_module_is_flagged_but_not_critical(tmp_path: Path) -> None:
    path = tmp_path / "whole.pt"
    torch.save(_net(), path)
    report = audit_model(path)
    assert _ids(report) == {"PMA-MODEL-002"}
    (finding,) = report.findings
    assert finding.severity is Severity.MEDIUM
    assert "torch.nn.modules.linear.Linear" in finding.evidence


def test_optimizer_state_with_python_objects_is_flagged(tmp_path: Path) -> None:
    net = _net()
    sched = torch.optim.lr_scheduler.StepLR(torch.optim.SGD(net.parameters(), lr=0.1), 1)
    path = tmp_path / "ckpt.ckpt"
    torch.save({"model": net.state_dict(), "sched": sched}, path)
    assert _ids(audit_model(path)) == {"PMA-MODEL-002"}


# ---- numpy ------------------------------------------------------------------------------

def test_numeric_npy_and_npz_pass(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.arange(6, dtype=np.float32))
    np.savez(tmp_path / "b.npz", x=np.ones(3), y=np.zeros((2, 2), np.int8))
    assert audit_model(tmp_path).findings == []


def test_object_arrays_are_flagged(tmp_path: Path) -> None:
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}, None], dtype=object))
    np.savez(tmp_path / "obj.npz", x=np.ones(2), y=np.array([[1], "s"], dtype=object))
    report = audit_model(tmp_path)
    assert {f.target for f in report.findings if f.id == "PMA-MODEL-004"} == {
        str(tmp_path / "obj.npy"), str(tmp_path / "obj.npz")}
    assert report.worst() is Severity.MEDIUM


def test_object_array_with_payload_is_critical(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    arr = np.empty(1, dtype=object)
    arr[0] = PAYLOADS["os.system"][0]
    np.save(tmp_path / "evil.npy", arr, allow_pickle=True)
    monkeypatch.chdir(tmp_path)
    report = audit_model(tmp_path / "evil.npy")
    assert "posix.system" in _critical_globals(report)
    assert "PMA-MODEL-004" in _ids(report)
    assert not (tmp_path / MARKER).exists()


# ---- safetensors ------------------------------------------------------------------------

def _st(header: dict[str, Any], data: bytes, *, raw_header: bytes | None = None) -> bytes:
    text = raw_header if raw_header is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


_GOOD = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
         "b": {"dtype": "I8", "shape": [2, 2], "data_offsets": [8, 12]}}


@pytest.mark.parametrize(("blob", "why"), [
    (_st(_GOOD, bytes(12))[:-3], "data section"),
    (_st(_GOOD, bytes(15)), "data section"),
    (_st(_GOOD, bytes(12))[:30], "header length"),
    (struct.pack("<Q", 2**62) + b"{}", "header length"),
    (b"\x05\x00", "too short"),
    (_st({}, b"", raw_header=b'{"a": [1, 2'), "not JSON"),
    (_st({}, b"", raw_header=b"\xff\xfe{}"), "not JSON"),
    (_st({}, b"", raw_header=b'{"__metadata__": {}, "__metadata__": {}}'), "duplicate"),
    (_st({}, b"", raw_header=b"[1, 2]"), "not a JSON object"),
    (_st({**_GOOD, "a": {**_GOOD["a"], "dtype": "F128"}}, bytes(12)), "unknown dtype"),
    (_st({**_GOOD, "a": {**_GOOD["a"], "shape": [3]}}, bytes(12)), "needs 12 bytes"),
    (_st({**_GOOD, "a": {**_GOOD["a"], "shape": [-2]}}, bytes(12)), "shape"),
    (_st({**_GOOD, "b": {**_GOOD["b"], "data_offsets": [4, 8]}}, bytes(8)), "overlaps"),
    (_st({**_GOOD, "b": {**_GOOD["b"], "data_offsets": [12, 16]}}, bytes(16)), "gap"),
    (_st({**_GOOD, "b": {**_GOOD["b"], "data_offsets": [12, 8]}}, bytes(12)), "data_offsets"),
    (_st({**_GOOD, "b": {**_GOOD["b"], "code": "x"}}, bytes(12)), "exactly"),
    (_st({**_GOOD, "__metadata__": {"k": 1}}, bytes(12)), "__metadata__"),
])
def test_malformed_safetensors_is_flagged(tmp_path: Path, blob: bytes, why: str) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(blob)
    (finding,) = audit_model(path).findings
    assert finding.id == "PMA-MODEL-005" and finding.severity is Severity.HIGH
    assert why in finding.evidence


def test_well_formed_handmade_safetensors_passes(tmp_path: Path) -> None:
    path = tmp_path / "ok.safetensors"
    path.write_bytes(_st({**_GOOD, "__metadata__": {"k": "v"}}, bytes(12)))
    assert audit_model(path).findings == []


def test_truncated_privml_model_is_flagged(tmp_path: Path) -> None:
    blob = pm.encode({"w": np.ones((4, 4), np.float32)})
    path = tmp_path / "m.safetensors"
    path.write_bytes(blob[:-1])
    assert _ids(audit_model(path)) == {"PMA-MODEL-005"}


# ---- unknown files, folders, errors -----------------------------------------------------

def test_unknown_files_are_reported_not_passed(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("# a model\n")
    (tmp_path / "blob.bin").write_bytes(b"\x00GGUF" + bytes(40))
    (tmp_path / "proto0.pkl").write_bytes(pickle.dumps({"a": [1.5]}, protocol=0))
    report = audit_model(tmp_path)
    by_file = {Path(f.target).name: f for f in report.findings}
    assert set(by_file) == {"README.md", "blob.bin"}
    assert by_file["README.md"].severity is Severity.INFO
    assert by_file["blob.bin"].severity is Severity.LOW
    assert all(f.id == "PMA-MODEL-007" for f in report.findings)


def test_protocol0_pickle_is_scanned(tmp_path: Path) -> None:
    path = tmp_path / "old.pkl"
    path.write_bytes(pickle.dumps(PAYLOADS["os.system"][0], protocol=0))
    assert "posix.system" in _critical_globals(audit_model(path))


def test_truncated_protocol0_pickle_still_names_its_globals(tmp_path: Path) -> None:
    path = tmp_path / "old.pkl"
    path.write_bytes(pickle.dumps(PAYLOADS["os.system"][0], protocol=0)[:-2])
    report = audit_model(path)
    assert "posix.system" in _critical_globals(report)
    assert "PMA-MODEL-003" in _ids(report)


def test_unparsable_pickle_is_reported_even_with_quiet_logging(tmp_path: Path) -> None:
    path = tmp_path / "junk.pkl"
    path.write_bytes(b"\x80\x04\xff\xfe no opcode here")
    log = logging.getLogger("picklescan")
    log.setLevel(logging.CRITICAL)
    try:
        report = audit_model(path)
    finally:
        log.setLevel(logging.NOTSET)
    assert _ids(report) == {"PMA-MODEL-003"}


def test_garbage_pickle_entry_in_an_archive_is_unfinished(tmp_path: Path) -> None:
    path = tmp_path / "odd.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02this is no pickle")
        archive.writestr("archive/data/0", b"\x80\x02" + bytes(30))  # raw storage: skipped
    report = audit_model(path)
    assert [(f.id, "data.pkl" in f.evidence) for f in report.findings] == [
        ("PMA-MODEL-003", True)]


def test_folder_gives_one_report_with_each_files_findings(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "models"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "good.safetensors").write_bytes(pm.encode({"w": np.ones(3, np.float32)}))
    torch.save(_net().state_dict(), root / "sub" / "state.pt")
    torch.save(_net(), root / "sub" / "module.pt")
    (root / "sub" / "deeper" / "evil.pkl").write_bytes(
        pickle.dumps(PAYLOADS["builtins.exec"][0], protocol=4))
    (root / "broken.safetensors").write_bytes(b"\x10" + bytes(7) + b"{")
    monkeypatch.chdir(tmp_path)
    report = audit_model(root)
    assert report.target == str(root) and report.metrics["files"] == 5
    by_file: dict[str, set[str]] = {}
    for f in report.findings:
        by_file.setdefault(os.path.relpath(f.target, root), set()).add(f.id)
    assert by_file == {os.path.join("sub", "module.pt"): {"PMA-MODEL-002"},
                       os.path.join("sub", "deeper", "evil.pkl"): {"PMA-MODEL-001"},
                       "broken.safetensors": {"PMA-MODEL-005"}}
    assert report.worst() is Severity.CRITICAL
    assert not (tmp_path / MARKER).exists()


def test_symlinked_folder_is_reported_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "evil.pkl").write_bytes(pickle.dumps(PAYLOADS["os.system"][0]))
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    np.save(root / "plain.npy", np.ones(2))
    report = audit_model(root)
    (finding,) = report.findings
    assert (finding.id, finding.severity, finding.target) == (
        "PMA-MODEL-007", Severity.INFO, str(root / "link"))


def test_missing_path_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        audit_model(tmp_path / "nope.pt")


def test_empty_folder_is_reported(tmp_path: Path) -> None:
    report = audit_model(tmp_path)
    assert [f.id for f in report.findings] == ["PMA-MODEL-007"]
    assert report.metrics["files"] == 0
