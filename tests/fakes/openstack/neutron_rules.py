"""Neutron's own checks of a security-group rule create, in Neutron's order and with its exceptions' messages.

Transcribed, not imported, from openstack/neutron at commit 2131d26f73262ec89a5d3e3e0d65521df4908e65:

* ``neutron/extensions/securitygroup.py``: the exceptions (lines 38-149) and the attribute conversions a request
  goes through first (``convert_protocol`` 151-167, ``convert_ethertype_to_case_insensitive`` 170-176,
  ``convert_validate_port_value`` 179-185, ``convert_ip_prefix_to_cidr`` 188-196; ``sg_supported_protocols`` 208,
  the ``security_group_rules`` attribute map 237-283 for their order and the direction values), applied as
  neutron-lib's ``AttributeInfo.fill_post_defaults`` and ``convert_values`` do;
* ``neutron/db/securitygroups_db.py``: ``_validate_base_security_group_rule_attributes`` (876-887: canonical
  IPv6 ICMP names 855-874, canonical port range 807-818, ``_validate_port_range`` 769-805,
  ``_validate_ip_prefix`` 1015-1031, ``_validate_ethertype_and_protocol`` 820-838,
  ``_validate_multiple_remote_entites`` 521-527) and the duplicate check (``_get_ip_proto_name_and_num``
  742-758, ``_rule_to_key`` 964-992, ``_check_for_duplicate_rules`` 994-1013);
* ``neutron/common/_constants.py`` 23-53 and neutron-lib (6cd671a8) ``neutron_lib/constants.py`` 182-260, 495-501
  (protocol names and numbers), ``neutron_lib/exceptions/__init__.py`` 699-700 (``InvalidCIDR``).

Why not the packages: neutron itself is not a library, and neutron-lib (whose constants these are) installed in
70 s with 82 packages here (oslo.db, SQLAlchemy, pecan, os-ken), for a table of 25 protocol names.
A refusal is a :class:`Refused`: the status and the ``NeutronError`` type (the exception's class name) Neutron's
fault map gives it (InvalidInput 400, InUse 409).
"""

from __future__ import annotations

import ipaddress
from typing import Any

IP_PROTOCOL_MAP = {
    "ah": 51,
    "dccp": 33,
    "egp": 8,
    "esp": 50,
    "gre": 47,
    "hopopt": 0,
    "icmp": 1,
    "igmp": 2,
    "ip": 0,
    "ipip": 4,
    "ipv6-encap": 41,
    "ipv6-frag": 44,
    "ipv6-icmp": 58,
    "icmpv6": 58,
    "ipv6-nonxt": 59,
    "ipv6-opts": 60,
    "ipv6-route": 43,
    "ospf": 89,
    "pgm": 113,
    "rsvp": 46,
    "sctp": 132,
    "tcp": 6,
    "udp": 17,
    "udplite": 136,
    "vrrp": 112,
}
SG_RULE_PROTO_ANY = (None, "any")
SUPPORTED_PROTOCOLS = SG_RULE_PROTO_ANY + tuple(IP_PROTOCOL_MAP)
ETHERTYPES = ["IPv4", "IPv6"]
PORT_PROTOCOLS = ("dccp", "sctp", "tcp", "udp", "udplite")
PORT_PROTOCOL_NUMBERS = (33, 132, 6, 17, 136)
IPV6_ONLY_PROTOCOLS = ("ipv6-encap", "ipv6-frag", "ipv6-icmp", "icmpv6", "ipv6-nonxt", "ipv6-opts", "ipv6-route")
IPV6_ONLY_PROTOCOLS += tuple(str(n) for n in (41, 44, 58, 59, 60, 43))
IPV6_ICMP_LEGACY = ("icmp", "icmpv6")


