"""Nova's own request schemas for the calls the fake serves (server create, server metadata), per microversion.

Transcribed, not imported, from openstack/nova at commit 00a030403f672b975364c855b7d25b40ef83e757 (Nova 2026.2
development; ``_MAX_API_VERSION = '2.104'``):

* ``nova/api/openstack/compute/schemas/servers.py`` lines 21-366: ``create`` and each ``create_v2NN`` derived from
  it, in the same order and with the same deep copies;
* ``nova/api/openstack/compute/servers.py`` lines 701-714: which schema each microversion range validates with;
* ``nova/api/openstack/compute/schemas/server_metadata.py`` lines 21-52 (``create``, ``update_all``);
* ``nova/api/validation/parameter_types.py`` lines 79-204 (printable characters, the name and description
  patterns) and 206-535 (the parameter types used here); ``MAX_TAG_COUNT`` (nova/objects/instance.py:81) and
  ``MAX_TAG_LENGTH`` (nova/objects/tag.py:18);
* ``nova/api/validation/validators.py`` lines 71-160 (the ``base64``, ``uuid`` and ``name`` formats) and 258-347
  (Draft 2020-12 with string numbers accepted by minimum/maximum; the 400 message
  ``Invalid input for field/attribute <last path element>. Value: <value>. <jsonschema's message>``).

Why not the package: ``nova`` 34.0.0 is a usable wheel, but importing its schema module imports Nova itself
(2,585 modules, eventlet and oslo.service among them, DeprecationWarnings at import, which the fast tier turns
into errors); ``pip install nova`` into a fresh venv took 96 s together with neutron-lib and tempest here (146
packages, 466 MB), against a CI budget of one extra minute. Only the schemas are needed, and they are data.
"""

from __future__ import annotations

import base64
import binascii
import copy
import re
import unicodedata
import uuid
from functools import cache
from typing import Any

import jsonschema

MAX_TAG_COUNT = 50
MAX_TAG_LENGTH = 60
METADATA_KEY = "^[a-zA-Z0-9-_:. ]{1,255}$"
"""Nova's pattern for a metadata key (parameter_types.metadata)."""


# -- parameter_types.py 79-204: printable characters


def _is_printable(char: str) -> bool:
    category = unicodedata.category(char)
    return not category.startswith("C") and (not category.startswith("Z") or category == "Zs")


@cache
def _regex_range(ws: bool = True, invert: bool = False) -> str:
    """``_build_regex_range``: the printable characters of the BMP (without spaces unless ``ws``) as ranges."""

    def valid(char: str) -> bool:
        result = _is_printable(char) if ws else _is_printable(char) and unicodedata.category(char) != "Zs"
        return not result if invert else result

    regex, in_range, last, last_added = "", False, "", ""
    c = ""
    for c in map(chr, range(0xFFFF)):
        if valid(c):
            if not in_range:
                regex += re.escape(c)
                last_added = c
            in_range = True
        else:
            if in_range and last != last_added:
                regex += "-" + re.escape(last)
            in_range = False
        last = c
    if in_range:
        regex += "-" + re.escape(c)
    return regex


@cache
def valid_name_regex() -> str:
    no_ws = _regex_range(ws=False, invert=True)
    return f"^(?![{no_ws}])[{_regex_range()}]*(?<![{no_ws}])$"


NAME_REASON = "printable characters. Can not start or end with whitespace."


# -- parameter_types.py 206-535


