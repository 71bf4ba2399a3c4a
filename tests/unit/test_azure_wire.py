"""The Azure fake's request checks on their own (no server): the SDK models' required, read-only and enum rules,
the api-version per resource type, and the limits the SDK documents (custom data, NSG priority)."""

from __future__ import annotations

import base64

import pytest

from ..fakes.azure import arm, wire


def compute():
    from azure.mgmt.compute import models

    return models


def network():
    from azure.mgmt.network import models

    return models


def test_required_fields_are_the_sdks_non_optional_ones():
    found = wire.model_problems({"properties": {"storageProfile": {"osDisk": {}}}}, compute().VirtualMachine)
    assert found == [
        "properties.storageProfile.osDisk.createOption: required field of OSDisk missing",
        "location: required field of VirtualMachine missing",
    ]
    rule = {"name": "ssh", "properties": {"destinationPortRange": "22"}}
    nsg = {"location": "w", "properties": {"securityRules": [rule]}}
    found = wire.model_problems(nsg, network().NetworkSecurityGroup)
    assert [p.split(": ")[0].rsplit(".", 1)[1] for p in found] == ["protocol", "access", "priority", "direction"]


def test_read_only_fields_are_refused_in_requests_only():
    body = {"location": "w", "id": "/subscriptions/s", "etag": "x"}
    assert wire.model_problems(body, compute().VirtualMachine) == [
        "id: read-only field of VirtualMachine (set by the service, never sent)",
        "etag: read-only field of VirtualMachine (set by the service, never sent)",
    ]
    assert wire.model_problems(body, compute().VirtualMachine, request=False) == []


def test_enums_are_closed_except_where_the_sdk_says_its_list_is_deprecated():
    disk = {"createOption": "FromImage", "caching": "Bogus"}
    assert wire.model_problems(disk, compute().OSDisk) == [
        "caching: 'Bogus' is not one of ['None', 'ReadOnly', 'ReadWrite'] (CachingTypes)"
    ]
    assert wire.model_problems({**disk, "caching": "readwrite"}, compute().OSDisk) == []  # ARM ignores case
    assert wire.open_enums(compute().HardwareProfile) == {"vmSize"}
    assert wire.model_problems({"vmSize": "Standard_D2s_v5"}, compute().HardwareProfile) == []
    assert wire.model_problems({"vmSize": 2}, compute().HardwareProfile) == ["vmSize: 2 is not a string"]


def test_each_resource_type_has_the_api_version_its_sdk_operations_send():
    versions = wire.type_versions("Microsoft.Compute")
    assert versions["microsoft.compute/skus"] != versions["microsoft.compute/virtualmachines"]
    assert len(versions["microsoft.compute/virtualmachines"]) == 1
    assert wire.type_versions("Microsoft.Network")["microsoft.network/virtualnetworks/subnets"]


@pytest.mark.parametrize(
    "model, attribute, text",
    [
        ("compute", "OSProfile", "The maximum length of the binary array is 65535 bytes"),
        ("network", "SecurityRulePropertiesFormat", "The value can be between 100 and 4096"),
        ("compute", "SshPublicKey", "The key needs to be at least 2048-bit and in ssh-rsa format"),
    ],
)
def test_the_limits_the_fake_enforces_are_the_ones_the_sdk_documents(model, attribute, text):
    cls = getattr({"compute": compute, "network": network}[model](), attribute)
    assert text in " ".join(wire.class_source(cls).split())


def test_custom_data_up_to_65535_bytes_of_base64():
    arm.check_custom_data(base64.b64encode(b"x" * 65535).decode())
    for bad in (base64.b64encode(b"x" * 65536).decode(), "not base64!"):
        with pytest.raises(arm.ArmError) as refused:
            arm.check_custom_data(bad)
        assert (refused.value.code, refused.value.target) == ("InvalidParameter", "customData")
        assert "maximum length of 87380 characters" in refused.value.message


@pytest.mark.parametrize("priority, ok", [(99, False), (100, True), (4096, True), (4097, False)])
def test_security_rule_priority_100_to_4096(priority, ok):
    rule = {"name": "ssh", "properties": {"priority": priority}}
    if ok:
        arm.check_priority(rule)
        return
    message = f"ssh has invalid Priority. Value provided: {priority} Allowed range 100-4096"
    with pytest.raises(arm.ArmError, match=message):
        arm.check_priority(rule)