class Refused(Exception):
    """A Neutron exception: HTTP status, ``NeutronError`` type and message."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


def _invalid(kind: str, message: str) -> Refused:
    return Refused(400, kind, message)


# -- extensions/securitygroup.py: the conversions of the attribute map, in its order


def convert_protocol(value: Any) -> str | None:
    if value in SG_RULE_PROTO_ANY:
        return None
    refused = _invalid(
        "SecurityGroupRuleInvalidProtocol",
        f"Security group rule protocol {value} not supported. Only protocol values {SUPPORTED_PROTOCOLS} "
        "and integer representations [0 to 255] are supported.",
    )
    try:
        number = int(value)
    except (ValueError, TypeError):
        if isinstance(value, str) and value.lower() in SUPPORTED_PROTOCOLS:
            return value.lower()
        raise refused from None
    if 0 <= number <= 255:
        return str(value)
    raise refused


def convert_port(port: Any) -> int | None:
    if port is None:
        return None
    try:
        number = int(port)  # oslo_utils.netutils.is_valid_port: an integer 0-65535
    except (ValueError, TypeError):
        number = -1
    if 0 <= number <= 65535:
        return number
    raise _invalid("SecurityGroupInvalidPortValue", f"Invalid value for port {port}")


def convert_ethertype(value: Any) -> str:
    if isinstance(value, str):
        for ethertype in ETHERTYPES:
            if ethertype.lower() == value.lower():
                return ethertype
    raise _invalid(
        "SecurityGroupRuleInvalidEtherType",
        f"Security group rule for ethertype '{value}' not supported. Allowed values are {ETHERTYPES}.",
    )


def convert_ip_prefix(prefix: Any) -> str | None:
    """``convert_ip_prefix_to_cidr``: netaddr's ``str(IPNetwork(prefix))`` (host bits kept, mask added)."""
    if not prefix:
        return None
    try:
        return str(ipaddress.ip_interface(prefix))
    except ValueError:
        raise _invalid("InvalidCIDR", f"Invalid CIDR {prefix} given as IP prefix.") from None


def converted(req: dict[str, Any]) -> dict[str, Any]:
    """The request's rule after the API layer (neutron-lib's ``fill_post_defaults`` then ``convert_values``, in the
    attribute map's order): required attributes, direction's values, then each conversion."""
    for required in ("security_group_id", "direction"):
        if required not in req:
            raise _invalid("HTTPBadRequest", f"Failed to parse request. Required attribute '{required}' not specified")
    if req["direction"] not in ("ingress", "egress"):
        raise _invalid(
            "HTTPBadRequest",
            f"Invalid input for direction. Reason: '{req['direction']}' is not in ['ingress', 'egress'].",
        )
    return {
        "security_group_id": req["security_group_id"],
        "remote_group_id": req.get("remote_group_id"),
        "direction": req["direction"],
        "protocol": convert_protocol(req.get("protocol")),
        "port_range_min": convert_port(req.get("port_range_min")),
        "port_range_max": convert_port(req.get("port_range_max")),
        "ethertype": convert_ethertype(req.get("ethertype", "IPv4")),
        "remote_ip_prefix": convert_ip_prefix(req.get("remote_ip_prefix")),
        "remote_address_group_id": req.get("remote_address_group_id"),
    }


# -- db/securitygroups_db.py


def _proto_number(protocol: str | None) -> int | None:
    if protocol in SG_RULE_PROTO_ANY:
        return None
    if protocol == "icmpv6":
        protocol = "ipv6-icmp"
    return int(IP_PROTOCOL_MAP.get(str(protocol), protocol))  # type: ignore[arg-type]


def validate(rule: dict[str, Any]) -> None:
    """``_validate_base_security_group_rule_attributes``, on the converted rule (which it may make canonical)."""
    if rule["ethertype"] == "IPv6" and rule["protocol"] in IPV6_ICMP_LEGACY:
        rule["protocol"] = "ipv6-icmp"
    elif rule["ethertype"] == "IPv6" and rule["protocol"] == "1":
        rule["protocol"] = "58"
    if rule["port_range_min"] == 1 and rule["port_range_max"] == 65535:
        rule["port_range_min"] = rule["port_range_max"] = None
    _validate_port_range(rule)
    prefix = rule["remote_ip_prefix"]
    if prefix and rule["ethertype"] != f"IPv{ipaddress.ip_interface(prefix).version}":
        raise _invalid(
            "SecurityGroupRuleParameterConflict", f"Conflicting value ethertype {rule['ethertype']} for CIDR {prefix}"
        )
    if rule["protocol"] in IPV6_ONLY_PROTOCOLS and rule["ethertype"] == "IPv4":
        raise _invalid(
            "SecurityGroupEthertypeConflictWithProtocol",
            f"Invalid ethertype {rule['ethertype']} for protocol {rule['protocol']}.",
        )
    remotes = [k for k in ("remote_ip_prefix", "remote_group_id", "remote_address_group_id") if rule.get(k)]
    if len(remotes) > 1:
        raise _invalid(
            "SecurityGroupMultipleRemoteEntites",
            "Only one of remote_ip_prefix or remote_group_id or remote_address_group_id may be provided.",
        )


