"""Google's own definition of the Compute v1 REST API: routes and a strict JSON check against its schemas.

The document is the one google-api-python-client ships; nothing here is our reading of the API. A request or
response that has a field the schema does not declare, a value of the wrong type or format, a value outside an
enum or pattern, or lacks a field the schema marks required for that method is a problem the test reports.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SYSTEM_PARAMETERS = {"$alt"}
"""Query parameters of Google's API infrastructure that discovery documents do not list (the REST clients send
``$alt=json;enum-encoding=int``)."""


@functools.lru_cache(maxsize=1)
def document() -> dict[str, Any]:
    import googleapiclient

    path = Path(googleapiclient.__file__).parent / "discovery_cache" / "documents" / "compute.v1.json"
    return json.loads(path.read_text())


@dataclass(frozen=True)
class Method:
    """One REST method of the document: its id, HTTP verb, path pattern and declared parameters."""

    id: str
    http: str
    pattern: re.Pattern[str]
    spec: dict[str, Any]

    @property
    def request(self) -> str | None:
        return (self.spec.get("request") or {}).get("$ref")

    @property
    def response(self) -> str | None:
        return (self.spec.get("response") or {}).get("$ref")


def _methods(resources: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for resource in resources.values():
        found.extend(resource.get("methods", {}).values())
        found.extend(_methods(resource.get("resources", {})))
    return found


@functools.lru_cache(maxsize=1)
def methods() -> tuple[Method, ...]:
    doc = document()
    made = []
    for spec in _methods(doc["resources"]):
        path = doc["basePath"] + spec.get("flatPath", spec["path"])
        regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(path))
        made.append(Method(spec["id"], spec["httpMethod"], re.compile(f"^{regex}$"), spec))
    # a literal segment wins over a parameter in the same place (".../images/family/{family}")
    made.sort(key=lambda m: m.pattern.pattern.count("(?P<"))
    return tuple(made)


def route(http: str, path: str) -> tuple[Method, dict[str, str]] | None:
    """The method a request is for, with its path parameters; None if the document has no such route."""
    for method in methods():
        if method.http == http:
            match = method.pattern.match(path)
            if match:
                return method, match.groupdict()
    return None


def check_parameters(method: Method, path: dict[str, str], query: dict[str, list[str]]) -> list[str]:
    """Problems with the path and query parameters of a request, by the method's and the document's lists."""
    declared = {**document()["parameters"], **method.spec.get("parameters", {})}
    problems = []
    for name, spec in method.spec.get("parameters", {}).items():
        if spec.get("required") and name not in path and name not in query:
            problems.append(f"{method.id}: required parameter {name!r} missing")
    for name, value in path.items():
        problems += check_value(value, declared[name], f"{method.id} path {name}", None)
    for name, values in query.items():
        if name in SYSTEM_PARAMETERS:
            continue
        if name not in declared:
            problems.append(f"{method.id}: unknown query parameter {name!r}")
            continue
        spec = declared[name]
        if len(values) > 1 and not spec.get("repeated"):
            problems.append(f"{method.id}: query parameter {name!r} given {len(values)} times")
        for value in values:
            problems += check_value(_query_value(value, spec), spec, f"{method.id} query {name}", None)
    return problems


def _query_value(value: str, spec: dict[str, Any]) -> Any:
    if spec.get("type") == "integer" and re.fullmatch(r"-?\d+", value):
        return int(value)
    if spec.get("type") == "boolean" and value in ("true", "false"):
        return value == "true"
    return value


def check_body(value: Any, schema: str, method: str | None, where: str) -> list[str]:
    """Problems with a JSON body against schema ``schema``; ``method`` selects the required-field annotations."""
    return check_value(value, {"$ref": schema}, where, method)


INTEGER = {"int32": (-(2**31), 2**31 - 1), "uint32": (0, 2**32 - 1)}
STRING_INTEGER = {"int64": (-(2**63), 2**63 - 1), "uint64": (0, 2**64 - 1)}


def check_value(value: Any, spec: dict[str, Any], where: str, method: str | None) -> list[str]:
    schemas = document()["schemas"]
    if "$ref" in spec:
        spec = schemas[spec["$ref"]]
    kind = spec.get("type")
    problems: list[str] = []
    if kind == "object":
        if not isinstance(value, dict):
            return [f"{where}: expected an object, got {type(value).__name__} {value!r}"]
        properties = spec.get("properties", {})
        extra = spec.get("additionalProperties")
        for key, item in value.items():
            if key in properties:
                problems += check_value(item, properties[key], f"{where}.{key}", method)
            elif extra is not None:
                problems += check_value(item, extra, f"{where}[{key!r}]", method)
            else:
                problems.append(f"{where}: unknown field {key!r} (the schema {spec.get('id', '')} has no such field)")
        for key, prop in properties.items():
            if method and method in (prop.get("annotations") or {}).get("required", []) and key not in value:
                problems.append(f"{where}: required field {key!r} missing for {method}")
        return problems
    if kind == "array":
        if not isinstance(value, list):
            return [f"{where}: expected an array, got {type(value).__name__} {value!r}"]
        for i, item in enumerate(value):
            problems += check_value(item, spec["items"], f"{where}[{i}]", method)
        return problems
    if kind == "boolean":
        return [] if isinstance(value, bool) else [f"{where}: expected a boolean, got {value!r}"]
    if kind == "integer":
        low, high = INTEGER.get(spec.get("format", "int32"), INTEGER["int32"])
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            return [f"{where}: expected an {spec.get('format', 'int32')} integer, got {value!r}"]
        low, high = int(spec.get("minimum", low)), int(spec.get("maximum", high))
        return [] if low <= value <= high else [f"{where}: {value} is outside {low}..{high}"]
    if kind == "number":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return [] if ok else [f"{where}: expected a number, got {value!r}"]
    if kind == "string":
        if not isinstance(value, str):
            return [f"{where}: expected a string, got {type(value).__name__} {value!r}"]
        fmt = spec.get("format")
        if fmt in STRING_INTEGER:
            low, high = STRING_INTEGER[fmt]
            if not re.fullmatch(r"-?\d+", value) or not low <= int(value) <= high:
                problems.append(f"{where}: expected an {fmt} as a decimal string, got {value!r}")
        if fmt == "byte":
            try:
                base64.b64decode(value.replace("-", "+").replace("_", "/") + "==", validate=False)
            except binascii.Error:
                problems.append(f"{where}: expected base64 bytes, got {value!r}")
        if "enum" in spec and value not in spec["enum"]:
            problems.append(f"{where}: {value!r} is not one of {spec['enum']}")
        if "pattern" in spec and not re.fullmatch(spec["pattern"], value):
            problems.append(f"{where}: {value!r} does not match {spec['pattern']!r}")
        return problems
    if kind == "any" or kind is None:
        return []
    return [f"{where}: schema type {kind!r} not understood by the checker"]
