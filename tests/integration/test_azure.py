"""The azure provider through the real Azure SDK over HTTPS against a local fake ARM, with blobs in Azurite.

No Azure Resource Manager emulator exists: ``tests/fakes/azure/arm.py`` is a stateful fake that checks every
request body against the SDK's own models. Blob storage is Azurite, Microsoft's emulator. The VMs the fake
"runs" do not exist: where a test needs SSH, the run's endpoint hook sends it to a KVM stand-in on
127.0.0.1, and the fake serves the stand-in's console as the VM's serial log (so host keys are checked
strictly, as on Azure).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shlex
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from cernvm_fixtures import config
from cernvm_fixtures.errors import ConfigError, ProviderError, ReadinessError, ScreenUnavailable
from cernvm_fixtures.instance import launch
from cernvm_fixtures.ledger import Owner, Resource, machine_identity
from cernvm_fixtures.providers import azure as azmod
from cernvm_fixtures.providers.azure import AzureProvider
from cernvm_fixtures.providers.azure.provider import PROVISIONING_TIMED_OUT
from cernvm_fixtures.run import Run
from cernvm_fixtures.sweep import teardown_key

from ..clouds import (
    CIDR,
    assert_launch_fails,
    assert_nothing_left,
    config_file,
    run_for,
    suite_through_standins,
    target_for,
)
from ..fakes.azure import wire
from ..fakes.azure.certificate import make_certificate
from ..fakes.azure.fixtures import CONTAINER, SUBSCRIPTION, AzureCloud
from ..fakes.azure.vhd import make_vhd
from ..fakes.azure.wireserver import HEADERS, GoalState, WireServer, health_report, read_goal_state, report_ready
from ..fakes.server import Call
from ..helpers import (
    create_only,
    killed_launch,
    ledger_entries,
    subprocess_env,
    sweep_killed,
)

IMAGE_GROUP = "cernvm-images"


@pytest.fixture(scope="module")
def image_id(azure_session: AzureCloud, tmp_path_factory) -> str:
    """A managed image in the fake, made from a VHD page blob in Azurite (as a user's existing image)."""
    from azure.mgmt.compute import models

    vhd = make_vhd(tmp_path_factory.mktemp("vhd") / "existing.vhd")
    blob = azure_session.blobs().get_blob_client(CONTAINER, "existing.vhd")
    blob.create_page_blob(vhd.stat().st_size)
    blob.upload_page(vhd.read_bytes()[-512:], offset=vhd.stat().st_size - 512, length=512)
    azure_session.client("resource").resource_groups.create_or_update(IMAGE_GROUP, {"location": "westeurope"})
    image = models.Image(
        location="westeurope",
        properties=models.ImageProperties(
            storage_profile=models.ImageStorageProfile(
                os_disk=models.ImageOSDisk(os_type="Linux", os_state="Generalized", blob_uri=blob.url)
            )
        ),
    )
    return azure_session.client("compute").images.begin_create_or_update(IMAGE_GROUP, "cernvm", image).result().id


def ledger_before_create(cloud: AzureCloud, run: Run) -> list[str]:
    """Install a hook in the fake: every create request must find its resource id in the ledger already."""
    missing: list[str] = []

    def check(call: Call) -> None:
        if call.method == "PUT":
            ids = {str(r.data.get("id", "")).lower() for r in run.ledger.entries()}
            ids |= {
                f"/subscriptions/{SUBSCRIPTION}/resourcegroups/{r.data.get('group', '')}".lower()
                for r in run.ledger.entries()
            }
            if call.path.split("?")[0].lower() not in ids:
                missing.append(call.path)

    cloud.arm.hooks.append(check)
    return missing


# --- the wire format is the SDK's ---------------------------------------------------------------------


def test_fake_rejects_a_snake_case_dict_where_a_model_belongs(azure_cloud):
    from azure.core.exceptions import HttpResponseError
    from azure.mgmt.compute import models

    vm = models.VirtualMachine(
        location="westeurope",
        properties=models.VirtualMachineProperties(
            hardware_profile=models.HardwareProfile(vm_size="Standard_B2s"),
            os_profile={"admin_username": "cernvm", "computer_name": "x"},
        ),
    )
    azure_cloud.client("resource").resource_groups.create_or_update("wire-check", {"location": "westeurope"})
    with pytest.raises(HttpResponseError, match="admin_username: unknown field of OSProfile .*adminUsername"):
        azure_cloud.client("compute").virtual_machines.begin_create_or_update("wire-check", "vm", vm)
    azure_cloud.client("resource").resource_groups.begin_delete("wire-check").result()
    violations = list(azure_cloud.arm.violations)
    azure_cloud.arm.violations.clear()
    assert any("admin_username: unknown field of OSProfile" in v for v in violations), violations


def test_fake_rejects_api_versions_the_sdk_does_not_send(azure_cloud, image_id):
    from azure.core.exceptions import HttpResponseError

    compute = azure_cloud.client("compute")
    with pytest.raises(HttpResponseError, match="NoRegisteredProviderFound"):
        compute.images.get(IMAGE_GROUP, "cernvm", params={"api-version": "2015-06-15"})
    violations = list(azure_cloud.arm.violations)
    azure_cloud.arm.violations.clear()
    assert len(violations) == 1 and "api-version '2015-06-15' is not the SDK's" in violations[0], violations


VM_BODY = {
    "location": "westeurope",
    "properties": {
        "hardwareProfile": {"vmSize": "Standard_B2s"},
        "storageProfile": {"osDisk": {"createOption": "FromImage", "caching": "ReadWrite"}},
        "osProfile": {"computerName": "wire", "adminUsername": "cernvm", "customData": "Y2VybnZt"},
    },
}
RULE = {"protocol": "Tcp", "access": "Allow", "direction": "Inbound", "priority": 100, "destinationPortRange": "22"}


def changed(body: dict, path: str, value: object) -> dict:
    """A deep copy of ``body`` with the dotted ``path`` set to ``value`` (removed where ``value`` is ``...``)."""
    body = json.loads(json.dumps(body))
    *parents, last = path.split(".")
    node = body
    for key in parents:
        node = node[key]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return body


def refusal(cloud: AzureCloud, kind: str, body: dict) -> Any:
    """The HttpResponseError the fake answers to creating a ``vm`` or ``nsg`` from ``body`` (in a group of its own,
    deleted after)."""
    from azure.core.exceptions import HttpResponseError

    cloud.client("resource").resource_groups.create_or_update("wire-check", {"location": "westeurope"})
    try:
        create = {
            "vm": cloud.client("compute").virtual_machines.begin_create_or_update,
            "nsg": cloud.client("network").network_security_groups.begin_create_or_update,
        }[kind]
        with pytest.raises(HttpResponseError) as refused:
            create("wire-check", "refused", body)
        return refused.value
    finally:
        cloud.client("resource").resource_groups.begin_delete("wire-check").result()


@pytest.mark.parametrize(
    "kind, body, message",
    [
        ("vm", changed(VM_BODY, "location", ...), "location: required field of VirtualMachine missing"),
        (
            "vm",
            changed(VM_BODY, "properties.storageProfile.osDisk.createOption", ...),
            "properties.storageProfile.osDisk.createOption: required field of OSDisk missing",
        ),
        (
            "vm",
            changed(VM_BODY, "properties.storageProfile.osDisk.caching", "Bogus"),
            r"caching: 'Bogus' is not one of \['None', 'ReadOnly', 'ReadWrite'\] \(CachingTypes\)",
        ),
        ("vm", changed(VM_BODY, "id", "/subscriptions/x"), "id: read-only field of VirtualMachine"),
        *[
            (
                "nsg",
                {"location": "westeurope", "properties": {"securityRules": [{"name": "ssh", "properties": rule}]}},
                f"securityRules\\[0\\].properties.{missing}: required field of SecurityRulePropertiesFormat missing",
            )
            for missing in ("protocol", "access", "direction", "priority")
            for rule in [{k: v for k, v in RULE.items() if k != missing}]
        ],
    ],
)
def test_fake_refuses_what_the_sdk_models_forbid(azure_cloud, kind, body, message):
    refused = refusal(azure_cloud, kind, body)
    assert refused.status_code == 400 and refused.error.code == "InvalidRequestContent"
    assert re.search(message, refused.error.message), refused.error.message
    violations = list(azure_cloud.arm.violations)
    azure_cloud.arm.violations.clear()
    assert len(violations) == 1 and re.search(message, violations[0]), violations


@pytest.mark.parametrize(
    "kind, body, code, target",
    [
        ("vm", changed(VM_BODY, "properties.osProfile.customData", "not base64!"), "InvalidParameter", "customData"),
        (
            "vm",
            changed(VM_BODY, "properties.osProfile.customData", base64.b64encode(b"x" * 65536).decode()),
            "InvalidParameter",
            "customData",
        ),
        *[
            (
                "nsg",
                {
                    "location": "westeurope",
                    "properties": {"securityRules": [{"name": "ssh", "properties": {**RULE, "priority": priority}}]},
                },
                "SecurityRuleInvalidPriority",
                None,
            )
            for priority in (99, 4097)
        ],
    ],
)
def test_fake_refuses_what_the_services_refuse(azure_cloud, kind, body, code, target):
    refused = refusal(azure_cloud, kind, body)
    error = refused.error
    assert (refused.status_code, error.code, error.target) == (400, code, target), error.message


def admin_key(run: Run) -> str:
    """The public half of the run's RSA admin key (the private key file in the run directory, 0600)."""
    from cryptography.hazmat.primitives import serialization

    path = run.directory / "id_rsa"
    assert path.stat().st_mode & 0o777 == 0o600
    key = serialization.load_ssh_private_key(path.read_bytes(), None)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return f"{public.decode()} cernvm-fixtures-{run.id}"


def rsa_bits(line: str) -> int:
    from cryptography.hazmat.primitives.serialization import load_ssh_public_key

    return load_ssh_public_key(line.encode()).key_size


def public_line(key) -> str:
    from cryptography.hazmat.primitives import serialization

    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


@pytest.mark.parametrize("kind", ["ed25519", "rsa-1024", "not a key", "ssh2-rsa-2048"])
def test_fake_takes_only_ssh_rsa_keys_of_2048_bits_or_more(azure_cloud, kind):
    """The SDK's keyData: "The key needs to be at least 2048-bit and in ssh-rsa format" (an SSH2 block too)."""
    from azure.core.exceptions import HttpResponseError
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    if kind == "ed25519":
        key = public_line(ed25519.Ed25519PrivateKey.generate())
    elif kind == "not a key":
        key = "ssh-rsa AAAAnot-base64"
    else:
        key = public_line(rsa.generate_private_key(public_exponent=65537, key_size=int(kind.split("-")[-1])))
    if kind.startswith("ssh2"):
        key = "\n".join(
            ["---- BEGIN SSH2 PUBLIC KEY ----", 'Comment: "test"', key.split()[1], "---- END SSH2 PUBLIC KEY ----"]
        )
    linux = {"disablePasswordAuthentication": True, "ssh": {"publicKeys": [{"path": "/k", "keyData": key}]}}
    body = changed(VM_BODY, "properties.osProfile.linuxConfiguration", linux)
    body = changed(body, "properties.hardwareProfile.vmSize", "Standard_NC6")  # past the key check: SkuNotAvailable
    azure_cloud.client("resource").resource_groups.create_or_update("wire-check", {"location": "westeurope"})
    try:
        with pytest.raises(HttpResponseError) as refused:
            azure_cloud.client("compute").virtual_machines.begin_create_or_update("wire-check", "vm", body)
    finally:
        azure_cloud.client("resource").resource_groups.begin_delete("wire-check").result()
    error = refused.value.error
    if kind.startswith("ssh2"):
        assert error.code == "SkuNotAvailable", error.message
        return
    assert (error.code, error.target) == ("InvalidParameter", "linuxConfiguration.ssh.publicKeys.keyData")
    assert error.message == "The value of parameter linuxConfiguration.ssh.publicKeys.keyData is invalid."


def test_custom_data_beyond_azures_limit_is_refused_before_anything_exists(azure_cloud, image_id, tmp_path):
    from cernvm_fixtures.context import Context, UserData

    run = run_for(tmp_path)
    provider = AzureProvider(target_for(azure_cloud, image_id), run)
    machine = provider.machine(run.name("azure"))
    big = Context(hostname=machine.name, user_data=UserData(raw="#" * 65536))
    with pytest.raises(ProviderError, match=r"custom data is \d+ bytes; Azure accepts 65535"):
        provider.launch(machine, big)
    assert run.ledger.entries() == []


@pytest.mark.parametrize(
    "tags, code",
    [
        ({"a/b": "x"}, "InvalidTagNameCharacters"),
        ({"x" * 513: "v"}, "InvalidTagName"),
        ({"k": "v" * 257}, "InvalidTagValueLength"),
        ({f"t{i}": "v" for i in range(51)}, "InvalidTags"),
    ],
)
def test_fake_refuses_tags_azure_refuses(azure_cloud, tags, code):
    from azure.core.exceptions import HttpResponseError

    groups = azure_cloud.client("resource").resource_groups
    with pytest.raises(HttpResponseError, match=code):
        groups.create_or_update("tag-check", {"location": "westeurope", "tags": tags})
    assert not groups.check_existence("tag-check")


def test_responses_deserialize_into_the_sdk_models(azure_cloud, image_id):
    from azure.mgmt.compute import models

    group, name = azmod.split_id(image_id)
    raw = azure_cloud.client("compute").images.get(group, name, cls=lambda pipeline, body, headers: body)
    body = json.loads(json.dumps(raw.as_dict() if hasattr(raw, "as_dict") else raw))
    assert wire.model_problems(body, models.Image, request=False) == []
    assert models.Image(body).properties.storage_profile.os_disk.blob_uri.endswith("/existing.vhd")
    disk = {"osType": "Linux", "osState": "Generalized", "blobUri": 7}
    assert wire.model_problems(
        {"location": "westeurope", "properties": {"storageProfile": {"osDisk": disk}}}, models.Image
    ) == ["properties.storageProfile.osDisk.blobUri: 7 is not a string"]


# --- lifecycle -----------------------------------------------------------------------------------------


def test_create_records_first_and_teardown_removes_everything(azure_cloud, image_id, tmp_path):
    run = run_for(tmp_path)
    missing = ledger_before_create(azure_cloud, run)
    try:
        machine, context = create_only(target_for(azure_cloud, image_id), run)
    finally:
        azure_cloud.arm.hooks.clear()
    try:
        assert missing == [], "created before the ledger had it"
        kinds = [r.kind for r in run.ledger.entries()]
        assert kinds == [
            "resource-group",
            "virtual-network",
            "security-group",
            "public-ip",
            "network-interface",
            "disk",
            "vm",
        ]
        machine.wait_running(time.monotonic() + 20)
        vm = azure_cloud.arm.get(machine.resources[-1].data["id"])
        props = vm["properties"]
        assert base64.b64decode(props["osProfile"]["customData"]) == context.render()
        linux = props["osProfile"]["linuxConfiguration"]
        assert linux["disablePasswordAuthentication"] is True and "adminPassword" not in props["osProfile"]
        assert [k["keyData"] for k in linux["ssh"]["publicKeys"]] == [admin_key(run)]
        assert admin_key(run).startswith("ssh-rsa ") and rsa_bits(admin_key(run)) == 3072
        assert machine.key_file == run.key_file, "root logs in with the key the custom data's cloud-config carries"
        assert context.cloud_config()["ssh_authorized_keys"] == [run.public_key]
        assert props["diagnosticsProfile"]["bootDiagnostics"]["enabled"] is True
        assert vm["tags"]["cvmfx-run"] == run.id and vm["tags"]["project"] == "cernvm-fixtures-tests"
        nsg = azure_cloud.arm.get(machine.resources[2].data["id"])
        rules = [
            (
                r["properties"]["direction"],
                r["properties"]["access"],
                r["properties"]["protocol"],
                r["properties"]["destinationPortRange"],
                r["properties"]["sourceAddressPrefix"],
            )
            for r in nsg["properties"]["securityRules"]
        ]
        assert rules == [("Inbound", "Allow", "Tcp", "22", CIDR)]
        assert not machine.platform_address().startswith("127.")
    finally:
        machine.destroy()
    assert_nothing_left(azure_cloud, run)
    assert azure_cloud.arm.get(f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{machine.name}-rg") is None


def test_vhd_upload_as_page_blob_then_image_then_gone(azure_cloud, tmp_path):
    vhd = make_vhd(tmp_path / "ucernvm-prod.2021.05-1.cernvm.x86_64.vhd")
    run = run_for(tmp_path)
    machine, _ = create_only(target_for(azure_cloud, str(vhd), blob_endpoint=azure_cloud.blob_endpoint), run)
    try:
        blob = next(r for r in machine.resources if r.kind == "blob")
        assert blob.data["sent"] == 512 + 1536 + 512, "only the non-empty pages were sent"
        props = azure_cloud.blobs().get_blob_client(CONTAINER, blob.data["blob"]).get_blob_properties()
        assert props.blob_type == "PageBlob" and props.size == vhd.stat().st_size
        downloaded = azure_cloud.blobs().get_blob_client(CONTAINER, blob.data["blob"]).download_blob().readall()
        assert downloaded == vhd.read_bytes(), "the page blob is the VHD, byte for byte"
        image = azure_cloud.arm.get(next(r for r in machine.resources if r.kind == "image").data["id"])
        assert image["properties"]["storageProfile"]["osDisk"]["blobUri"] == blob.data["url"]
    finally:
        machine.destroy()
    assert_nothing_left(azure_cloud, run)


@pytest.mark.parametrize("roles", [set(), {"Storage Blob Data Reader"}])
def test_a_principal_without_the_blob_data_role_fails_before_the_upload_naming_the_role(
    azure_cloud, tmp_path, monkeypatch, roles
):
    """Azure RBAC: a principal with no data role, or a reader's only, gets 403 AuthorizationPermissionMismatch from
    the blob service; the pre-flight's 512-byte page blob meets it before any page of the VHD is sent."""
    from ..fakes.azure.fixtures import CLIENT

    monkeypatch.setitem(azure_cloud.roles.roles, CLIENT, roles)
    vhd = make_vhd(tmp_path / "ucernvm-prod.2021.05-1.cernvm.x86_64.vhd", mark=b"no role")
    sent: list[str] = []
    real = azmod.vhd.send_pages
    monkeypatch.setattr(azmod.vhd, "send_pages", lambda *a, **k: sent.append("pages") or real(*a, **k))
    run = run_for(tmp_path)
    message = (
        r"may not write blobs in container 'cernvm-images' of https://127\.0\.0\.1:\d+/devstoreaccount1 "
        r"\(HTTP 403 AuthorizationPermissionMismatch\): it needs the role \"Storage Blob Data Contributor\""
    )
    with pytest.raises(ProviderError, match=message):
        create_only(target_for(azure_cloud, str(vhd), blob_endpoint=azure_cloud.blob_endpoint), run)
    assert sent == [], "nothing of the VHD was sent"
    assert not [b for b in azure_cloud.blob_names() if "preflight" in b or b.endswith(".vhd") and "no role" in b]
    assert_nothing_left(azure_cloud, run)


def test_the_pre_flight_blob_is_made_and_deleted_before_the_upload(azure_cloud, tmp_path):
    """With the role, the pre-flight's page blob (512 bytes, recorded first like every upload) is made and deleted
    before the VHD's blob is created, and neither it nor its ledger entry is left."""
    vhd = make_vhd(tmp_path / "ucernvm-prod.2021.05-1.cernvm.x86_64.vhd", mark=b"pre-flight")
    run = run_for(tmp_path)
    azure_cloud.roles.requests.clear()
    machine, _ = create_only(target_for(azure_cloud, str(vhd), blob_endpoint=azure_cloud.blob_endpoint), run)
    try:
        writes = [(m, p.rsplit("/", 1)[1]) for m, p in azure_cloud.roles.requests if m in ("PUT", "DELETE")]
        probe = next(name for _, name in writes if name.startswith("preflight-"))
        upload = next(r for r in machine.resources if r.kind == "blob").data["blob"].rsplit("/", 1)[1]
        assert writes[:3] == [("PUT", probe), ("DELETE", probe), ("PUT", upload)], writes
        assert probe.endswith(f"-{machine.name}.vhd") and probe not in "".join(azure_cloud.blob_names())
        assert [r.kind for r in machine.resources].count("blob") == 1
    finally:
        machine.destroy()
    assert_nothing_left(azure_cloud, run)


# --- one upload per content: reuse, resume -----------------------------------------------------------


def vhd_target(cloud: AzureCloud, vhd: Path, **options) -> config.Target:
    return target_for(cloud, str(vhd), blob_endpoint=cloud.blob_endpoint, **options)


def content_blob(cloud: AzureCloud, path: Path, mark: bytes):
    """A VHD at ``path`` (its content marked with ``mark``), the blob client of the name its content gives it, and
    its SHA-256."""
    vhd = make_vhd(path, mark=mark)
    digest = hashlib.sha256(vhd.read_bytes()).hexdigest()
    return vhd, cloud.blobs().get_blob_client(CONTAINER, f"cernvm-fixtures/{digest}.vhd"), digest


def test_a_second_launch_of_the_same_vhd_reuses_the_image_and_uploads_nothing(azure_cloud, tmp_path):
    vhd, blob, digest = content_blob(azure_cloud, tmp_path / "same.vhd", b"reuse")
    run = run_for(tmp_path)
    first, _ = create_only(vhd_target(azure_cloud, vhd), run)
    second = None
    try:
        first.wait_running(time.monotonic() + 20)
        image = next(r for r in first.resources if r.kind == "image")
        assert azure_cloud.arm.get(image.data["id"])["tags"]["cvmfx-sha256"] == digest
        second, _ = create_only(vhd_target(azure_cloud, vhd), run)
        assert [r.kind for r in second.resources if r.kind in ("blob", "image")] == [], "made again, not reused"
        vm = azure_cloud.arm.get(next(r for r in second.resources if r.kind == "vm").data["id"])
        assert vm["properties"]["storageProfile"]["imageReference"]["id"] == image.data["id"]
        second.wait_running(time.monotonic() + 20)
        first.destroy()  # the image's maker deletes it; the VM made from it exists and no longer needs it
        assert azure_cloud.arm.get(image.data["id"]) is None and not blob.exists()
    finally:
        first.destroy()
        if second is not None:
            second.destroy()
    assert_nothing_left(azure_cloud, run)


def test_fake_refuses_an_image_delete_only_while_a_vm_is_provisioned_from_it(azure_cloud, tmp_path, monkeypatch):
    from azure.core.exceptions import HttpResponseError

    vhd = make_vhd(tmp_path / "inuse.vhd", mark=b"in use")
    run = run_for(tmp_path)
    monkeypatch.setattr(azure_cloud.arm, "polls", 20)  # operations take 20 polls of 0.05 s: the VM stays Creating
    machine, _ = create_only(vhd_target(azure_cloud, vhd), run)
    monkeypatch.setattr(azure_cloud.arm, "polls", 1)
    images = azure_cloud.client("compute").images
    try:
        group, name = azmod.split_id(next(r for r in machine.resources if r.kind == "image").data["id"])
        with pytest.raises(HttpResponseError, match="Operation 'Image Delete' is not allowed since the Virtual"):
            images.begin_delete(group, name).result()
        machine.wait_running(time.monotonic() + 20)
        images.begin_delete(group, name).result()
    finally:
        machine.destroy()
    assert_nothing_left(azure_cloud, run)


def test_a_blob_of_the_same_content_is_made_into_an_image_without_uploading(azure_cloud, tmp_path):
    vhd, blob, digest = content_blob(azure_cloud, tmp_path / "kept.vhd", b"kept blob")
    earlier = Resource(provider="azure", kind="blob", name="cvmfx-earlier", run="earlier", target="azure")
    blob.create_page_blob(vhd.stat().st_size, metadata=azmod.blob_metadata(earlier, digest, complete=True))
    blob.upload_page(vhd.read_bytes()[:512], offset=0, length=512)  # what the test reads back below
    blob.upload_page(vhd.read_bytes()[-512:], offset=vhd.stat().st_size - 512, length=512)  # what ARM reads
    run = run_for(tmp_path)
    try:
        machine, _ = create_only(vhd_target(azure_cloud, vhd), run)
        try:
            assert [r.kind for r in machine.resources if r.kind in ("blob", "image")] == ["image"]
            image = azure_cloud.arm.get(next(r for r in machine.resources if r.kind == "image").data["id"])
            through = blob.url.replace(azure_cloud.azurite.url, azure_cloud.roles.url)  # the provider's endpoint
            assert image["properties"]["storageProfile"]["osDisk"]["blobUri"] == through
        finally:
            machine.destroy()
        assert blob.exists(), "a blob the run did not make is left alone"
    finally:
        blob.delete_blob()
    assert_nothing_left(azure_cloud, run)


def test_an_upload_whose_uploader_was_killed_is_continued_where_it_stopped(azure_cloud, tmp_path):
    vhd, blob, digest = content_blob(azure_cloud, tmp_path / "resume.vhd", b"resume")
    gone = subprocess.Popen(["true"])
    gone.wait()
    earlier = Resource(
        provider="azure",
        kind="blob",
        name="cvmfx-earlier",
        run="earlier",
        target="azure",
        data={
            "account_url": azure_cloud.blob_endpoint,
            "container": CONTAINER,
            "blob": blob.blob_name,
            "instance_discovery": False,
        },
        owner=Owner(socket.gethostname(), gone.pid, "1", machine_identity()),
    )
    blob.create_page_blob(vhd.stat().st_size, metadata=azmod.blob_metadata(earlier, digest))
    blob.upload_page(vhd.read_bytes()[:512], offset=0, length=512)  # the killed upload got this far
    run = run_for(tmp_path)
    machine, _ = create_only(vhd_target(azure_cloud, vhd), run)
    try:
        entry = next(r for r in machine.resources if r.kind == "blob")
        assert entry.data["sent"] == 1536 + 512, "the page the killed upload wrote was sent again"
        assert blob.download_blob().readall() == vhd.read_bytes(), "the continued blob is the VHD, byte for byte"
        meta = blob.get_blob_properties().metadata
        assert (meta["cvmfx_run"], meta["cvmfx_complete"]) == (run.id, "true")
        AzureProvider.destroy_resource(earlier)  # the killed run's sweep: the blob is no longer its own
        assert blob.exists(), "the killed run's ledger entry deleted a blob another run took over"
    finally:
        machine.destroy()
    assert not blob.exists()
    assert_nothing_left(azure_cloud, run)


def test_an_upload_error_the_sdk_did_not_cure_is_continued(azure_cloud, tmp_path, monkeypatch):
    from azure.core.exceptions import ServiceResponseError
    from azure.storage.blob import BlobClient

    vhd, blob, _ = content_blob(azure_cloud, tmp_path / "flaky.vhd", b"flaky")
    real, offsets = BlobClient.upload_page, []

    def flaky(self, page, offset, length, **kwargs):
        offsets.append(offset)
        if len(offsets) == 2:
            raise ServiceResponseError("Connection reset by peer (injected)")
        return real(self, page, offset, length, **kwargs)

    monkeypatch.setattr(BlobClient, "upload_page", flaky)
    run = run_for(tmp_path)
    machine, _ = create_only(vhd_target(azure_cloud, vhd), run)
    try:
        size = vhd.stat().st_size
        assert offsets == [0, 1024 * 1024, 1024 * 1024, size - 512], "not continued after the written page"
        assert blob.download_blob().readall() == vhd.read_bytes()
    finally:
        machine.destroy()
    assert_nothing_left(azure_cloud, run)


def test_an_upload_another_live_machine_is_making_is_waited_for_then_a_clear_error(azure_cloud, tmp_path):
    vhd, blob, digest = content_blob(azure_cloud, tmp_path / "busy.vhd", b"busy")
    uploading = Resource(provider="azure", kind="blob", name="cvmfx-uploading", run="uploading", target="azure")
    metadata = azmod.blob_metadata(uploading, digest)  # its uploader: this process, alive
    blob.create_page_blob(vhd.stat().st_size, metadata=metadata)
    run = run_for(tmp_path)
    try:
        with pytest.raises(ProviderError, match=r"the upload of blob cernvm-fixtures/\w+\.vhd for busy.vhd is still"):
            create_only(vhd_target(azure_cloud, vhd, share_timeout=0.5), run)
        assert blob.get_blob_properties().metadata == metadata, "the live uploader's blob was taken over"
    finally:
        blob.delete_blob()
    assert_nothing_left(azure_cloud, run)


@pytest.mark.attack_row("a planted upload", "azure")
def test_a_planted_blob_named_by_the_content_is_not_trusted(azure_cloud, tmp_path):
    """Issue 26.4: the blob's name and digest are public; a complete-looking blob without this key's mark (planted,
    or whose "owner" looks dead) is neither reused nor taken over: a clear error, nothing created."""
    vhd, blob, digest = content_blob(azure_cloud, tmp_path / "planted.vhd", b"planted")
    blob.create_page_blob(vhd.stat().st_size, metadata={"cvmfx_sha256": digest, "cvmfx_complete": "true"})
    run = run_for(tmp_path)
    try:
        with pytest.raises(ProviderError, match="no mark of this key: .* pages are not trusted; it was left alone"):
            create_only(vhd_target(azure_cloud, vhd), run)
        assert blob.get_blob_properties().metadata["cvmfx_complete"] == "true", "left alone"
    finally:
        blob.delete_blob()
    assert_nothing_left(azure_cloud, run)


def test_a_silent_upload_of_another_machine_is_taken_over_and_verified(azure_cloud, tmp_path, monkeypatch):
    """Issue 26.4: an uploader on another machine cannot be asked whether it lives; one whose blob has had no page
    written for UPLOAD_STALE is taken over (instead of waiting share_timeout and failing), and what it wrote is
    read back and checked against the content's digest before the blob is used."""
    from cernvm_fixtures.providers.azure import vhd as vhd_module

    vhd, blob, digest = content_blob(azure_cloud, tmp_path / "silent.vhd", b"silent")
    elsewhere = Resource(
        provider="azure",
        kind="blob",
        name="cvmfx-elsewhere",
        run="elsewhere",
        target="azure",
        owner=Owner("another-host", 4242, "1", "another-machine-id"),
    )
    blob.create_page_blob(vhd.stat().st_size, metadata=azmod.blob_metadata(elsewhere, digest))
    blob.upload_page(b"\xff" * 512, offset=0, length=512)  # what it wrote is not the file's first page
    monkeypatch.setattr(vhd_module, "UPLOAD_STALE", 0.0)
    run = run_for(tmp_path)
    with pytest.raises(ProviderError, match="reads back as sha256 .* pages the earlier uploader wrote differ"):
        create_only(vhd_target(azure_cloud, vhd), run)
    assert not blob.exists(), "the taken-over blob that failed its check was removed, never made into an image"
    blob.create_page_blob(vhd.stat().st_size, metadata=azmod.blob_metadata(elsewhere, digest))
    blob.upload_page(vhd.read_bytes()[:512], offset=0, length=512)  # now what it wrote is right
    machine, _ = create_only(vhd_target(azure_cloud, vhd), run)
    try:
        assert blob.get_blob_properties().metadata["cvmfx_complete"] == "true"
    finally:
        machine.destroy()
    assert_nothing_left(azure_cloud, run)


@pytest.mark.attack_row("a planted upload", "azure")
def test_an_image_tagged_with_the_digest_but_not_marked_is_not_booted(azure_cloud, tmp_path):
    """Issue 26.4: the digest tag is public; an image in the subscription carrying it without this key's mark is
    passed over, and the run makes its own image."""
    from azure.mgmt.compute import models

    vhd, blob, digest = content_blob(azure_cloud, tmp_path / "tagged.vhd", b"tagged")
    theirs = azure_cloud.blobs().get_blob_client(CONTAINER, "theirs.vhd")
    theirs.create_page_blob(vhd.stat().st_size)
    theirs.upload_page(vhd.read_bytes()[-512:], offset=vhd.stat().st_size - 512, length=512)
    azure_cloud.client("resource").resource_groups.create_or_update("their-images", {"location": "westeurope"})
    image = models.Image(
        location="westeurope",
        tags={"cvmfx-sha256": digest},
        properties=models.ImageProperties(
            storage_profile=models.ImageStorageProfile(
                os_disk=models.ImageOSDisk(os_type="Linux", os_state="Generalized", blob_uri=theirs.url)
            )
        ),
    )
    azure_cloud.client("compute").images.begin_create_or_update("their-images", "their-image", image).result()
    run = run_for(tmp_path)
    machine = None
    try:
        machine, _ = create_only(vhd_target(azure_cloud, vhd), run)
        vm = azure_cloud.arm.get(next(r for r in machine.resources if r.kind == "vm").data["id"])
        assert "their-image" not in vm["properties"]["storageProfile"]["imageReference"]["id"]
        assert [r.kind for r in machine.resources if r.kind == "image"] == ["image"], "its own image"
    finally:
        if machine is not None:
            machine.destroy()
        azure_cloud.client("resource").resource_groups.begin_delete("their-images").result()
        theirs.delete_blob()
    assert_nothing_left(azure_cloud, run)


def test_a_blob_of_that_name_with_other_content_is_left_alone(azure_cloud, tmp_path):
    vhd, blob, _ = content_blob(azure_cloud, tmp_path / "clash.vhd", b"clash")
    blob.create_page_blob(vhd.stat().st_size, metadata={"cvmfx_sha256": "0" * 64})
    run = run_for(tmp_path)
    try:
        with pytest.raises(ProviderError, match="exists but does not hold clash.vhd"):
            create_only(vhd_target(azure_cloud, vhd), run)
        assert blob.get_blob_properties().metadata["cvmfx_sha256"] == "0" * 64
    finally:
        blob.delete_blob()
    assert_nothing_left(azure_cloud, run)


@pytest.mark.parametrize(
    "problem, message",
    [
        ("dynamic", "is a dynamic VHD; Azure takes fixed-size VHDs only"),
        ("no footer", "has no VHD footer"),
        ("odd size", "is not a whole number of MiB"),
        ("checksum", r"has footer checksum 0x[0-9a-f]{8}, not 0x[0-9a-f]{8} \(a damaged footer\)"),
    ],
)
def test_bad_vhd_is_a_clear_error_before_anything_exists(azure_cloud, tmp_path, problem, message):
    vhd = tmp_path / "bad.vhd"
    if problem == "dynamic":
        make_vhd(vhd, fixed=False)
    elif problem == "no footer":
        vhd.write_bytes(b"\1" * (2 * 1024 * 1024 + 512))
    elif problem == "checksum":
        data = bytearray(make_vhd(vhd).read_bytes())
        data[-512 + 100] ^= 0xFF
        vhd.write_bytes(bytes(data))
    else:
        make_vhd(vhd, size=2 * 1024 * 1024 - 512)
    run = run_for(tmp_path)
    with pytest.raises(ConfigError, match=message):
        create_only(target_for(azure_cloud, str(vhd), blob_endpoint=azure_cloud.blob_endpoint), run)
    assert run.ledger.entries() == []


@pytest.mark.parametrize(
    "problem, message",
    [
        (
            "no footer",
            r"cookie value in VHD footer indicates that disk 'bad-no footer\.vhd' with blob https://\S+ "
            r"is not a supported VHD\. Disk is expected to have cookie value 'conectix'\.",
        ),
        ("dynamic", r"^Only blobs formatted as VHDs can be imported\.$"),
        ("odd size", r"has an unsupported virtual size of 2096640 bytes\.  The size must be a whole number \(in MBs\)"),
        ("checksum", r"^Only blobs formatted as VHDs can be imported\.$"),
        ("good", None),
    ],
)
def test_fake_makes_images_only_of_fixed_vhds_read_from_the_blob(azure_cloud, image_id, tmp_path, problem, message):
    """Image creation reads the blob's footer from Azurite (not only that it exists) and answers as Azure does."""
    from azure.core.exceptions import HttpResponseError
    from azure.mgmt.compute import models

    vhd = tmp_path / "bad.vhd"
    if problem == "no footer":
        vhd.write_bytes(b"\1" * (2 * 1024 * 1024 + 512))
    else:
        make_vhd(vhd, fixed=problem != "dynamic", size=2 * 1024 * 1024 - 512 if problem == "odd size" else None)
    if problem == "checksum":
        data = bytearray(vhd.read_bytes())
        data[-512 + 100] ^= 0xFF  # a reserved byte of the footer: only the checksum can tell
        vhd.write_bytes(bytes(data))
    blob = azure_cloud.blobs().get_blob_client(CONTAINER, f"bad-{problem}.vhd")
    blob.create_page_blob(vhd.stat().st_size)
    blob.upload_page(vhd.read_bytes()[-512:], offset=vhd.stat().st_size - 512, length=512)
    image = models.Image(
        location="westeurope",
        properties=models.ImageProperties(
            storage_profile=models.ImageStorageProfile(
                os_disk=models.ImageOSDisk(os_type="Linux", os_state="Generalized", blob_uri=blob.url)
            )
        ),
    )
    images = azure_cloud.client("compute").images
    try:
        if message is None:
            made = images.begin_create_or_update(IMAGE_GROUP, "footer-check", image).result()
            assert made.provisioning_state == "Succeeded"
            images.begin_delete(IMAGE_GROUP, "footer-check").result()
            return
        with pytest.raises(HttpResponseError) as refused:
            images.begin_create_or_update(IMAGE_GROUP, "footer-check", image)
        assert (refused.value.status_code, refused.value.error.code) == (400, "InvalidParameter")
        assert re.search(message, refused.value.error.message), refused.value.error.message
    finally:
        blob.delete_blob()


# --- failures ------------------------------------------------------------------------------------------


def test_quota_exceeded_is_reported_and_nothing_is_left(azure_cloud, image_id, tmp_path):
    azure_cloud.arm.faults.cores = 1
    run = run_for(tmp_path)
    try:
        with pytest.raises(ProviderError, match="OperationNotAllowed: .*exceeding approved Total Regional Cores"):
            create_only(target_for(azure_cloud, image_id), run)
    finally:
        azure_cloud.arm.faults.cores = 100
    assert_nothing_left(azure_cloud, run)


def test_size_not_offered_is_a_config_error_before_anything_exists(azure_cloud, image_id, tmp_path):
    run = run_for(tmp_path)
    with pytest.raises(ConfigError, match="vm_size: 'Standard_NC96' is not offered in westeurope"):
        create_only(target_for(azure_cloud, image_id, vm_size="Standard_NC96"), run)
    assert run.ledger.entries() == []


def test_sku_not_available_at_create_is_reported(azure_cloud, image_id, tmp_path, monkeypatch):
    monkeypatch.setattr(AzureProvider, "check_size", lambda self: None)
    run = run_for(tmp_path)
    with pytest.raises(ProviderError, match="SkuNotAvailable"):
        create_only(target_for(azure_cloud, image_id, vm_size="Standard_NC96"), run)
    assert_nothing_left(azure_cloud, run)


def test_a_guest_that_never_reports_ready_ends_os_provisioning_timed_out(azure_cloud, image_id, tmp_path, monkeypatch):
    """No guest reports ready (none boots): the create stays in progress until the fake's provisioning time-out, then
    ends OSProvisioningTimedOut with Azure's message; readiness stops at once with what that means for a CernVM
    image, and nothing is left."""
    monkeypatch.setattr(azure_cloud.arm, "guest", None)
    monkeypatch.setattr(azure_cloud.arm, "provisioning_timeout", 2)
    run = run_for(tmp_path)
    started = time.monotonic()
    with pytest.raises(ReadinessError) as failed:
        launch(target_for(azure_cloud, image_id), run)
    message = str(failed.value)
    assert "provisioning failed: OSProvisioningTimedOut: OS Provisioning for VM 'cvmfx-" in message, message
    assert "did not finish in the allotted time" in message and PROVISIONING_TIMED_OUT in message, message
    assert time.monotonic() - started < 20, "failed at the fake's time-out, not at the harness's running deadline"
    assert azure_cloud.arm.wireservers == {}, "the VM's WireServer outlived the VM"
    assert_nothing_left(azure_cloud, run)


def test_a_running_deadline_before_azures_time_out_says_what_the_create_waits_for(
    azure_cloud, image_id, tmp_path, monkeypatch
):
    """The harness's running deadline passes while Azure still waits for the guest: the error says so."""
    monkeypatch.setattr(azure_cloud.arm, "guest", None)
    run = run_for(tmp_path)
    deadlines = {"running": 1, "reachable": 10, "login": 10, "ready": 10}
    with pytest.raises(ProviderError, match=r"still InProgress \(Azure ends a VM's creation when its guest reports"):
        launch(target_for(azure_cloud, image_id, deadlines=deadlines), run)
    assert_nothing_left(azure_cloud, run)


def test_a_malformed_health_report_is_refused_and_the_vm_stays_creating(azure_cloud, image_id, tmp_path, monkeypatch):
    """The VM's WireServer serves its goal state and refuses (400) a report that is not well formed or names
    another container: the VM stays Creating, its create operation in progress; the guest's Ready report ends
    it Succeeded."""
    monkeypatch.setattr(azure_cloud.arm, "guest", None)
    run = run_for(tmp_path)
    machine, _ = create_only(target_for(azure_cloud, image_id), run)
    try:
        vm_id = next(r for r in machine.resources if r.kind == "vm").data["id"]
        server = azure_cloud.arm.wireservers[vm_id.lower()]
        url = f"http://127.0.0.1:{server.port}"
        request = urllib.request.Request(f"{url}/machine/?comp=goalstate", headers=HEADERS)
        goal = read_goal_state(urllib.request.urlopen(request, timeout=10).read())
        wrong = health_report(goal).replace(goal.container_id.encode(), b"another-container")
        for body in (b"<Health><Container>", wrong):
            post = urllib.request.Request(f"{url}/machine?comp=health", data=body, headers=HEADERS)
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(post, timeout=10)
            assert refused.value.code == 400
        assert "not well-formed XML" in server.refused[0] and "'another-container'" in server.refused[1]
        time.sleep(0.5)  # the SDK's poller reads the operation every 0.05 s
        compute = azure_cloud.client("compute")
        assert compute.virtual_machines.get(machine.group, machine.name).provisioning_state == "Creating"
        assert not machine.poller.done() and machine.platform_state().running is False
        assert report_ready(url) == 200
        machine.wait_running(time.monotonic() + 20)
        assert compute.virtual_machines.get(machine.group, machine.name).provisioning_state == "Succeeded"
    finally:
        machine.destroy()
    assert_nothing_left(azure_cloud, run)


def test_nsg_still_in_use_on_delete_is_retried(azure_cloud, image_id, tmp_path, monkeypatch):
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    run = run_for(tmp_path)
    machine, _ = create_only(target_for(azure_cloud, image_id), run)
    azure_cloud.arm.faults.nsg_busy = 2
    machine.destroy()
    assert azure_cloud.arm.faults.nsg_busy == 0, "both refusals were seen and retried"
    assert_nothing_left(azure_cloud, run)


def test_leftovers_are_found_by_tags_alone_and_swept(azure_cloud, image_id, tmp_path):
    run = run_for(tmp_path)
    machine, _ = create_only(target_for(azure_cloud, image_id), run)
    target = target_for(azure_cloud, image_id)
    found = AzureProvider.leftovers(target, set())
    ours = sorted((r for r in found if r.run == run.id), key=teardown_key, reverse=True)  # as sweep orders them
    assert [r.kind for r in ours] == [
        "vm",
        "network-interface",
        "public-ip",
        "security-group",
        "virtual-network",
        "resource-group",
    ]
    assert AzureProvider.leftovers(target, {machine.name}) == [r for r in found if r.name != machine.name]
    for resource in ours:
        AzureProvider.destroy_resource(resource)
    for resource in list(machine.resources):
        run.ledger.forget(resource)
    assert azure_cloud.arm.tagged("cvmfx-run", run.id) == []
    machine.destroy()  # idempotent: everything is gone already


@pytest.mark.attack_row("forged tags on a foreign resource", "azure")
def test_sweep_leaves_foreign_groups_and_resources_that_carry_our_tags(azure_cloud, image_id, tmp_path):
    """Issue 26.2: whoever may set tags (Azure's Tag Contributor) copies a machine's tags onto their own group and
    network security group, or invents a group named like ours: sweep lists none of them, only the real ones."""
    run = run_for(tmp_path)
    machine, _ = create_only(target_for(azure_cloud, image_id), run)
    groups = azure_cloud.client("resource").resource_groups
    group_tags = groups.get(f"{machine.name}-rg").tags
    network = azure_cloud.client("network")
    nsg_tags = network.network_security_groups.get(f"{machine.name}-rg", f"{machine.name}-nsg").tags
    invented = {k: v for k, v in group_tags.items() if k != "cvmfx-mark"}
    lookalike = machine.name[:-4] + "0000"
    try:
        groups.create_or_update("their-project", {"location": "westeurope", "tags": group_tags})
        groups.create_or_update(
            f"{lookalike}-rg", {"location": "westeurope", "tags": {**invented, "cvmfx-name": lookalike}}
        )
        network.network_security_groups.begin_create_or_update(
            "their-project", "their-firewall", {"location": "westeurope", "tags": nsg_tags}
        ).result()
        network.network_security_groups.begin_create_or_update(
            "their-project", f"{machine.name}-nsg", {"location": "westeurope", "tags": nsg_tags}
        ).result()
        found = AzureProvider.leftovers(target_for(azure_cloud, image_id), set())
        ids = sorted(r.data["id"] for r in found if r.run == run.id)
        assert not [i for i in ids if "their-" in i or lookalike in i], ids
        assert f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{machine.name}-rg" in ids
        assert len([r for r in found if r.run == run.id]) == 6, "every real resource is still found"
    finally:
        groups.begin_delete("their-project").result()
        groups.begin_delete(f"{lookalike}-rg").result()
        machine.destroy()
    assert_nothing_left(azure_cloud, run)


def test_an_existing_subnet_and_a_private_address(azure_cloud, image_id, tmp_path):
    """Issue 27, options never exercised before: ``subnet_id`` puts the NIC on the user's subnet (no network of the
    machine's own is made, and the user's is left alone at teardown); ``address = "private"`` makes no public IP and
    reaches the VM at its NIC's private address."""
    from azure.mgmt.network import models

    network = azure_cloud.client("network")
    azure_cloud.client("resource").resource_groups.create_or_update("shared-net", {"location": "westeurope"})
    vnet = models.VirtualNetwork(
        location="westeurope",
        address_space=models.AddressSpace(address_prefixes=["10.88.0.0/16"]),
        subnets=[models.Subnet(name="runners", address_prefix="10.88.1.0/24")],
    )
    made = network.virtual_networks.begin_create_or_update("shared-net", "shared", vnet).result()
    subnet_id = made.subnets[0].id
    run = run_for(tmp_path)
    machine, _ = create_only(target_for(azure_cloud, image_id, subnet_id=subnet_id, address="private"), run)
    try:
        kinds = {r.kind for r in machine.resources}
        assert "virtual-network" not in kinds and "public-ip" not in kinds, kinds
        nic = network.network_interfaces.get(f"{machine.name}-rg", f"{machine.name}-nic")
        config = nic.ip_configurations[0]
        assert config.subnet.id == subnet_id and config.public_ip_address is None
        machine.wait_running(time.monotonic() + 20)
        assert machine.platform_address() == config.private_ip_address
    finally:
        machine.destroy()
    assert network.virtual_networks.get("shared-net", "shared").id == made.id, "the user's network is left alone"
    azure_cloud.client("resource").resource_groups.begin_delete("shared-net").result()
    assert_nothing_left(azure_cloud, run)


GALLERY = "cernvm_images"
"""A Compute Gallery an operator publishes CernVM in (the provider never makes one: it only boots from it)."""


@pytest.fixture(scope="module")
def gallery_version(azure_session: AzureCloud, image_id: str) -> str:
    """The id of a gallery image version, made from the managed image through the SDK as an operator would, replicated
    to westeurope; its image definition holds a second version replicated to northeurope only (not the latest)."""
    from azure.mgmt.compute import models

    compute = azure_session.client("compute")
    compute.galleries.begin_create_or_update(IMAGE_GROUP, GALLERY, models.Gallery(location="westeurope")).result()
    identifier = models.GalleryImageIdentifier(publisher="cern", offer="cernvm", sku="4")
    definition = models.GalleryImageProperties(
        os_type="Linux", os_state="Generalized", hyper_v_generation="V1", identifier=identifier
    )
    compute.gallery_images.begin_create_or_update(
        IMAGE_GROUP, GALLERY, "cernvm-4", models.GalleryImage(location="westeurope", properties=definition)
    ).result()

    def version(name: str, region: str) -> str:
        properties = models.GalleryImageVersionProperties(
            storage_profile=models.GalleryImageVersionStorageProfile(
                source=models.GalleryArtifactVersionFullSource(id=image_id)
            ),
            publishing_profile=models.GalleryImageVersionPublishingProfile(
                target_regions=[models.TargetRegion(name=region)]
            ),
        )
        made = compute.gallery_image_versions.begin_create_or_update(
            IMAGE_GROUP,
            GALLERY,
            "cernvm-4",
            name,
            models.GalleryImageVersion(location="westeurope", properties=properties),
        )
        return made.result().id

    version("2020.1.1", "northeurope")
    return version("2020.4.1", "westeurope")


@pytest.mark.parametrize("which", ["version", "definition"])
def test_a_vm_boots_from_a_gallery_image_which_is_never_deleted_or_swept(azure_cloud, gallery_version, which, tmp_path):
    """Issue 27, an option never exercised: ``image`` naming a Compute Gallery image version (or its definition:
    the latest version) is the VM's imageReference, nothing is uploaded, and nothing of the gallery is deleted at
    teardown or listed by the sweep (it carries no mark: the run did not make it)."""
    image = gallery_version if which == "version" else gallery_version.rsplit("/versions/", 1)[0]
    compute = azure_cloud.client("compute")
    run = run_for(tmp_path)
    machine, _ = create_only(target_for(azure_cloud, image), run)
    try:
        assert {r.kind for r in machine.resources}.isdisjoint({"image", "blob"}), "nothing uploaded or imaged"
        vm = compute.virtual_machines.get(f"{machine.name}-rg", machine.name)
        assert vm.storage_profile.image_reference.id == image
        found = AzureProvider.leftovers(target_for(azure_cloud, image), set())
        assert not [r for r in found if "/galleries/" in str(r.data.get("id", "")).lower()], found
    finally:
        machine.destroy()
    assert_nothing_left(azure_cloud, run)
    deletes = [path for method, path, _ in azure_cloud.arm.requests if method == "DELETE" and "/galleries/" in path]
    assert deletes == []
    assert compute.gallery_image_versions.get(IMAGE_GROUP, GALLERY, "cernvm-4", "2020.4.1").id == gallery_version


@pytest.mark.parametrize("version", ["9.9.9", "2020.1.1"], ids=["missing", "not-replicated-here"])
def test_a_gallery_image_the_location_does_not_have_is_refused_naming_it(
    azure_cloud, gallery_version, version, tmp_path
):
    """A VM from a gallery image version that does not exist, or is not replicated to the VM's location, is refused
    with Azure's GalleryImageNotFound naming the id; nothing is left."""
    image = gallery_version.rsplit("/", 1)[0] + "/" + version
    match = f"GalleryImageNotFound: The gallery image {re.escape(image)} is not available in westeurope region"
    assert_launch_fails(tmp_path, azure_cloud, target_for(azure_cloud, image), ProviderError, match)


@pytest.mark.parametrize(
    "tail, message",
    [
        (
            "galleries/my-gallery/images/cernvm-4/versions/1.0.0",
            "the gallery name 'my-gallery' is not valid; Azure takes",
        ),
        ("galleries/g/images/cernvm-4-/versions/1.0.0", "the image definition name 'cernvm-4-' is not valid"),
        ("galleries/g/images/cernvm-4/versions/latest", "the version 'latest' is not valid; Azure takes <major>"),
        ("galleries/g/images/cernvm-4/versions", "is not a managed image id (/subscriptions/<id>/resourceGroups/"),
        ("galleries/g/cernvm-4", "or a Compute Gallery image id (.../providers/Microsoft.Compute/galleries/<gallery>"),
    ],
)
def test_a_malformed_gallery_image_id_is_refused_at_load(azure_cloud, tail, message):
    image = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{IMAGE_GROUP}/providers/Microsoft.Compute/{tail}"
    with pytest.raises(ConfigError) as refused:
        target_for(azure_cloud, image)
    assert str(refused.value).startswith("test: targets.azure.image: ") and message in str(refused.value)


def test_keep_tags_the_resources_kept(azure_cloud, tmp_path):
    vhd, blob, _ = content_blob(azure_cloud, tmp_path / "kept.vhd", b"kept machine")
    run = run_for(tmp_path)
    machine, _ = create_only(vhd_target(azure_cloud, vhd), run)
    try:
        machine.keep()
        tagged = {rid.lower() for rid in azure_cloud.arm.tagged("cvmfx-kept", "true")}
        ids = {r.data["id"].lower() for r in machine.resources if r.kind not in ("disk", "blob")}
        assert tagged == ids and len(ids) == 7, "the disk has no tags; the blob has metadata"
        assert blob.get_blob_properties().metadata["cvmfx_kept"] == "true"
        vm = azure_cloud.arm.get(next(r for r in machine.resources if r.kind == "vm").data["id"])
        assert vm["tags"]["project"] == "cernvm-fixtures-tests", "the user's tags stay"
        found = [r for r in AzureProvider.leftovers(vhd_target(azure_cloud, vhd), set()) if r.run == run.id]
        expires = max(r.expires for r in run.ledger.entries())
        assert len(found) == 8 and all(r.kept and r.expires == pytest.approx(expires, abs=1) for r in found)
        assert all(r.kept and "login" in r.data for r in run.ledger.entries())
    finally:
        machine.destroy()
    assert_nothing_left(azure_cloud, run)


def test_an_uploaded_vhd_is_found_by_its_metadata_alone_and_swept(azure_cloud, tmp_path):
    vhd, blob, _ = content_blob(azure_cloud, tmp_path / "swept.vhd", b"swept")
    run = run_for(tmp_path)
    machine, _ = create_only(vhd_target(azure_cloud, vhd), run)
    target = vhd_target(azure_cloud, vhd)
    found = [r for r in AzureProvider.leftovers(target, set()) if r.run == run.id and r.kind == "blob"]
    assert [(r.name, r.data["blob"]) for r in found] == [(machine.name, blob.blob_name)]
    assert found[0].owner == next(r for r in machine.resources if r.kind == "blob").owner
    assert not [r for r in AzureProvider.leftovers(target, {machine.name}) if r.kind == "blob" and r.run == run.id]
    for resource in AzureProvider.leftovers(target, set()):
        if resource.run == run.id:
            AzureProvider.destroy_resource(resource)
    assert not blob.exists() and azure_cloud.arm.tagged("cvmfx-run", run.id) == []
    for resource in list(machine.resources):
        run.ledger.forget(resource)
    machine.destroy()


# --- SSH through a KVM stand-in, host keys from the serial log -----------------------------------------


def test_lifecycle_over_ssh_with_host_keys_from_the_serial_log(azure_cloud, image_id, standin, tmp_path):
    run = run_for(tmp_path, standin, cloud=azure_cloud)
    instance = launch(target_for(azure_cloud, image_id), run)
    try:
        assert instance.run("hostname").stdout.strip() == standin.name, "SSH went through the endpoint hook"
        assert instance.transport.verified is True, "the host key matched the serial log's block"
        assert "Linux version" in instance.console_log(), "retrieve_boot_diagnostics_data -> serial log"
        assert "UserKnownHostsFile" in instance.login_command and "127.0.0.1" in instance.login_command
        assert {k: instance.machine.traits[k] for k in ("provider", "kind", "vm_size", "location")} == {
            "provider": "azure",
            "kind": "vm",
            "vm_size": "Standard_B2s",
            "location": "westeurope",
        }
    finally:
        instance.destroy()
    assert_nothing_left(azure_cloud, run)


def test_an_x509_certificate_is_the_source_of_the_ssh_key(azure_cloud, image_id, standin, tmp_path):
    """CernVM's Azure recipe: the VM gets the public key of a certificate made from the user's SSH key, and the
    harness logs in with that key (RSA here), not the run's own."""
    cert, key = make_certificate(tmp_path / "user")
    held: list[str] = []

    def endpoint(machine, host, port):
        vm = azure_cloud.arm.get(next(r for r in machine.resources if r.kind == "vm").data["id"])
        held[:] = [k["keyData"] for k in vm["properties"]["osProfile"]["linuxConfiguration"]["ssh"]["publicKeys"]]
        standin.run(f"printf '%s\\n' {shlex.quote(held[0])} >> /root/.ssh/authorized_keys")  # the key the VM holds
        azure_cloud.arm.consoles[machine.name.lower()] = standin.console_log
        return "127.0.0.1", standin.machine.ssh_port

    run = Run(state=tmp_path / "state", endpoint=endpoint)  # its own key is not one the stand-in knows
    target = target_for(azure_cloud, image_id, ssh_certificate=str(cert), ssh_key=str(key))
    try:
        instance = launch(target, run)
        try:
            assert held == [azmod.certificate_public_key(str(cert))] and held[0].startswith("ssh-rsa ")
            assert instance.run("hostname").stdout.strip() == standin.name
            assert f"-i {key}" in instance.login_command and str(run.key_file) not in instance.login_command
        finally:
            instance.destroy()
    finally:
        if held:
            keys = "/root/.ssh/authorized_keys"
            standin.run(f"grep -vxF {shlex.quote(held[0])} {keys} > /tmp/keys; cat /tmp/keys > {keys}")
    assert_nothing_left(azure_cloud, run)


def test_boot_diagnostics_screenshot_is_the_standins_screen(azure_cloud, image_id, standin, tmp_path):
    """Boot diagnostics' screenshot (a blob behind a SAS URI, which the fake serves as a BMP of the stand-in's real
    screen, in process or through its test hook for a stand-in of another process) becomes a PNG of its size."""
    import requests

    from ..clouds import assert_standin_screen

    run = Run(state=tmp_path / "state")
    machine, _ = create_only(target_for(azure_cloud, image_id), run)
    try:
        key = machine.name.lower()
        with pytest.raises(ScreenUnavailable, match="the boot diagnostics screenshot: HTTP 404"):
            machine.screenshot(tmp_path / "none.png")
        azure_cloud.arm.screens[key] = standin.machine.screenshot
        assert_standin_screen(machine.screenshot(tmp_path / "live.png"))
        del azure_cloud.arm.screens[key]
        hook = f"{azure_cloud.url}/_test/screen/{machine.name}"
        assert requests.put(hook, json={"domain": standin.name}, timeout=10).status_code == 204
        (entry,) = [r for r in machine.resources if r.kind == "vm"]
        assert_standin_screen(AzureProvider.screenshot_resource(entry, tmp_path / "from-ledger.png"))
    finally:
        machine.destroy()
    assert_nothing_left(azure_cloud, run)


def test_a_host_key_the_serial_log_did_not_announce_is_refused(azure_cloud, image_id, standin, tmp_path):
    from ..clouds import assert_forged_host_key_refused

    target = target_for(azure_cloud, image_id, deadlines={"running": 20, "reachable": 30, "login": 5, "ready": 10})
    assert_forged_host_key_refused(tmp_path, azure_cloud, standin, target)


# --- sweep after SIGKILL -------------------------------------------------------------------------------


@pytest.mark.parametrize("ledger", ["kept", "lost"])
def test_sweep_removes_what_a_killed_run_left(azure_cloud, image_id, tmp_path, ledger):
    state = tmp_path / "state"
    cfg = config_file(tmp_path / "cernvm.toml", azure_cloud, image_id)
    run_id = killed_launch(cfg, subprocess_env(state))
    assert len(azure_cloud.arm.tagged("cvmfx-run", run_id)) == 6
    assert len(ledger_entries(state)) == 7
    sweep = sweep_killed(cfg, state, lose_ledger=ledger == "lost")
    assert azure_cloud.arm.tagged("cvmfx-run", run_id) == [], sweep.stdout
    assert ledger_entries(state) == [] and not list(state.glob("runs/*"))
    order = re.findall(r"destroyed azure (\S+)", sweep.stdout)
    assert (
        order.index("vm")
        < order.index("network-interface")
        < order.index("security-group")
        < order.index("virtual-network")
        < order.index("resource-group")
    ), sweep.stdout


# --- the scenario suite end to end: the fake + one stand-in per VM, booted from the fake's custom data ---


def test_the_appliance_reports_ready_only_with_its_context_from_azures_provisioning_disc():
    """As CernVM 4's cloud-init reports ready only when µCernVM found its context on Azure's provisioning disc, the
    appliance booted from an Azure-shaped disc reports to the WireServer forwarded to it; from a config drive, with the
    same forward, it never does (such a VM would end OSProvisioningTimedOut). Both boot at once."""
    from ..standins import WIRESERVER, StandIns, standin_target

    media = ("azure", "config-drive")
    servers = {m: WireServer(goal=GoalState(str(uuid.uuid4()), f"0._cvmfx-{m}")).start() for m in media}
    standins = StandIns()
    booted = {}
    try:
        for medium, server in servers.items():
            target = standin_target(
                "azure stand-in",
                context_medium=medium,
                guest_forwards={WIRESERVER: server.port},
                kernel_args=f"console=ttyS0 cvmfx_wireserver={WIRESERVER}",
            )
            booted[medium] = standins.launch(target, f"#cloud-config\nhostname: cvmfx-{medium}\n".encode())
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not all(
            "contextualization complete" in b.console_log() for b in booted.values()
        ):
            time.sleep(1)
        servers["azure"].ready.wait(30)
        time.sleep(10)  # the config drive's guest would have reported by now: the Azure one did within seconds
        for medium, standin in booted.items():
            console, server = standin.console_log(), servers[medium]
            source = "Azure" if medium == "azure" else "ConfigDrive"
            assert f"context: user data from {source}" in console, console[-3000:]
            assert server.ready.is_set() is (medium == "azure"), (medium, server.states, console[-3000:])
            assert server.refused == [] and server.states == (["Ready"] if medium == "azure" else [])
    finally:
        for standin in booted.values():
            standin.destroy()
        standins.finish()
        for server in servers.values():
            server.stop()


def test_scenario_suite_end_to_end_against_the_fake_with_standins(azure_cloud, image_id, tmp_path, monkeypatch):
    """Each VM's create ends only when its stand-in, booted by the stand-ins plugin as the VM is created from a disc
    shaped like Azure's provisioning disc, reports ready to the VM's WireServer as CernVM's cloud-init would."""
    monkeypatch.setattr(azure_cloud.arm, "guest", None)  # the child's stand-ins report, nothing in this process
    monkeypatch.setattr(azure_cloud.arm, "provisioning_timeout", 420)
    deadlines = {"running": 400, "reachable": 300, "login": 120, "ready": 120}
    suite = suite_through_standins(tmp_path, azure_cloud, image_id, source=True, deadlines=deadlines)
    assert azure_cloud.env["AZURE_CLIENT_SECRET"] not in suite.output
    assert azure_cloud.arm.tagged("cvmfx-target", "azure") == [], "the fake still holds resources"