TRUE = (True, "True", "TRUE", "true", "1", "ON", "On", "on", "YES", "Yes", "yes")
"""The true half of ``boolean`` (strutils.bool_from_string's, as Nova reads config_drive)."""
boolean = {
    "type": ["boolean", "string"],
    "enum": [*TRUE] + [False, "False", "FALSE", "false", "0", "OFF", "Off", "off", "NO", "No", "no"],
}
positive_integer = {"type": ["integer", "string"], "pattern": "^[0-9]*$", "minimum": 1, "minLength": 1}
hostname = {"type": "string", "pattern": "^[a-zA-Z0-9]+[a-zA-Z0-9-]*[a-zA-Z0-9]+$", "minLength": 2, "maxLength": 63}
fqdn = {"type": "string", "pattern": "^[a-zA-Z0-9-._]*$", "minLength": 1, "maxLength": 255}
name = {"type": "string", "format": "name", "minLength": 1, "maxLength": 255}
server_id = {"type": "string", "format": "uuid"}
image_id = {"type": "string", "format": "uuid"}
image_id_or_empty_string = {"oneOf": [{"type": "string", "format": "uuid"}, {"type": "string", "maxLength": 0}]}
volume_id = {"type": "string", "format": "uuid"}
volume_type = {"type": ["string", "null"], "minLength": 0, "maxLength": 255}
admin_password = {"type": "string"}
flavor_ref = {"type": ["string", "integer"], "minLength": 1}
metadata = {
    "type": "object",
    "patternProperties": {METADATA_KEY: {"type": "string", "maxLength": 255}},
    "additionalProperties": False,
}
ip_address = {"type": "string", "oneOf": [{"format": "ipv4"}, {"format": "ipv6"}]}
volume_size = {"type": ["integer", "string"], "pattern": "^[0-9]+$", "minimum": 1, "maximum": 0x7FFFFFFF}
disk_config = {"type": "string", "enum": ["AUTO", "MANUAL"]}
accessIPv4 = {"type": "string", "format": "ipv4"}
accessIPv6 = {"type": "string", "format": "ipv6"}
personality = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {"path": {"type": "string"}, "contents": {"type": "string", "format": "base64"}},
        "additionalProperties": False,
    },
}
tag = {"type": "string", "pattern": "^[^,/]*$", "minLength": 1, "maxLength": MAX_TAG_LENGTH}
trusted_certs = {
    "type": ["array", "null"],
    "minItems": 1,
    "maxItems": 50,
    "uniqueItems": True,
    "items": {"type": "string", "minLength": 1},
}


def description() -> dict[str, Any]:
    return {"type": ["string", "null"], "pattern": f"^[{_regex_range()}]*$", "minLength": 0, "maxLength": 255}


# -- schemas/servers.py 21-366

_legacy_block_device_mapping: dict[str, Any] = {
    "type": "object",
    "properties": {
        "virtual_name": {"type": "string", "maxLength": 255},
        "volume_id": volume_id,
        "snapshot_id": image_id,
        "volume_size": volume_size,
        "device_name": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[a-zA-Z0-9._/-]*$"},
        "delete_on_termination": boolean,
        "no_device": {},
        "connection_info": {"type": "string", "maxLength": 16777215},
    },
    "additionalProperties": False,
}
_block_device_mapping_v2 = copy.deepcopy(_legacy_block_device_mapping)
_block_device_mapping_v2["properties"].update(
    {
        "source_type": {"type": "string", "enum": ["volume", "image", "snapshot", "blank"]},
        "uuid": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[a-zA-Z0-9._-]*$"},
        "image_id": image_id,
        "destination_type": {"type": "string", "enum": ["local", "volume"]},
        "guest_format": {"type": "string", "maxLength": 255},
        "device_type": {"type": "string", "maxLength": 255},
        "disk_bus": {"type": "string", "maxLength": 255},
        "boot_index": {"type": ["integer", "string", "null"], "pattern": "^-?[0-9]+$"},
    }
)
_hints = {
    "type": "object",
    "properties": {
        "group": {"oneOf": [{"type": "array", "items": {"type": "string", "format": "uuid"}}, server_id]},
        "different_host": {"oneOf": [server_id, {"type": "array", "items": server_id}]},
        "same_host": {"type": ["string", "array"], "items": server_id},
        "query": {"type": ["string", "object"]},
        "target_cell": name,
        "different_cell": {"type": ["string", "array"], "items": {"type": "string"}},
        "build_near_host_ip": ip_address,
        "cidr": {"type": "string", "pattern": "^/[0-9a-f.:]+$"},
    },
    "additionalProperties": True,
}