def _validate_port_range(rule: dict[str, Any]) -> None:
    low, high = rule["port_range_min"], rule["port_range_max"]
    if low is None and high is None:
        return
    if not rule["protocol"]:
        raise _invalid("SecurityGroupProtocolRequiredWithPorts", "Must also specify protocol if port range is given.")
    number = _proto_number(rule["protocol"])
    if number in PORT_PROTOCOL_NUMBERS:
        if low == 0 or high == 0:
            raise _invalid("SecurityGroupInvalidPortValue", "Invalid value for port 0")
        if not (low is not None and high is not None and low <= high):
            raise _invalid(
                "SecurityGroupInvalidPortRange", "For TCP/UDP protocols, port_range_min must be <= port_range_max"
            )
    elif number in (1, 58):
        for attr, field, value in (("port_range_min", "type", low), ("port_range_max", "code", high)):
            if value is not None and not 0 <= value <= 255:
                raise _invalid(
                    "SecurityGroupInvalidIcmpValue",
                    f"Invalid value for ICMP {field} ({attr}) {value}. It must be 0 to 255.",
                )
        if low is None and high is not None:
            raise _invalid(
                "SecurityGroupMissingIcmpType",
                f"ICMP code (port-range-max) {high} is provided but ICMP type (port-range-min) is missing.",
            )
    else:
        raise _invalid(
            "SecurityGroupInvalidProtocolForPort",
            f"Ports cannot be specified for protocol {number}. Ports are only supported for "
            f"{', '.join(p.upper() for p in PORT_PROTOCOLS)}.",
        )


def _name_and_number(protocol: Any, ethertype: str | None) -> list[str] | None:
    if protocol in SG_RULE_PROTO_ANY:
        return None
    protocol = str(protocol)
    if ethertype == "IPv6":
        if protocol in IPV6_ICMP_LEGACY:
            protocol = "ipv6-icmp"
        elif protocol == "1":
            protocol = "58"
    if protocol in IP_PROTOCOL_MAP:
        return [protocol, str(IP_PROTOCOL_MAP[protocol])]
    names = {str(v): k for k, v in IP_PROTOCOL_MAP.items() if k != "icmpv6"}
    if protocol in names:
        return [names[protocol], protocol]
    return [protocol, protocol]


def rule_key(rule: dict[str, Any]) -> str:
    """``_rule_to_key``: what makes two rules the same (any-address prefixes and no prefix are alike)."""

    def normal(key: str, value: Any) -> str:
        if key == "remote_ip_prefix":
            if value in ("0.0.0.0/0", "::/0", None):
                return "+"
        elif value is None:
            return "+"
        elif key == "protocol":
            return str(_name_and_number(value, rule.get("ethertype")))
        return str(value)

    keys = ["direction", "ethertype", "port_range_max", "port_range_min", "protocol"]
    keys += ["remote_group_id", "remote_address_group_id", "remote_ip_prefix", "security_group_id"]
    return "_".join(normal(k, rule.get(k)) for k in keys)


def check_duplicate(rule: dict[str, Any], existing: list[dict[str, Any]]) -> None:
    """``_check_for_duplicate_rules`` for one new rule: 409 naming the rule it repeats."""
    key = rule_key(rule)
    for other in existing:
        if rule_key(other) == key:
            raise Refused(
                409, "SecurityGroupRuleExists", f"Security group rule already exists. Rule id is {other['id']}."
            )
