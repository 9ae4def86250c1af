"""A validator for the part of JSON Schema that events.schema.json uses, standard library only.

The app checks the same schemas with Ajv (src/shared/protocol.ts); this one follows Ajv's
reading of each keyword, JavaScript's idea of a number included (1.0 is an integer, true is not a
number), and stops at the first error, as the app's reader does. A schema that uses a keyword this
module does not implement is refused when it is loaded (`SchemaUnsupported`), so the data files
cannot quietly ask for a check only one language makes.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Optional, Tuple

# The keywords implemented below; annotations ($comment, description, title) check nothing.
KEYWORDS = frozenset(
    (
        "type", "required", "properties", "items", "enum", "const", "minimum", "maximum",
        "pattern", "allOf", "if", "then", "else", "$ref", "$defs", "$comment", "description", "title",
    )
)

Error = Tuple[str, str]  # (instance path as a JSON pointer, Ajv-style message)
Check = Callable[[Any], Optional[Error]]


class SchemaUnsupported(ValueError):
    """The schema asks for something this validator does not implement."""


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_type(v: Any, t: str) -> bool:
    if t == "integer":
        return (isinstance(v, int) and not isinstance(v, bool)) or (
            isinstance(v, float) and math.isfinite(v) and v.is_integer()
        )
    if t == "number":
        return _is_number(v)
    if t == "string":
        return isinstance(v, str)
    if t == "object":
        return isinstance(v, dict)
    if t == "array":
        return isinstance(v, list)
    if t == "boolean":
        return isinstance(v, bool)
    if t == "null":
        return v is None
    raise SchemaUnsupported(f"unknown type {t!r}")


def json_equal(a: Any, b: Any) -> bool:
    """Equality as JSON (and Ajv) sees it: 1 == 1.0, but true is not 1."""
    if _is_number(a) and _is_number(b):
        return a == b
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return a is b
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return False


def _pointer(path: str, key: Any) -> str:
    return f"{path}/{str(key).replace('~', '~0').replace('/', '~1')}"


class Validator:
    """Checks values against the schemas of one document: its `$defs` and its `events` (a schema
    per event type); `$ref`s point into `$defs`."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.defs: dict[str, Any] = document.get("$defs", {})
        self._patterns: dict[str, re.Pattern[str]] = {}
        for name, s in self.defs.items():
            self._check_schema(s, f"#/$defs/{name}")
        for name, s in document.get("events", {}).items():
            self._check_schema(s, f"#/events/{name}")

    def _check_schema(self, schema: Any, where: str) -> None:
        """Refuses keywords and forms this validator does not implement, before any value is seen."""
        if not isinstance(schema, dict):
            raise SchemaUnsupported(f"{where}: a schema must be an object")
        for key, sub in schema.items():
            if key not in KEYWORDS:
                raise SchemaUnsupported(f"{where}: keyword {key!r} is not implemented")
            if key == "properties":
                for name, s in sub.items():
                    self._check_schema(s, f"{where}/{key}/{name}")
            elif key in ("items", "if", "then", "else"):
                self._check_schema(sub, f"{where}/{key}")
            elif key == "allOf":
                for i, s in enumerate(sub):
                    self._check_schema(s, f"{where}/allOf/{i}")
            elif key == "$ref":
                if not (isinstance(sub, str) and sub.startswith("#/$defs/") and sub[8:] in self.defs):
                    raise SchemaUnsupported(f"{where}: $ref {sub!r} is not one of #/$defs/NAME")
            elif key == "pattern":
                if not (isinstance(sub, str) and sub.startswith("^") and sub.endswith("$") and not sub.endswith("\\$")):
                    raise SchemaUnsupported(f"{where}: pattern {sub!r} must be anchored as ^...$")
                # JavaScript's `$` never matches before a final newline, Python's does: match the
                # inside in full instead.
                self._patterns[sub] = re.compile(sub[1:-1])
            elif key == "type":
                for t in sub if isinstance(sub, list) else [sub]:
                    _is_type(None, t)
        if ("then" in schema or "else" in schema) and "if" not in schema:
            raise SchemaUnsupported(f"{where}: then or else without if")

    def check(self, schema: dict[str, Any], value: Any, path: str = "") -> Error | None:
        """The first error of `value` against `schema`, or None when it is valid."""
        if "$ref" in schema:
            err = self.check(self.defs[schema["$ref"][8:]], value, path)
            if err:
                return err
        t = schema.get("type")
        if t is not None:
            types = t if isinstance(t, list) else [t]
            if not any(_is_type(value, x) for x in types):
                return path, f"must be {','.join(types)}"
        if "enum" in schema and not any(json_equal(value, x) for x in schema["enum"]):
            return path, "must be equal to one of the allowed values"
        if "const" in schema and not json_equal(value, schema["const"]):
            return path, "must be equal to constant"
        if _is_number(value):
            if "minimum" in schema and value < schema["minimum"]:
                return path, f"must be >= {schema['minimum']}"
            if "maximum" in schema and value > schema["maximum"]:
                return path, f"must be <= {schema['maximum']}"
        if isinstance(value, str) and "pattern" in schema:
            if not self._patterns[schema["pattern"]].fullmatch(value):
                return path, f'must match pattern "{schema["pattern"]}"'
        if isinstance(value, dict):
            for key in schema.get("required", ()):
                if key not in value:
                    return path, f"must have required property '{key}'"
            for key, sub in schema.get("properties", {}).items():
                if key in value:
                    err = self.check(sub, value[key], _pointer(path, key))
                    if err:
                        return err
        if isinstance(value, list) and "items" in schema:
            for i, item in enumerate(value):
                err = self.check(schema["items"], item, _pointer(path, i))
                if err:
                    return err
        for sub in schema.get("allOf", ()):
            err = self.check(sub, value, path)
            if err:
                return err
        if "if" in schema:
            branch = "then" if self.check(schema["if"], value, path) is None else "else"
            if branch in schema:
                err = self.check(schema[branch], value, path)
                if err:
                    return err
        return None
