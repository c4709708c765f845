"""Anonymization policies: what to look for and what to do with it, read from YAML.

A policy names the entity types to find, the regions whose formats count (phone numbers,
IDs), extra recognizers (a regex or a deny list), one operator per entity type plus a
default, and for tables a ``columns:`` map. It is read with ``yaml.safe_load`` only, and
checked whole before anything runs: an unknown key, operator, entity or region raises
:class:`ConfigError` naming the key and its line. See ``default_policy.yaml`` (the built-in
default) for every key, with comments.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml  # type: ignore[import-untyped,unused-ignore]

from privml._exceptions import ConfigError
from privml.anonymize.text._operators import (
    ENTITY_RE,
    Operator,
    Replace,
    operator_from_spec,
    operator_to_spec,
)

if TYPE_CHECKING:
    from privml.anonymize.text._custom import PatternRecognizer

__all__ = ["BUILTIN_ENTITIES", "COLUMN_MODES", "REGIONS", "Policy", "RecognizerSpec"]

BUILTIN_ENTITIES = (
    "EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "US_SSN", "IP", "MAC", "URL", "DATE",
    "DATE_OF_BIRTH", "PERSON", "LOCATION", "STREET_ADDRESS",
)
REGIONS = ("US", "GB", "DE", "FR")
COLUMN_MODES = ("text", "keep", "drop")  # or an entity name: the whole cell is that type
_TOP_KEYS = ("version", "entities", "regions", "threshold", "spacy_model", "recognizers",
             "operators", "columns")
_RECOGNIZER_KEYS = ("entity", "name", "regex", "deny_list", "score", "context", "ignore_case")

Path_ = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RecognizerSpec:
    """A user-defined recognizer: a regex, a deny list (whole words), or both."""

    entity: str
    regex: str | None = None
    deny_list: tuple[str, ...] = ()
    score: float = 0.85
    name: str | None = None
    context: tuple[str, ...] = ()
    ignore_case: bool = False

    def build(self) -> PatternRecognizer:
        """The analyzer's :class:`PatternRecognizer` for this spec."""
        from privml.anonymize.text._custom import PatternRecognizer

        return PatternRecognizer(self.entity, regex=self.regex, deny_list=self.deny_list,
                                 score=self.score, name=self.name, context=self.context,
                                 flags=re.IGNORECASE if self.ignore_case else 0)


@dataclass(frozen=True)
class Policy:
    """A checked policy. Build one with :meth:`from_yaml`, :meth:`from_dict` or
    :meth:`builtin`; ``entities=None`` means every entity type the analyzer knows."""

    operators: Mapping[str, Operator] = field(default_factory=dict)
    default: Operator = field(default_factory=Replace)
    entities: tuple[str, ...] | None = None
    regions: tuple[str, ...] = REGIONS
    threshold: float = 0.0
    spacy_model: str | None = None
    recognizers: tuple[RecognizerSpec, ...] = ()
    columns: Mapping[str, str] = field(default_factory=dict)

    def operator_for(self, entity: str) -> Operator:
        return self.operators.get(entity, self.default)

    @property
    def needs_key(self) -> bool:
        """Whether any operator this policy may use needs the anonymization key."""
        return self.default.needs_key or any(op.needs_key for op in self.operators.values())

    @property
    def known_entities(self) -> tuple[str, ...]:
        custom = [r.entity for r in self.recognizers if r.entity not in BUILTIN_ENTITIES]
        return BUILTIN_ENTITIES + tuple(dict.fromkeys(custom))

    def check_columns(self, table_columns: Iterable[str], *, table: str = "the table") -> None:
        """Raises if the ``columns:`` map names a column that ``table`` does not have."""
        have = set(table_columns)
        for name in self.columns:
            if name not in have:
                raise ConfigError(f"policy columns.{name}: {table} has no column {name!r} "
                                  f"(it has: {', '.join(sorted(have)) or 'none'})")

    # ---- reading and writing ----------------------------------------------------------------

    @classmethod
    def builtin(cls) -> Policy:
        """The built-in policy (``default_policy.yaml`` shipped with privml)."""
        text = resources.files(__package__).joinpath("default_policy.yaml").read_text("utf-8")
        return cls.from_yaml(text, source="default_policy.yaml")

    @classmethod
    def from_yaml(cls, path_or_text: Path | str, *, source: str | None = None) -> Policy:
        """A policy from a YAML file (a :class:`~pathlib.Path`, or a string naming an
        existing file) or from YAML text."""
        text, where = _read(path_or_text)
        where = source or where
        try:
            data = yaml.safe_load(text)
            lines = _lines(yaml.compose(text, Loader=yaml.SafeLoader))
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            at = f" line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{where}{at}: not valid YAML: {exc.problem}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{where}: not valid YAML: {exc}") from None
        except RecursionError:  # nested deeper than the YAML loader recurses
            raise ConfigError(f"{where}: not valid YAML: nested too deeply") from None
        if isinstance(data, str) and "\n" not in text.strip():
            raise ConfigError(f"{text}: no such policy file (nor a YAML mapping)")
        return cls.from_dict({} if data is None else data, source=where, _lines=lines)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "policy",
                  _lines: Mapping[Path_, int] | None = None) -> Policy:
        return _Reader(source, _lines or {}).policy(data)

    def to_dict(self) -> dict[str, Any]:
        ops: dict[str, Any] = {"default": operator_to_spec(self.default)}
        ops.update({k: operator_to_spec(v) for k, v in self.operators.items()})
        return {
            "version": 1,
            "entities": None if self.entities is None else list(self.entities),
            "regions": list(self.regions), "threshold": self.threshold,
            "spacy_model": self.spacy_model,
            "recognizers": [
                {"entity": r.entity, "name": r.name, "regex": r.regex,
                 "deny_list": list(r.deny_list), "score": r.score, "context": list(r.context),
                 "ignore_case": r.ignore_case}
                for r in self.recognizers],
            "operators": ops, "columns": dict(self.columns),
        }


