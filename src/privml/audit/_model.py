"""``privml audit model PATH``: model files checked for code that would run on load.

Theory of operation: nothing is ever loaded. A file's kind is sniffed from its first bytes,
never its name: zip (torch ``.pt``/``.bin``, ``.npz``), numpy ``.npy``, pickle (``0x80`` +
protocol; legacy torch files too), or safetensors (an 8-byte length that fits, then ``{``).
Every pickle stream — raw, legacy torch, a zip's ``*.pkl`` and other pickle-looking entries
(not torch's raw ``data/N`` storages), a numpy object array — goes to ``picklescan``, whose
disassembler lists the globals it would import without importing or calling anything. The
policy is strict, stricter than picklescan's ``--strict`` (which allows numpy arrays): a
global picklescan or the lists below deem dangerous is CRITICAL; any other global outside
what a plain tensor state dict needs (``_rebuild_tensor_v2``, ``torch.*Storage``,
``OrderedDict``...) is a finding, as it means Python objects whose classes run on load.
Safetensors is read to the end of its header only: offsets must tile the data exactly,
dtypes be known, sizes match shapes. A folder's files (symlinked folders are reported, not
followed) make one report. A scan that could not finish is a finding: no unchecked pass.

    id             severity   finding
    PMA-MODEL-001  critical   a pickle imports a dangerous global (os.system, exec, importlib...)
    PMA-MODEL-002  medium     a pickle holds objects beyond a tensor state dict (nn.Module...)
    PMA-MODEL-003  high       a pickle, archive or file could not be fully read or scanned
    PMA-MODEL-004  medium     a numpy array of Python objects (unpickled by np.load)
    PMA-MODEL-005  high       a malformed safetensors file (header, dtype, offsets, length)
    PMA-MODEL-006  medium     the content is not what the name claims (a pickle as .safetensors)
    PMA-MODEL-007  low/info   not a model format this audit knows, so not scanned
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import re
import stat
import struct
import zipfile
import zlib
from pathlib import Path
from typing import IO, Any

import numpy as np

from privml._exceptions import ConfigError
from privml.audit._findings import AuditReport, Finding, Severity

__all__ = ["audit_model"]


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


#: All a plain tensor state dict (any dtype, Parameters included) makes a pickle import.
_TENSOR_GLOBALS = _words(
    """collections.OrderedDict torch._utils._rebuild_tensor_v2 torch._utils._rebuild_tensor_v3
    torch._utils._rebuild_parameter torch.storage.UntypedStorage torch.float8_e4m3fn
    torch.float8_e5m2 torch.float8_e4m3fnuz torch.float8_e5m2fnuz torch.float8_e8m0fnu
    torch.uint16 torch.uint32 torch.uint64""") | {f"torch.{s}Storage" for s in _words(
        """Long Float Half Double BFloat16 Bool Char Short Int Byte ComplexFloat ComplexDouble
        QUInt8 QInt8 QInt32 QUInt4x2 QUInt2x4""")}
#: Dangerous on top of picklescan's own list: whole module trees, then single globals.
_CRITICAL_MODULES = _words(
    """importlib marshal code codeop os posix nt subprocess _posixsubprocess runpy sys shutil
    socket ctypes pty multiprocessing zipimport pickle _pickle dill cloudpickle webbrowser""")
_CRITICAL_GLOBALS = {f"{b}.{n}" for b in ("builtins", "__builtin__") for n in _words(
    """__import__ eval exec compile getattr setattr delattr globals locals vars open input
    breakpoint apply""")} | _words(
    """types.CodeType types.FunctionType types.LambdaType types.MethodType types.ModuleType
    functools.partial functools.reduce operator.attrgetter operator.itemgetter
    operator.methodcaller operator.call _operator.attrgetter _operator.itemgetter
    _operator.methodcaller _operator.call numpy.load torch.serialization.load joblib.load""")
_PICKLE_EXTS = frozenset({".pkl", ".pickle", ".pt", ".pth", ".bin", ".joblib", ".ckpt"})
#: Names that promise a format which never runs code; anything else under them is a finding.
_CLAIMS = {".safetensors": "safetensors", ".npy": "numpy", ".npz": "zip"}
_LEGACY_TORCH = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19."  # torch's magic-number pickle
_TORCH_STORAGE = re.compile(r"(^|/)data/\d+$")  # raw tensor bytes in a torch zip: never unpickled
_ST_HEADER_LIMIT = 100 * 1024 * 1024  # safetensors' own header bound
_ST_BITS = {"BOOL": 8, "U8": 8, "I8": 8, "F8_E4M3": 8, "F8_E5M2": 8, "F8_E8M0": 8,
            "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
            "I32": 32, "U32": 32, "F32": 32, "I64": 64, "U64": 64, "F64": 64, "C64": 64,
            "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}
_SCANS = itertools.count()
#: A corrupt, truncated or encrypted archive, or one with an unknown compression method.
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, EOFError, RuntimeError, NotImplementedError)
_FIX_CODE = ("Do not load this file (torch.load, pickle.load, joblib.load would run the code). "
             "Get the weights as safetensors from a source you trust, or retrain.")
_FIX_OBJECTS = ("Save only tensors: safetensors (privml.params.encode) or "
                "torch.save(model.state_dict()), and load with torch.load(weights_only=True).")
_FIX_UNREAD = "Treat the file as untrusted and do not load it; re-export it from its source."


def _picklescan(stream: IO[bytes], *, legacy_torch: bool = False,
                ) -> tuple[list[tuple[str, bool]], list[str]]:
    """The globals picklescan finds in ``stream`` (name, critical?) and why it stopped early."""
    from picklescan import scanner  # type: ignore[import-untyped]  # nosec B403  # reads opcodes, never unpickles

    token, notes = f"<privml-scan-{next(_SCANS)}>", list[str]()

    def keep(record: logging.LogRecord) -> bool:  # "could not parse" is only ever logged
        msg = record.getMessage()
        if token in msg and " FOUND" not in msg:  # FOUND lines repeat the globals
            notes.append(msg.replace(token, "the stream"))
        return False

    log, capture = logging.getLogger("picklescan"), logging.Handler(logging.WARNING)
    capture.addFilter(keep)
    log.addHandler(capture)
    level = log.level
    log.setLevel(logging.WARNING)  # a quiet app's logging setup must not hide a broken parse
    try:  # strict=False: picklescan's own "dangerous" verdict is kept apart from our allow-list
        scan = scanner.scan_pytorch if legacy_torch else scanner.scan_pickle_bytes
        result = scan(stream, token)
    except Exception as exc:  # a scanner crash must end in a finding, never a pass
        return [], [f"the scanner stopped: {type(exc).__name__}: {exc}"]
    finally:
        log.removeHandler(capture)
        log.setLevel(level)
    if result.scan_err and not notes:
        notes.append("the stream is malformed past the globals shown")
    found = {(str(g.module), str(g.name), g.safety.value == "dangerous") for g in result.globals}
    return sorted((f"{m}.{n}", bad or _is_critical(m, n)) for m, n, bad in found), notes


def _is_critical(module: str, name: str) -> bool:
    return (f"{module}.{name}" in _CRITICAL_GLOBALS or module.partition(".")[0] in _CRITICAL_MODULES
            or "unknown" in (module, name))  # picklescan's mark for an unresolvable global


class _Target:
    """One file's findings go to the shared report, all with this file as target."""

    def __init__(self, report: AuditReport, target: str) -> None:
        self.report, self.target = report, target

    def find(self, id_: str, severity: Severity, title: str, evidence: str, fix: str) -> None:
        self.report.add(Finding(id_, severity, title, evidence, fix, target=self.target))

    def ok(self, check: str) -> None:
        self.report.ok(f"{self.target}: {check}")

    def pickle(self, stream: IO[bytes], where: str, *, legacy_torch: bool = False,
               unmarked: bool = False) -> bool:
        """Judge a pickle stream; an ``unmarked`` one (no 0x80: protocol 0/1, or not a
        pickle at all) that yields neither globals nor a clean parse is left alone (False)."""
        found, notes = _picklescan(stream, legacy_torch=legacy_torch)
        if unmarked and notes and not found:
            return False
        for name in (name for name, critical in found if critical):
            self.find("PMA-MODEL-001", Severity.CRITICAL, f"pickle calls {name} when loaded",
                      f"{where} imports the global {name}", _FIX_CODE)
        objects = [n for n, critical in found if not critical and n not in _TENSOR_GLOBALS]
        if objects:
            self.find("PMA-MODEL-002", Severity.MEDIUM, "pickle holds more than tensors",
                      f"{where} imports {', '.join(objects)}", _FIX_OBJECTS)
        if notes:
            self.find("PMA-MODEL-003", Severity.HIGH, "pickle could not be fully scanned",
                      f"{where}: {'; '.join(notes[:3])}", _FIX_UNREAD)
        elif all(n in _TENSOR_GLOBALS and not critical for n, critical in found):
            self.ok(f"{where} imports only tensor-rebuilding globals")
        return True

    def npy(self, stream: IO[bytes], where: str) -> None:
        fmt = np.lib.format  # header only: a literal dict, read with ast.literal_eval
        try:
            major = fmt.read_magic(stream)[0]
            read = fmt.read_array_header_1_0 if major == 1 else fmt.read_array_header_2_0
            dtype = read(stream)[2]
        except (ValueError, OSError, SyntaxError) as exc:
            self.find("PMA-MODEL-003", Severity.HIGH, "numpy header could not be read",
                      f"{where}: {exc}", _FIX_UNREAD)
            return
        if dtype.hasobject:
            self.find("PMA-MODEL-004", Severity.MEDIUM, "numpy array of Python objects",
                      f"{where} has dtype {dtype}; np.load(allow_pickle=True) unpickles it",
                      "Store numeric arrays only (np.save(allow_pickle=False)) or safetensors.")
            self.pickle(stream, where)
        else:
            self.ok(f"{where} is a numeric array ({dtype})")

    def zip(self, stream: IO[bytes]) -> None:
        # picklescan's zip reader skips CRC and name checks, as torch's own reader does
        from picklescan.relaxed_zipfile import RelaxedZipFile  # type: ignore[import-untyped]  # nosec B403  # a zip reader; nothing is unpickled

        try:
            with RelaxedZipFile(stream) as archive:  # every entry, duplicate names included
                infos = [i for i in archive.infolist() if not i.is_dir()]
                if not any([self._member(archive, i) for i in infos]):  # scan them all
                    self.ok(f"archive of {len(infos)} entries holds no pickle or numpy array")
        except _ZIP_ERRORS as exc:
            self.find("PMA-MODEL-003", Severity.HIGH, "archive could not be read",
                      f"{type(exc).__name__}: {exc}", _FIX_UNREAD)

    def _member(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bool:
        where = f"member {info.filename!r}"
        try:
            with archive.open(info) as member:
                head = member.read(8)
                member.seek(0)
                if head.startswith(b"\x93NUMPY"):
                    self.npy(member, where)
                elif info.filename.endswith((".pkl", ".pickle")) or (  # what torch unpickles
                        _sniff(head, 0) == "pickle" and not _TORCH_STORAGE.search(info.filename)):
                    self.pickle(member, where)
                else:
                    return False
        except _ZIP_ERRORS as exc:
            self.find("PMA-MODEL-003", Severity.HIGH, "archive member could not be read",
                      f"{where}: {type(exc).__name__}: {exc}", _FIX_UNREAD)
        return True


def _sniff(head: bytes, size: int) -> str | None:
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head.startswith(b"\x93NUMPY"):
        return "numpy"
    if len(head) >= 2 and head[0] == 0x80 and head[1] <= 5:  # PROTO opcode, protocol 0-5
        return "pickle"
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") + 8 <= size:
        return "safetensors"
    return None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({k for k, _ in pairs}) != len(pairs):  # parsers differ on which one wins
        raise ValueError(f"duplicate key among {sorted(k for k, _ in pairs)[:5]}")
    return dict(pairs)


def _naturals(xs: Any) -> bool:
    return isinstance(xs, list) and all(type(x) is int and x >= 0 for x in xs)


def _tensor_problem(info: Any) -> str | None:
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        return "entry must hold exactly dtype, shape and data_offsets"
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in _ST_BITS:
        return f"unknown dtype {dtype!r}"
    if not _naturals(shape):
        return f"shape {shape!r} is not a list of sizes"
    if not _naturals(offsets) or len(offsets) != 2 or offsets[0] > offsets[1]:
        return f"data_offsets {offsets!r} is not [begin, end]"
    bits = math.prod(shape) * _ST_BITS[dtype]
    if bits % 8 or bits // 8 != offsets[1] - offsets[0]:
        return f"{dtype}{shape} needs {bits / 8:g} bytes, offsets give {offsets[1] - offsets[0]}"
    return None


def _safetensors_problems(stream: IO[bytes], size: int) -> list[str]:
    if size < 8:
        return [f"{size} bytes: too short for the 8-byte header length"]
    (n,) = struct.unpack("<Q", stream.read(8))
    if n > _ST_HEADER_LIMIT or 8 + n > size:
        return [f"header length {n} does not fit a {size}-byte file"]
    try:
        header = json.loads(stream.read(n), object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return [f"header is not JSON: {exc}"]
    if not isinstance(header, dict):
        return ["header is not a JSON object"]
    meta = header.pop("__metadata__", {})
    problems = [] if isinstance(meta, dict) and all(
        isinstance(v, str) for v in meta.values()) else ["__metadata__ is not a map of strings"]
    problems += [f"tensor {k!r}: {why}" for k, v in header.items() if (why := _tensor_problem(v))]
    if problems:
        return problems
    at = 0
    for begin, end, name in sorted((*v["data_offsets"], k) for k, v in header.items()):
        if begin != at:
            gap = "overlaps the one before" if begin < at else f"leaves a gap at {at}"
            problems.append(f"tensor {name!r} at byte {begin} {gap}")
        at = max(at, end)
    if at != size - 8 - n:
        problems.append(f"tensors end at byte {at} of a {size - 8 - n}-byte data section")
    return problems


def _scan_open(stream: IO[bytes], size: int, ext: str, tgt: _Target) -> None:
    head = stream.read(16)
    stream.seek(0)
    kind = _sniff(head, size)
    claim = _CLAIMS.get(ext)
    if claim is not None and kind is not None and kind != claim:
        tgt.find("PMA-MODEL-006", Severity.MEDIUM, f"a {ext} file that holds {kind} data",
                 f"named {ext}, but its first bytes are {head[:8]!r} ({kind})",
                 "Rename it after what it holds; never trust a model file's name.")
    kind = kind or ("safetensors" if claim == "safetensors" else None)  # a broken one
    if kind == "safetensors" and (problems := _safetensors_problems(stream, size)):
        tgt.find("PMA-MODEL-005", Severity.HIGH, "malformed safetensors file",
                 "; ".join(problems[:5]), "Re-export it from its source; loaders may refuse "
                 "it or read tensors out of bounds.")
    elif kind == "safetensors":
        tgt.ok("safetensors header consistent with the file")
    elif kind == "zip":
        tgt.zip(stream)
    elif kind == "numpy":
        tgt.npy(stream, "the file")
    elif kind == "pickle":
        tgt.pickle(stream, "the file", legacy_torch=head.startswith(_LEGACY_TORCH))
    elif not (ext in _PICKLE_EXTS and tgt.pickle(stream, "the file", unmarked=True)):
        tgt.find("PMA-MODEL-007", Severity.LOW if ext in _PICKLE_EXTS else Severity.INFO,
                 "not a model format this audit knows; not scanned",
                 f"first bytes {head[:8]!r}: no safetensors, pickle, zip or numpy mark",
                 "Convert the model to safetensors, or check by hand what reads this file.")


def _scan_file(path: Path, report: AuditReport) -> None:
    tgt = _Target(report, str(path))
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            tgt.find("PMA-MODEL-007", Severity.INFO, "not a regular file; not scanned",
                     f"mode {stat.filemode(st.st_mode)}", "Scan the file it stands for.")
            return
        with path.open("rb") as stream:
            _scan_open(stream, st.st_size, path.suffix.lower(), tgt)
    except OSError as exc:
        tgt.find("PMA-MODEL-003", Severity.HIGH, "file could not be read",
                 f"{exc.strerror or exc}", "Make the file readable and audit it again.")


def audit_model(path: str | os.PathLike[str]) -> AuditReport:
    """Scan the model file, or every file under the folder, at ``path`` without loading any.

    Raises :class:`~privml.ConfigError` when ``path`` is not an existing file or folder.
    """
    root = Path(os.fspath(path))
    if not (root.is_file() or root.is_dir()):
        why = "is neither a file nor a folder" if root.exists() else "does not exist"
        raise ConfigError(f"model path {str(root)!r} {why}")
    report = AuditReport(kind="model", target=str(root))
    files = [root] if root.is_file() else []
    for base, dirs, names in os.walk(root) if root.is_dir() else ():
        dirs.sort()  # os.walk lists symlinked folders but never enters them: say so
        for link in (Path(base, d) for d in dirs if Path(base, d).is_symlink()):
            _Target(report, str(link)).find(
                "PMA-MODEL-007", Severity.INFO, "symlinked folder not followed",
                f"points to {os.readlink(link)!r}", "Audit the folder it points to on its own.")
        files += [Path(base, n) for n in sorted(names)]
    for file in files:
        _scan_file(file, report)
    if not files:
        _Target(report, str(root)).find("PMA-MODEL-007", Severity.INFO, "no files to scan",
                                        "the folder holds no files", "Give the model's folder.")
    report.metrics["files"] = len(files)
    return report
