"""Nova's responses held to tempest's own response schemas, for the microversion of the request.

tempest (a test-only dependency, pinned in pyproject's ``test`` extra) publishes a JSON schema for the response
of every compute API call its service clients make (``tempest.lib.api_schema.response.compute.v2_1`` and one
module per microversion that changed a response). Each client names the schema a call is checked with, either one
fixed module's or the one its ``schema_versions_info`` table gives for the microversion
(``tempest.lib.services.compute.base_compute_client.BaseComputeClient.get_schema``). :data:`CALLS` says, for each
call the fake serves, which client method tempest checks that call's response with and how that method picks its
schema; :func:`problem` picks it the same way and checks the response with tempest's own
``RestClient.validate_response`` (status code, body by Draft 4 with tempest's format checker, headers).

tempest ships no response schemas for Glance, Neutron or Keystone (its image v2, network and identity v3 clients
do not validate responses: only ``compute`` and ``volume`` have ``api_schema`` modules), so those services'
responses are not checked here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tempest.lib import exceptions
from tempest.lib.api_schema.response.compute.v2_1 import flavors_extra_specs, versions
from tempest.lib.api_schema.response.compute.v2_1 import servers as s21
from tempest.lib.common import api_version_request, rest_client
from tempest.lib.services.compute import flavors_client, keypairs_client, limits_client, servers_client


@dataclass(frozen=True)
class Checked:
    """How tempest checks one call's response: ``schema`` (a fixed schema, as the client method passes it), or the
    ``name`` of a schema in the module its client's ``table`` gives for the microversion; ``client`` says where."""

    client: str
    schema: dict[str, Any] | None = None
    table: list[dict[str, Any]] | None = None
    name: str = ""

    def pick(self, microversion: tuple[int, int]) -> dict[str, Any]:
        """The schema tempest checks the response with at ``microversion`` (``get_schema``'s loop, no global)."""
        if self.schema is not None:
            return self.schema
        assert self.table is not None
        version = api_version_request.APIVersionRequest(f"{microversion[0]}.{microversion[1]}")
        for index, entry in enumerate(self.table):
            low = api_version_request.APIVersionRequest(entry["min"])
            high = api_version_request.APIVersionRequest(entry["max"])
            if version.matches(low, high):
                # tempest 47's v2_99 and v2_100 servers modules dropped the tag schemas (unchanged since 2.26) that
                # the earlier modules carry forward: the newest module that still has the schema stands in
                return next(
                    getattr(e["schema"], self.name)
                    for e in reversed(self.table[: index + 1])
                    if hasattr(e["schema"], self.name)
                )
        raise exceptions.JSONSchemaNotFound(version=version.get_string(), schema_versions_info=self.table)


S = servers_client.ServersClient.schema_versions_info
K = keypairs_client.KeyPairsClient.schema_versions_info
F = flavors_client.FlavorsClient.schema_versions_info
L = limits_client.LimitsClient.schema_versions_info
CALLS: list[tuple[str, str, Checked]] = [
    ("GET", "", Checked("VersionsClient.list_versions", versions.list_versions)),
    ("GET", "/v2.1", Checked("VersionsClient.get_version_by_url", versions.get_one_version)),
    # Nova answers adminPass unless [api]enable_instance_password is off (default on): the client's default schema
    ("POST", "/v2.1/servers", Checked("ServersClient.create_server", s21.create_server_with_admin_pass)),
    ("GET", "/v2.1/servers", Checked("ServersClient.list_servers", table=S, name="list_servers")),
    (
        "GET",
        "/v2.1/servers/detail",
        Checked("ServersClient.list_servers detail", table=S, name="list_servers_detail"),
    ),
    ("GET", "/v2.1/servers/*", Checked("ServersClient.show_server", table=S, name="get_server")),
    ("DELETE", "/v2.1/servers/*", Checked("ServersClient.delete_server", s21.delete_server)),
    ("POST", "/v2.1/servers/*/action", Checked("ServersClient.get_console_output", s21.get_console_output)),
    (
        "GET",
        "/v2.1/servers/*/metadata",
        Checked("ServersClient.list_server_metadata", s21.list_server_metadata),
    ),
    (
        "POST",
        "/v2.1/servers/*/metadata",
        Checked("ServersClient.update_server_metadata", s21.update_server_metadata),
    ),
    ("GET", "/v2.1/servers/*/tags", Checked("ServersClient.list_tags", table=S, name="list_tags")),
    ("PUT", "/v2.1/servers/*/tags", Checked("ServersClient.update_all_tags", table=S, name="update_all_tags")),
    ("PUT", "/v2.1/servers/*/tags/*", Checked("ServersClient.update_tag", table=S, name="update_tag")),
    ("POST", "/v2.1/os-keypairs", Checked("KeyPairsClient.create_keypair", table=K, name="create_keypair")),
    ("GET", "/v2.1/os-keypairs", Checked("KeyPairsClient.list_keypairs", table=K, name="list_keypairs")),
    ("GET", "/v2.1/os-keypairs/*", Checked("KeyPairsClient.show_keypair", table=K, name="get_keypair")),
    ("DELETE", "/v2.1/os-keypairs/*", Checked("KeyPairsClient.delete_keypair", table=K, name="delete_keypair")),
    ("GET", "/v2.1/flavors", Checked("FlavorsClient.list_flavors", table=F, name="list_flavors")),
    (
        "GET",
        "/v2.1/flavors/detail",
        Checked("FlavorsClient.list_flavors detail", table=F, name="list_flavors_details"),
    ),
    ("GET", "/v2.1/flavors/*", Checked("FlavorsClient.show_flavor", table=F, name="create_update_get_flavor_details")),
    (
        "GET",
        "/v2.1/flavors/*/os-extra_specs",
        Checked("FlavorsClient.list_flavor_extra_specs", flavors_extra_specs.set_get_flavor_extra_specs),
    ),
    ("GET", "/v2.1/limits", Checked("LimitsClient.show_limits", table=L, name="get_limit")),
]
"""(method, path under /compute with ``*`` for one segment, how tempest checks the response) for each call the fake's
Nova serves; the more specific path first where two match."""


def checked(method: str, path: str) -> Checked | None:
    """How tempest checks the response to ``method path`` (``path`` under the fake's /compute), or None."""
    for verb, template, how in CALLS:
        pattern = "^" + re.escape(template).replace(r"\*", "[^/]+") + "$"
        if verb == method and re.match(pattern, path):
            return how
    return None


DRIFT = (exceptions.InvalidHTTPResponseBody, exceptions.InvalidHTTPResponseHeader, exceptions.InvalidHttpSuccessCode)
"""What tempest's ``validate_response`` raises for a response outside its schema."""


class _Response(dict):
    """The response as tempest's ``validate_response`` reads it: the headers (lower-case names) and ``status``."""

    def __init__(self, status: int, headers: dict[str, str]) -> None:
        super().__init__({k.lower(): v for k, v in headers.items()})
        self.status = status


def problem(
    method: str, path: str, microversion: tuple[int, int], status: int, body: Any, headers: dict[str, str]
) -> str | None:
    """What tempest says is wrong with the fake's response to ``method path`` at ``microversion`` (tempest's own
    exception message, naming the client method whose schema it is), or None: a response tempest accepts, an error
    response (tempest checks successes only), or a call tempest has no schema for."""
    how = checked(method, path)
    if how is None:
        return None
    try:
        rest_client.RestClient.validate_response(how.pick(microversion), _Response(status, headers), body)
    except DRIFT as e:
        return f"tempest's schema for {how.client} at {microversion[0]}.{microversion[1]}: {e}"
    return None
