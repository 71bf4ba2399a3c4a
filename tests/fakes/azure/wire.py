"""The Azure SDK's own models as the definition of ARM's wire format: strict checks of request and response bodies.

The azure-mgmt-* packages generate one model class per ARM schema (``rest_field`` names are the wire
names, annotations the types, ``visibility`` what a request may carry). ``problems`` walks a JSON body against
such a class and lists every field the schema does not know (e.g. ``admin_username`` where the wire says
``adminUsername``: what a plain dict passed where a model is expected produces), every mistyped value, every
required field missing (annotated without ``Optional``, as the SDK's constructors require it), every value outside
the SDK's enum class where the annotation names one (``Union[str, CachingTypes]``: closed here, as the services
refuse an unknown ``caching``), and in a request every read-only field (visibility ``["read"]`` only).

Stricter than ARM on purpose: real ARM ignores some unknown fields and many services ignore read-only ones in a PUT
(Microsoft's own traffic validator, oav, flags them: READONLY_PROPERTY_NOT_ALLOWED_IN_REQUEST); a client that sends
either has mistaken the schema.

The azure-mgmt-* packages ship one model set each; each resource type's operations send one api-version
(:func:`type_versions`), so the models are those of that api-version and a request at another is refused.
"""

from __future__ import annotations

import base64
import datetime
import enum
import functools
import importlib
import re
import types
import typing
from pathlib import Path
from typing import Any

PACKAGES = {
    "Microsoft.Compute": "azure.mgmt.compute",
    "Microsoft.Network": "azure.mgmt.network",
    "Microsoft.Resources": "azure.mgmt.resource.resources",
}


@functools.cache
def api_versions(namespace: str) -> frozenset[str]:
    """The api-version values the installed SDK package for ``namespace`` sends (its models are of those)."""
    package = importlib.import_module(PACKAGES[namespace])
    text = "".join(p.read_text() for p in (Path(package.__file__).parent / "operations").glob("*.py"))
    return frozenset(re.findall(r'"api-version", "([0-9]{4}-[0-9]{2}-[0-9]{2}(?:-preview)?)"', text))


@functools.cache
def type_versions(namespace: str) -> dict[str, frozenset[str]]:
    """Resource type path (``microsoft.compute/virtualmachines``, lowercase) -> the api-versions the installed SDK's
    operations on it send: read from each generated request builder's URL template and api-version default."""
    package = importlib.import_module(PACKAGES[namespace])
    text = "".join(p.read_text() for p in (Path(package.__file__).parent / "operations").glob("*.py"))
    found: dict[str, set[str]] = {}
    for builder in re.split(r"\ndef build_", text)[1:]:
        version = re.search(r'"api-version", "([0-9]{4}-[0-9]{2}-[0-9]{2}(?:-preview)?)"', builder)
        url = re.search(r'_url = "[^"]*/providers/(Microsoft\.[A-Za-z]+)/([^"]*)"', builder)
        if version and url:
            kinds = [s for s in url[2].split("/") if s and not s.startswith("{")]
            found.setdefault(f"{url[1]}/{'/'.join(kinds)}".lower(), set()).add(version[1])
    return {k: frozenset(v) for k, v in found.items()}


def model(namespace: str, name: str) -> type:
    return getattr(importlib.import_module(PACKAGES[namespace] + ".models"), name)


@functools.cache
def fields(cls: type) -> dict[str, tuple[Any, list[str] | None]]:
    """Wire name -> (type annotation, visibility) of a generated model class, inherited fields included."""
    module = importlib.import_module(cls.__module__)
    package = importlib.import_module(cls.__module__.rsplit(".", 1)[0])
    found: dict[str, tuple[Any, list[str] | None]] = {}
    for klass in reversed(cls.__mro__):
        if not hasattr(klass, "__annotations__") or klass.__module__ != cls.__module__:
            continue
        hints = typing.get_type_hints(klass, globalns=vars(module), localns={"_models": package})
        for attr, value in vars(klass).items():
            if attr.startswith("_") or not hasattr(value, "_rest_name_input"):
                continue
            found[value._rest_name_input or attr] = (hints.get(attr, Any), value._visibility)
    return found


@functools.cache
def source(module: str) -> str:
    """The text of a generated models module (read once: ``inspect.getsource`` parses the whole of it per class)."""
    return Path(str(importlib.import_module(module).__file__)).read_text()


def class_source(cls: type) -> str:
    """The text of one generated model class: from its ``class`` line to the next top-level statement."""
    text = source(cls.__module__)
    start = text.index(f"\nclass {cls.__name__}(")
    end = re.compile(r"\n(?=\S)").search(text, start + 1)
    return text[start : end.start() if end else len(text)]