def _network_item(uuid_format: bool, tagged: bool) -> dict[str, Any]:
    uuid_schema: dict[str, Any] = {"type": "string", "format": "uuid"} if uuid_format else {"type": "string"}
    properties = {"fixed_ip": ip_address, "port": {"type": ["string", "null"], "format": "uuid"}, "uuid": uuid_schema}
    if tagged:
        properties["tag"] = tag
    return {"type": "object", "properties": properties, "additionalProperties": False}


create: dict[str, Any] = {
    "type": "object",
    "properties": {
        "server": {
            "type": "object",
            "properties": {
                "name": name,
                "imageRef": image_id_or_empty_string,
                "flavorRef": flavor_ref,
                "adminPass": admin_password,
                "metadata": metadata,
                "networks": {"type": "array", "items": _network_item(uuid_format=False, tagged=False)},
                "OS-DCF:diskConfig": disk_config,
                "accessIPv4": accessIPv4,
                "accessIPv6": accessIPv6,
                "personality": personality,
                "availability_zone": name,
                "block_device_mapping": {"type": "array", "items": _legacy_block_device_mapping},
                "block_device_mapping_v2": {"type": "array", "items": _block_device_mapping_v2},
                "config_drive": boolean,
                "key_name": name,
                "min_count": positive_integer,
                "max_count": positive_integer,
                "return_reservation_id": boolean,
                "security_groups": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"name": name}, "additionalProperties": False},
                },
                "user_data": {"type": "string", "format": "base64", "maxLength": 65535},
            },
            "required": ["name", "flavorRef"],
            "additionalProperties": False,
        },
        "os:scheduler_hints": _hints,
        "OS-SCH-HNT:scheduler_hints": _hints,
    },
    "required": ["server"],
    "additionalProperties": False,
}


def _server(schema: dict[str, Any]) -> dict[str, Any]:
    return schema["properties"]["server"]


create_v219 = copy.deepcopy(create)
_server(create_v219)["properties"]["description"] = "description"  # resolved lazily (a 65535-character scan)
create_v232 = copy.deepcopy(create_v219)
_server(create_v232)["properties"]["networks"]["items"]["properties"]["tag"] = tag
_server(create_v232)["properties"]["block_device_mapping_v2"]["items"]["properties"]["tag"] = tag
create_v233 = copy.deepcopy(create_v219)
_server(create_v233)["properties"]["networks"]["items"]["properties"]["tag"] = tag
create_v237 = copy.deepcopy(create_v233)
_server(create_v237)["required"].append("networks")
_server(create_v237)["properties"]["networks"] = {
    "oneOf": [
        {"type": "array", "items": _network_item(uuid_format=True, tagged=False)},
        {"type": "string", "enum": ["none", "auto"]},
    ]
}
create_v242 = copy.deepcopy(create_v237)
_server(create_v242)["properties"]["networks"] = {
    "oneOf": [
        {"type": "array", "items": _network_item(uuid_format=True, tagged=True)},
        {"type": "string", "enum": ["none", "auto"]},
    ]
}
_server(create_v242)["properties"]["block_device_mapping_v2"]["items"]["properties"]["tag"] = tag
create_v252 = copy.deepcopy(create_v242)
_server(create_v252)["properties"]["tags"] = {"type": "array", "items": tag, "maxItems": MAX_TAG_COUNT}
create_v257 = copy.deepcopy(create_v252)
_server(create_v257)["properties"].pop("personality")
create_v263 = copy.deepcopy(create_v257)
_server(create_v263)["properties"]["trusted_image_certificates"] = trusted_certs
create_v267 = copy.deepcopy(create_v263)
_server(create_v267)["properties"]["block_device_mapping_v2"]["items"]["properties"]["volume_type"] = volume_type
create_v274 = copy.deepcopy(create_v267)
_server(create_v274)["properties"]["host"] = fqdn
_server(create_v274)["properties"]["hypervisor_hostname"] = fqdn
create_v290 = copy.deepcopy(create_v274)
_server(create_v290)["properties"]["hostname"] = hostname
create_v294 = copy.deepcopy(create_v290)
_server(create_v294)["properties"]["hostname"] = fqdn