def _read(path_or_text: Path | str) -> tuple[str, str]:
    if isinstance(path_or_text, str) and ("\n" in path_or_text
                                          or not Path(path_or_text).is_file()):
        return path_or_text, "policy"
    path = Path(path_or_text)
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the policy {path}: {exc}") from None


def _lines(node: yaml.Node | None, path: Path_ = (), out: dict[Path_, int] | None = None
           ) -> dict[Path_, int]:
    """The 1-based line of every key and list item, by its path in the document."""
    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            sub = (*path, str(k.value))
            out[sub] = k.start_mark.line + 1
            _lines(v, sub, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            sub = (*path, str(i))
            out[sub] = item.start_mark.line + 1
            _lines(item, sub, out)
    return out


class _Reader:
    """Checks a policy mapping, naming the offending key (and its YAML line) on error."""

    def __init__(self, source: str, lines: Mapping[Path_, int]) -> None:
        self.source = source
        self.lines = lines

    def where(self, path: Path_) -> str:
        for n in range(len(path), 0, -1):  # the nearest enclosing key that has a line
            if path[:n] in self.lines:
                return f"{self.source} line {self.lines[path[:n]]}: {'.'.join(path)}"
        return f"{self.source}: {'.'.join(path) or 'top level'}"

    def fail(self, path: Path_, message: str) -> ConfigError:
        return ConfigError(f"{self.where(path)}: {message}")

    def mapping(self, value: object, path: Path_, allowed: Iterable[str] | None = None
                ) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(path, "must be a mapping")
        if allowed is not None:
            allowed = tuple(allowed)
            for key in value:
                if key not in allowed:
                    raise self.fail((*path, str(key)),
                                    f"unknown key {key!r} (allowed: {', '.join(allowed)})")
        return value

    def strings(self, value: object, path: Path_) -> tuple[str, ...]:
        if isinstance(value, str) or not isinstance(value, list) \
                or not all(isinstance(v, str) for v in value):
            raise self.fail(path, "must be a list of strings")
        return tuple(value)

    def entity(self, value: object, path: Path_, known: tuple[str, ...]) -> str:
        if not isinstance(value, str) or value not in known:
            raise self.fail(path, f"unknown entity {value!r} (known: {', '.join(known)})")
        return value

    def policy(self, data: Mapping[str, Any]) -> Policy:
        data = self.mapping(data, (), _TOP_KEYS)
        if data.get("version", 1) != 1:
            raise self.fail(("version",), f"unsupported policy version {data['version']!r}")
        recognizers = tuple(self.recognizer(r, ("recognizers", str(i)))
                            for i, r in enumerate(data.get("recognizers") or []))
        if not isinstance(data.get("recognizers") or [], list):
            raise self.fail(("recognizers",), "must be a list")
        known = BUILTIN_ENTITIES + tuple(
            dict.fromkeys(r.entity for r in recognizers if r.entity not in BUILTIN_ENTITIES))
        entities = None
        if data.get("entities") is not None:
            names = self.strings(data["entities"], ("entities",))
            entities = tuple(self.entity(e, ("entities", str(i)), known)
                             for i, e in enumerate(names))
        regions: tuple[str, ...] = REGIONS
        if data.get("regions") is not None:
            regions = self.strings(data["regions"], ("regions",))
            import phonenumbers

            for i, r in enumerate(regions):
                if r not in phonenumbers.SUPPORTED_REGIONS:
                    raise self.fail(("regions", str(i)), f"unknown region {r!r} (an ISO 3166 "
                                    "code that libphonenumber knows, such as US or GB)")
        threshold = data.get("threshold", 0.0)
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) \
                or not 0.0 <= threshold <= 1.0:
            raise self.fail(("threshold",), f"must be a number in [0, 1], got {threshold!r}")
        spacy_model = data.get("spacy_model")
        if spacy_model is not None and not isinstance(spacy_model, str):
            raise self.fail(("spacy_model",), "must be a spaCy pipeline name")
        operators, default = self.operators(data.get("operators") or {}, known)
        return Policy(operators=operators, default=default, entities=entities,
                      regions=regions, threshold=float(threshold), spacy_model=spacy_model,
                      recognizers=recognizers,
                      columns=self.columns(data.get("columns") or {}, known))

    def recognizer(self, value: object, path: Path_) -> RecognizerSpec:
        spec = self.mapping(value, path, _RECOGNIZER_KEYS)
        entity = spec.get("entity")
        if not isinstance(entity, str) or not ENTITY_RE.fullmatch(entity):
            raise self.fail((*path, "entity"), "an entity name in capitals (A-Z, 0-9, _) "
                            f"is required, got {entity!r}")
        regex = spec.get("regex")
        if regex is not None:
            if not isinstance(regex, str):
                raise self.fail((*path, "regex"), "must be a string")
            try:
                re.compile(regex)
            # (a repeat count over 2**32 is OverflowError; deeply nested groups recurse)
            except (re.error, OverflowError, RecursionError) as exc:
                raise self.fail((*path, "regex"), f"not a valid regex: {exc}") from None
        deny = self.strings(spec.get("deny_list", []), (*path, "deny_list"))
        if regex is None and not deny:
            raise self.fail(path, "a recognizer needs a regex or a deny_list")
        score = spec.get("score", 0.85)
        if isinstance(score, bool) or not isinstance(score, int | float) \
                or not 0.0 < score <= 1.0:
            raise self.fail((*path, "score"), f"must be a number in (0, 1], got {score!r}")
        name = spec.get("name")
        if name is not None and not isinstance(name, str):
            raise self.fail((*path, "name"), "must be a string")
        ignore_case = spec.get("ignore_case", False)
        if not isinstance(ignore_case, bool):
            raise self.fail((*path, "ignore_case"), "must be true or false")
        return RecognizerSpec(entity, regex=regex, deny_list=deny, score=float(score),
                              name=name,
                              context=self.strings(spec.get("context", []), (*path, "context")),
                              ignore_case=ignore_case)

    def operators(self, value: object, known: tuple[str, ...]
                  ) -> tuple[dict[str, Operator], Operator]:
        specs = self.mapping(value, ("operators",))
        default: Operator = Replace()
        out: dict[str, Operator] = {}
        for key, spec in specs.items():
            path = ("operators", str(key))
            if key != "default":
                self.entity(key, path, (*known, "default"))
            op = operator_from_spec(spec, path, self.where)
            if key == "default":
                default = op
            else:
                out[str(key)] = op
        return out, default

    def columns(self, value: object, known: tuple[str, ...]) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, mode in self.mapping(value, ("columns",)).items():
            path = ("columns", str(name))
            if mode not in COLUMN_MODES and mode not in known:
                raise self.fail(path, f"column {name!r}: unknown treatment {mode!r} (one of "
                                f"{', '.join(COLUMN_MODES)}, or an entity: {', '.join(known)})")
            out[str(name)] = str(mode)
        return out