@functools.cache
def open_enums(cls: type) -> frozenset[str]:
    """Wire names of ``cls``'s enum fields the SDK documents as not closed: its docstring says "The enum data type is
    currently deprecated" (``HardwareProfile.vmSize``: Azure has sizes its VirtualMachineSizeTypes never listed)."""
    found = set()
    for klass in cls.__mro__:
        if klass.__module__ != cls.__module__:
            continue
        pattern = r'\n    (\w+): [^\n]*= rest_field\([^)]*\)\n    """(.*?)"""'
        for attr, doc in re.findall(pattern, class_source(klass), re.S):
            if "enum data type is currently deprecated" in " ".join(doc.split()):
                rest = vars(klass).get(attr)
                found.add(getattr(rest, "_rest_name_input", None) or attr)
    return frozenset(found)


def optional(annotation: Any) -> bool:
    """Whether the SDK annotates a field as ``Optional`` (else its constructor requires it: a required field)."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    return union and type(None) in typing.get_args(annotation)


def read_only(visibility: list[str] | None) -> bool:
    """Whether a field's visibility is ``["read"]`` alone: the service sets it, a request never carries it."""
    return visibility == ["read"]


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def problems(value: Any, annotation: Any, path: str = "", *, request: bool = True) -> list[str]:
    """Everything in ``value`` that does not match ``annotation`` (a model class or a typing form)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    where = path or "body"
    if annotation is Any or annotation is object:
        return []
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return []
        options = [a for a in args if a is not type(None)]
        closed = [a for a in options if isinstance(a, type) and issubclass(a, enum.Enum)]
        if closed and str in options:  # the SDK's "str or SomeEnum": the enum's known values are the valid ones
            return problems(value, closed[0], path, request=request)
        found = [problems(value, a, path, request=request) for a in options]
        if any(not p for p in found):
            return []
        return min(found, key=len)
    if value is None:
        return [f"{where}: null where {describe(annotation)} is expected"]
    if origin is typing.Literal:
        return [] if value in args else [f"{where}: {value!r} is not one of {list(args)}"]
    if origin in (list, typing.List):  # noqa: UP006
        if not isinstance(value, list):
            return [f"{where}: {type(value).__name__} where a list is expected"]
        return [p for i, item in enumerate(value) for p in problems(item, args[0], f"{path}[{i}]", request=request)]
    if origin in (dict, typing.Dict):  # noqa: UP006
        if not isinstance(value, dict):
            return [f"{where}: {type(value).__name__} where an object is expected"]
        return [p for k, item in value.items() for p in problems(item, args[1], f"{path}.{k}", request=request)]
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        known = {str(m.value).lower() for m in annotation}
        ok = isinstance(value, str) and value.lower() in known
        valid = sorted(m.value for m in annotation)
        return [] if ok else [f"{where}: {value!r} is not one of {valid} ({annotation.__name__})"]
    if annotation is bool:
        return [] if isinstance(value, bool) else [f"{where}: {value!r} is not a boolean"]
    if annotation is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return [] if ok else [f"{where}: {value!r} is not an integer"]
    if annotation is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return [] if ok else [f"{where}: {value!r} is not a number"]
    if annotation is str:
        return [] if isinstance(value, str) else [f"{where}: {value!r} is not a string"]
    if annotation is bytes or annotation is bytearray:
        try:
            base64.b64decode(value, validate=True)
        except (TypeError, ValueError):
            return [f"{where}: {value!r} is not base64"]
        return []
    if annotation is datetime.datetime:
        try:
            datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return [f"{where}: {value!r} is not an ISO 8601 date-time"]
        return []
    if isinstance(annotation, type) and hasattr(annotation, "_attr_to_rest_field") or _is_model(annotation):
        return model_problems(value, annotation, path, request=request)
    return []


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and any(
        k.__name__ == "Model" and "model_base" in k.__module__ for k in annotation.__mro__
    )


def model_problems(value: Any, cls: type, path: str = "", *, request: bool = True) -> list[str]:
    where = path or "body"
    if not isinstance(value, dict):
        return [f"{where}: {type(value).__name__} where a {cls.__name__} object is expected"]
    mapping = getattr(cls, "__mapping__", None)
    if mapping:
        for wire, (_, _) in fields(cls).items():
            rest = vars(cls).get(snake(wire)) or next(
                (v for v in vars(cls).values() if getattr(v, "_is_discriminator", False)), None
            )
            if rest is not None and getattr(rest, "_is_discriminator", False) and value.get(wire) in mapping:
                cls = mapping[value[wire]]
                break
    known = fields(cls)
    found = []
    prefix = path + "." if path else ""
    for key, item in value.items():
        if key not in known:
            camel = {snake(k): k for k in known}.get(key)
            hint = f" (the wire name is {camel!r}: a snake_case dict was sent where a model belongs)" if camel else ""
            found.append(f"{prefix}{key}: unknown field of {cls.__name__}{hint}")
            continue
        annotation, visibility = known[key]
        if request and read_only(visibility):
            found.append(f"{prefix}{key}: read-only field of {cls.__name__} (set by the service, never sent)")
            continue
        if key in open_enums(cls):
            annotation = str | None
        found.extend(problems(item, annotation, f"{prefix}{key}", request=request))
    for key, (annotation, visibility) in known.items():
        if key not in value and not optional(annotation) and not (request and read_only(visibility)):
            found.append(f"{prefix}{key}: required field of {cls.__name__} missing")
    return found


def describe(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation)