SERVER_CREATE = (
    ((2, 1), create),
    ((2, 19), create_v219),
    ((2, 32), create_v232),
    ((2, 33), create_v233),
    ((2, 37), create_v237),
    ((2, 42), create_v242),
    ((2, 52), create_v252),
    ((2, 57), create_v257),
    ((2, 63), create_v263),
    ((2, 67), create_v267),
    ((2, 74), create_v274),
    ((2, 90), create_v290),
    ((2, 94), create_v294),
)
"""servers.py 701-714: the schema of ``POST /servers`` from each microversion on (2.0, the legacy v2 API, is not
served)."""

# -- schemas/server_metadata.py 21-52 (create and update_all are the same schema)

server_metadata = {
    "type": "object",
    "properties": {"metadata": metadata},
    "required": ["metadata"],
    "additionalProperties": False,
}


def server_create(microversion: tuple[int, int]) -> dict[str, Any]:
    """The schema Nova validates ``POST /servers`` with at ``microversion``."""
    return [schema for since, schema in SERVER_CREATE if since <= microversion][-1]


# -- validators.py


class InvalidName(Exception):
    """nova.exception.InvalidName: its message replaces jsonschema's."""

    def __str__(self) -> str:
        return f"An invalid 'name' value was provided. The name must be: {NAME_REASON}"


_FORMATS = jsonschema.FormatChecker()


@_FORMATS.checks("base64")
def _base64(instance: object) -> bool:
    if not isinstance(instance, str):
        return True
    try:
        base64.b64decode(instance)  # oslo_serialization.base64.decode_as_bytes: not strict
    except binascii.Error:
        return False
    return True


@_FORMATS.checks("uuid")
def _uuid(instance: object) -> bool:
    """oslo_utils.uuidutils.is_uuid_like."""
    if not isinstance(instance, str):
        return True
    try:
        canonical = instance.replace("urn:", "").replace("uuid:", "").strip("{}").replace("-", "").lower()
        return str(uuid.UUID(instance)).replace("-", "") == canonical
    except ValueError:
        return False


@_FORMATS.checks("name", InvalidName)
def _name(instance: object) -> bool:
    if isinstance(instance, str) and re.search(valid_name_regex(), instance):
        return True
    raise InvalidName


def _number(instance: object) -> object:
    try:
        return int(instance)  # type: ignore[call-overload]
    except (ValueError, TypeError):
        try:
            return float(instance)  # type: ignore[arg-type]
        except (ValueError, TypeError):
            return None


def _bound(keyword: str) -> Any:
    original = jsonschema.Draft202012Validator.VALIDATORS[keyword]

    def check(validator: Any, bound: Any, instance: Any, schema: Any) -> Any:
        number = _number(instance)
        return None if number is None else original(validator, bound, number, schema)

    return check


_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator, {"minimum": _bound("minimum"), "maximum": _bound("maximum")}
)


def _resolved(schema: Any) -> Any:
    """The schema with the lazily built ``description`` type put in place."""
    if schema == "description":
        return description()
    if isinstance(schema, dict):
        return {k: _resolved(v) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_resolved(v) for v in schema]
    return schema


@cache
def _validator(schema_id: int) -> Any:
    schema = next(s for s in (*(s for _, s in SERVER_CREATE), server_metadata) if id(s) == schema_id)
    return _Validator(_resolved(schema), format_checker=_FORMATS)


def problem(schema: dict[str, Any], body: Any) -> str | None:
    """Nova's 400 message for ``body`` against ``schema`` (``_SchemaValidator.validate``), or None if it passes."""
    try:
        _validator(id(schema)).validate(body)
    except jsonschema.ValidationError as ex:
        if isinstance(ex.cause, InvalidName):
            return str(ex.cause)
        if ex.path:
            return f"Invalid input for field/attribute {ex.path.pop()}. Value: {ex.instance}. {ex.message}"
        return ex.message
    return None
