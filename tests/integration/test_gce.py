"""The gce provider through the real google-cloud-compute and google-cloud-storage clients, on 127.0.0.1.

Compute has no emulator: its calls go to the local Compute API of ``tests/fakes/gce`` (every request and
response checked against Google's discovery document), uploads to fake-gcs-server. Credentials are a service
account key made for the session, found by ``google.auth.default()`` like any ADC.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request

import pytest

from cernvm_fixtures.context import Context
from cernvm_fixtures.errors import ConfigError, PermanentError, ProviderError, ScreenUnavailable
from cernvm_fixtures.providers import gce as gcemod
from cernvm_fixtures.providers.gce import GceProvider, teardown
from cernvm_fixtures.providers.kit import decode_fields
from cernvm_fixtures.run import Run

from ..clouds import CIDR, assert_nothing_left, config_file, held, target_for
from ..fakes.gce.fixtures import Gce
from ..fakes.gce.tarballs import GIB, broken_tarball, gnu_tarball, sparse_disk
from ..fakes.server import Call
from ..helpers import create_only, killed_launch, ledger_entries, subprocess_env, sweep_killed

# --- lifecycle ------------------------------------------------------------------------------------


def test_lifecycle_with_an_uploaded_image(gce, tmp_path):
    # Google's recipe, a 1 GiB disk.raw whose first 9 MiB do not compress: over 8 MiB, a resumable upload
    tarball = gnu_tarball(tmp_path / "cernvm4-micro-2020.07-1.tar.gz", head=os.urandom(9 << 20))
    assert tarball.stat().st_size > 8 << 20
    run = Run(state=tmp_path / "state")
    machine, _ = create_only(target_for(gce, str(tarball)), run)
    try:
        machine.wait_running(time.monotonic() + 5)
        entries = {r.kind: r for r in run.ledger.entries()}
        assert set(entries) == {"object", "image", "firewall", "instance"}
        holds = held(gce)
        image_name = entries["image"].data["gce_name"]
        assert holds == {
            "instance": [machine.name],
            "image": [image_name],
            "firewall": [f"{machine.name}-ssh"],
            "object": [f"cernvm-fixtures/{image_name}.tar.gz"],
        }
        assert image_name == "cvmfx-" + gcemod.content_hash(tarball)[:24], "the image is named by content"
        made = gce.api.images[(gce.project, image_name)]
        assert made["archiveSizeBytes"] == str(tarball.stat().st_size), "images.insert read the whole upload"
        assert made["diskSizeGb"] == "1", "the size of disk.raw, in GB"
        assert made["rawDisk"]["source"].endswith(f"/{gce.bucket}/cernvm-fixtures/{image_name}.tar.gz")

        instance = gce.api.instance(machine.name)
        metadata = gce.api.metadata(machine.name)
        assert metadata["ssh-keys"] == f"root:{run.public_key}", "the key goes to the instance's own metadata"
        assert metadata["block-project-ssh-keys"] == "true"
        assert set(metadata) == {"ssh-keys", "block-project-ssh-keys", "user-data"}
        assert metadata["user-data"].encode() == Context(hostname=machine.name, ssh_keys=(run.public_key,)).render()
        assert instance.body["tags"]["items"] == [machine.name]
        labels = instance.body["labels"]
        assert labels["cvmfx-run"] == run.id and labels["project"] == "cernvm-fixtures-tests"
        assert decode_fields(labels).name == machine.name

        rule = gce.api.firewalls[(gce.project, f"{machine.name}-ssh")]
        assert (rule["allowed"], rule["sourceRanges"], rule["targetTags"], rule["direction"]) == (
            [{"IPProtocol": "tcp", "ports": ["22"]}],
            [CIDR],
            [machine.name],
            "INGRESS",
        )
        assert gcemod.ours(gcemod.labels_in_description(rule["description"]), entries["firewall"])
        assert machine.platform_address().startswith("203.0.113.")

        # the serial console is read on from Google's `next` offset: nothing twice, nothing missed
        gce.api.write_serial(machine.name, "Linux version 6.1\n")
        assert machine.console_log() == "Linux version 6.1\n"
        gce.api.write_serial(
            machine.name,
            "-----BEGIN SSH HOST KEY KEYS-----\nssh-ed25519 AAAAC3 root@x\n-----END SSH HOST KEY KEYS-----\n",
        )
        assert machine.console_log().count("Linux version") == 1
        assert machine.host_keys() == ["ssh-ed25519 AAAAC3 root@x"]
        starts = [int(dict(p)["start"]) for p in serial_queries(gce, machine.name)]
        assert starts == [0, 18, 110], "each read starts where the last one ended"

        # a second machine of the same tarball reuses the image and uploads nothing
        second, _ = create_only(target_for(gce, str(tarball)), run)
        assert {r.kind for r in second.resources} == {"firewall", "instance"}
        second.destroy()
    finally:
        machine.destroy()
    assert_nothing_left(gce, run)


def test_screenshot_is_the_standins_screen_on_an_instance_with_a_display(gce, gce_image, standin, tmp_path):
    """instances.getScreenshot (a PNG in base64) of an instance made with a display device, which the local API
    answers with the stand-in's real screen (registered in process, or named through its test hook by a stand-in of
    another process); an instance without one has no screen, and says so."""
    from ..clouds import assert_standin_screen

    run = Run(state=tmp_path / "state")
    machine, _ = create_only(target_for(gce, "family/cernvm4"), run)
    dark, _ = create_only(target_for(gce, "family/cernvm4", display=False), run)
    try:
        assert gce.api.instance(machine.name).body["displayDevice"] == {"enableDisplay": True}
        gce.api.screens[machine.name] = standin.machine.screenshot
        assert_standin_screen(machine.screenshot(tmp_path / "live.png"))
        del gce.api.screens[machine.name]
        hook = urllib.request.Request(f"{gce.api.url}/_test/screen/{machine.name}", standin.name.encode())
        urllib.request.urlopen(hook, timeout=10).read()
        (entry,) = [r for r in machine.resources if r.kind == "instance"]
        assert_standin_screen(GceProvider.screenshot_resource(entry, tmp_path / "from-ledger.png"))

        assert gce.api.instance(dark.name).body["displayDevice"] == {"enableDisplay": False}
        with pytest.raises(ScreenUnavailable, match="no display device .*display = false"):
            dark.screenshot(tmp_path / "dark.png")
        (entry,) = [r for r in dark.resources if r.kind == "instance"]
        with pytest.raises(ScreenUnavailable, match="GCE gave no screenshot: .*does not have a display device"):
            GceProvider.screenshot_resource(entry, tmp_path / "dark.png")
    finally:
        dark.destroy()
        machine.destroy()
    assert_nothing_left(gce, run)


def serial_queries(gce: Gce, instance: str) -> list[list[tuple[str, str]]]:
    """The serial port reads of one instance (the local API keeps every query of the session)."""
    method = "compute.instances.getSerialPortOutput"
    return [sorted(q.items()) for q in gce.api.queries if q.get("__method") == method and q.get("instance") == instance]


def test_lifecycle_with_an_existing_image_family(gce, gce_image, tmp_path):
    run = Run(state=tmp_path / "state")
    machine, _ = create_only(target_for(gce, "family/cernvm4", address="internal"), run)
    try:
        assert {r.kind for r in machine.resources} == {"firewall", "instance"}
        assert gce.api.instance(machine.name).image.endswith(f"/global/images/{gce_image}")
        assert "accessConfigs" not in gce.api.instance(machine.name).body["networkInterfaces"][0]
        machine.wait_running(time.monotonic() + 5)
        assert machine.platform_address().startswith("10.")
    finally:
        machine.destroy()
    assert_nothing_left(gce, run)
    assert (gce.project, gce_image) in gce.api.images, "an image the run did not make is never deleted"


def test_every_create_call_finds_its_ledger_entry_already_written(gce, tmp_path):
    tarball = gnu_tarball(tmp_path / "cernvm4-micro-2020.07-2.tar.gz", head=b"ledger")
    run = Run(state=tmp_path / "state")
    seen: dict[str, list[tuple[str, bool]]] = {}
    creates = {
        "compute.images.insert": "image",
        "compute.firewalls.insert": "firewall",
        "compute.instances.insert": "instance",
    }

    def before(call: Call) -> None:
        if call.name in creates:
            on_disk = [json.loads(p.read_text()) for p in (run.directory / "ledger").glob("*.json")]
            seen[call.name] = [(e["kind"], "operation" in e["data"]) for e in on_disk]

    gce.api.hooks.append(before)
    machine, _ = create_only(target_for(gce, str(tarball)), run)
    machine.destroy()
    assert set(seen) == set(creates)
    for method, kind in creates.items():
        assert (kind, False) in seen[method], f"{method}: no ledger entry for the {kind} before the call"
    assert ("object", False) in seen["compute.images.insert"] or ("object", True) in seen["compute.images.insert"]
    assert_nothing_left(gce, run)


def test_keep_labels_the_instance_kept(gce, gce_image, tmp_path):
    run = Run(state=tmp_path / "state")
    machine, _ = create_only(target_for(gce, gce_image), run)
    try:
        machine.keep()
        labels = gce.api.instance(machine.name).body["labels"]
        assert labels["cvmfx-kept"] == "true" and labels["project"] == "cernvm-fixtures-tests"
        assert decode_fields(labels).kept, "a label-only sweep sees it as kept"
        assert all(r.kept and "login" in r.data for r in run.ledger.entries())
        found = [r for r in GceProvider.leftovers(target_for(gce, gce_image), set()) if r.name == machine.name]
        assert sorted(r.kind for r in found) == ["firewall", "instance"], "issue 26.5: the rule is kept as well"
        assert all(r.kept and r.expires > time.time() + 23 * 3600 for r in found), found
    finally:
        machine.destroy()
    assert_nothing_left(gce, run)


# --- the image tarball (issue 27) -----------------------------------------------------------------


def test_a_raw_disk_is_archived_uploaded_and_imported_the_way_gce_imports_it(gce, tmp_path, monkeypatch):
    """A CernVM .hdd becomes the tarball GCE imports: the object the local API reads back is a gzipped tar of one
    sparse disk.raw padded to 1 GiB, and the image's diskSizeGb is that disk's. Made again from scratch (no cache),
    the tarball is the same, so the image is reused."""
    import shutil
    import tarfile

    monkeypatch.setenv("CERNVM_FIXTURES_CACHE", str(tmp_path / "cache"))
    disk = tmp_path / "ucernvm-prod.2021.05-1.cernvm.x86_64.hdd"
    sparse_disk(disk, 3 << 20, b"\xeb\x63\x90" + os.urandom(8192))
    run = Run(state=tmp_path / "state")
    machine, _ = create_only(target_for(gce, str(disk)), run)
    try:
        image_name = next(r for r in run.ledger.entries() if r.kind == "image").data["gce_name"]
        assert gce.api.images[(gce.project, image_name)]["diskSizeGb"] == "1"
        uploaded = tmp_path / "uploaded.tar.gz"
        gce.storage_client().bucket(gce.bucket).blob(f"cernvm-fixtures/{image_name}.tar.gz").download_to_filename(
            str(uploaded)
        )
        assert image_name == "cvmfx-" + gcemod.content_hash(uploaded)[:24] and uploaded.stat().st_size < 64 << 10
        with tarfile.open(uploaded) as archive:
            (member,) = archive.getmembers()
            assert (member.name, member.size, member.type) == ("disk.raw", GIB, tarfile.GNUTYPE_SPARSE)
            assert archive.extractfile(member).read(3 << 20) == disk.read_bytes()

        shutil.rmtree(tmp_path / "cache")
        second, _ = create_only(target_for(gce, str(disk)), run)
        assert {r.kind for r in second.resources} == {"firewall", "instance"}, "same disk, same tarball, same image"
        second.destroy()
    finally:
        machine.destroy()
    assert_nothing_left(gce, run)


REFUSED = {
    "pax": "a PAX archive",
    "wrong-name": "the member is named 'disk.img', not 'disk.raw'",
    "not-whole-gib": f"disk.raw is {GIB + GIB // 2} bytes, not a whole number of GiB",
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_tarball_gce_cannot_import_is_refused_before_anything_is_created(gce, tmp_path, case):
    tarball = broken_tarball(tmp_path, case)
    run = Run(state=tmp_path / "state")
    refused = rf"^test: targets\.gce\.image: {re.escape(str(tarball))}: {re.escape(REFUSED[case])}"
    with pytest.raises(ConfigError, match=refused):
        create_only(target_for(gce, str(tarball)), run)
    assert_nothing_left(gce, run)
    assert not [o for o in gce.objects() if o.startswith("cernvm-fixtures/")], "nothing was uploaded"


def test_a_tarball_larger_than_the_boot_disk_is_refused_before_it_is_uploaded(gce, tmp_path):
    tarball = gnu_tarball(tmp_path / "cernvm-21g.tar.gz", size=21 * GIB, head=b"21 GiB")
    run = Run(state=tmp_path / "state")
    refused = "targets.gce.disk_size_gb: 20 GB is smaller than image cernvm-21g.tar.gz (21 GB)"
    with pytest.raises(ConfigError, match=re.escape(refused) + ".*set disk_size_gb = 21 or more"):
        create_only(target_for(gce, str(tarball)), run)
    assert_nothing_left(gce, run)
    assert not [o for o in gce.objects() if o.startswith("cernvm-fixtures/")], "nothing was uploaded"


def user_image(gce: Gce, path, name: str):
    """images.insert of the object ``path`` uploaded as a user would (not through the provider); its operation."""
    from google.cloud import compute_v1

    key = f"user/{name}.tar.gz"
    gce.storage_client().bucket(gce.bucket).blob(key).upload_from_filename(str(path))
    body = compute_v1.Image(
        name=name, raw_disk=compute_v1.RawDisk(source=f"https://storage.googleapis.com/{gce.bucket}/{key}")
    )
    return gcemod.client("ImagesClient", gce.api.url).insert_unary(project=gce.project, image_resource=body)


@pytest.mark.parametrize("case", ["not-gzip", "pax", "wrong-name", "two-members", "not-whole-gib"])
def test_the_local_api_ends_the_import_of_an_object_gce_cannot_read_in_gces_error(gce, tmp_path, case):
    operation = user_image(gce, broken_tarball(tmp_path, case), f"broken-{case}")
    text = "The tar archive is not a valid image."
    if case == "wrong-name":
        text = "The file inside the tar archive was named 'disk.img'. It should be named 'disk.raw'."
    with pytest.raises(ProviderError, match=f"^user image: INVALID_IMAGE_TAR: {re.escape(text)}$"):
        gcemod.wait_operation("user image", operation, gce.project, None, gce.api.url, time.monotonic() + 10)
    assert (gce.project, f"broken-{case}") not in gce.api.images
    gce.storage_client().bucket(gce.bucket).blob(f"user/broken-{case}.tar.gz").delete()


def test_an_image_is_as_large_as_its_disk_raw_and_no_boot_disk_is_smaller(gce, tmp_path):
    """A 21 GiB sparse disk.raw (a few hundred bytes of tarball) makes a 21 GB image. A target whose boot disk is
    20 GB is refused before anything is created, naming disk_size_gb; the local API refuses such an instance with
    GCE's own message whoever sends it."""
    from google.api_core import exceptions
    from google.cloud import compute_v1

    operation = user_image(gce, gnu_tarball(tmp_path / "big.tar.gz", size=21 * GIB, head=b"big"), "big-21")
    gcemod.wait_operation("user image", operation, gce.project, None, gce.api.url, time.monotonic() + 10)
    try:
        assert gce.api.images[(gce.project, "big-21")]["diskSizeGb"] == "21"
        run = Run(state=tmp_path / "state")
        refused = (
            f"targets.gce.disk_size_gb: 20 GB is smaller than image projects/{gce.project}/global/images/big-21 "
            "(21 GB), and GCE makes no boot disk smaller than its image: set disk_size_gb = 21 or more"
        )
        with pytest.raises(ConfigError, match=re.escape(refused)):
            create_only(target_for(gce, "big-21", disk_size_gb=20), run)
        assert_nothing_left(gce, run)
        machine, _ = create_only(target_for(gce, "big-21", disk_size_gb=21), run)
        machine.destroy()
        assert_nothing_left(gce, run)

        disk = compute_v1.AttachedDiskInitializeParams(source_image="global/images/big-21", disk_size_gb=20)
        body = compute_v1.Instance(
            name="too-small",
            machine_type=f"zones/{gce.zone}/machineTypes/e2-small",
            disks=[compute_v1.AttachedDisk(boot=True, initialize_params=disk)],
        )
        smaller = "'20'. Requested disk size cannot be smaller than the image size (21 GB)"
        with pytest.raises(exceptions.BadRequest, match=re.escape(smaller)):
            gcemod.client("InstancesClient", gce.api.url).insert_unary(
                project=gce.project, zone=gce.zone, instance_resource=body
            )
    finally:
        gcemod.client("ImagesClient", gce.api.url).delete_unary(project=gce.project, image="big-21")
        gce.storage_client().bucket(gce.bucket).blob("user/big-21.tar.gz").delete()


# --- subnetwork -------------------------------------------------------------------------------------


def test_the_instance_joins_the_subnetwork_the_target_names(gce, gce_image, tmp_path):
    from google.api_core import exceptions
    from google.cloud import compute_v1

    gce.api.add_subnetwork(gce.project, "europe-west1", "cvmfx-subnet")
    gce.api.add_subnetwork(gce.project, "us-central1", "far-away")
    link = "regions/europe-west1/subnetworks/cvmfx-subnet"
    run = Run(state=tmp_path / "state")
    for value in ("cvmfx-subnet", f"projects/{gce.project}/{link}"):
        machine, _ = create_only(target_for(gce, gce_image, subnetwork=value), run)
        try:
            assert gce.api.instance(machine.name).body["networkInterfaces"][0]["subnetwork"] in (link, value)
        finally:
            machine.destroy()
    assert_nothing_left(gce, run)

    cases = [
        ("nowhere", "targets.gce.subnetwork: subnetwork 'nowhere' not found in region europe-west1 of project"),
        (
            "regions/us-central1/subnetworks/far-away",
            "targets.gce.subnetwork: 'regions/us-central1/subnetworks/far-away' is in region us-central1, but zone "
            "europe-west1-b is in europe-west1",
        ),
    ]
    for value, message in cases:
        with pytest.raises(ConfigError, match=re.escape(message)):
            create_only(target_for(gce, gce_image, subnetwork=value), run)
        assert_nothing_left(gce, run)

    # whoever sends it, the local API holds a subnetwork to the document's URL forms, its region and existence
    instances = gcemod.client("InstancesClient", gce.api.url)
    for subnetwork, answer in [
        ("cvmfx-subnet", "The URL is malformed"),
        ("regions/us-central1/subnetworks/far-away", "Subnetwork must be in region europe-west1"),
        ("regions/europe-west1/subnetworks/nope", "subnetworks/nope' was not found"),
    ]:
        body = compute_v1.Instance(
            name="subnetwork-probe",
            machine_type=f"zones/{gce.zone}/machineTypes/e2-small",
            disks=[
                compute_v1.AttachedDisk(
                    boot=True,
                    initialize_params=compute_v1.AttachedDiskInitializeParams(
                        source_image=f"global/images/{gce_image}"
                    ),
                )
            ],
            network_interfaces=[compute_v1.NetworkInterface(network="global/networks/default", subnetwork=subnetwork)],
        )
        with pytest.raises((exceptions.BadRequest, exceptions.NotFound), match=re.escape(answer)):
            instances.insert_unary(project=gce.project, zone=gce.zone, instance_resource=body)
    assert "instance" not in gce.api.held()


# --- failures -------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["QUOTA_EXCEEDED", "ZONE_RESOURCE_POOL_EXHAUSTED"])
def test_instance_insert_operation_ending_in_error(gce, gce_image, tmp_path, code):
    run = Run(state=tmp_path / "state")
    gce.api.fail_operation("compute.instances.insert", code, f"injected: {code.lower()}")
    with pytest.raises(ProviderError, match=rf"create instance \S+: {code}: injected"):
        create_only(target_for(gce, gce_image), run)
    assert_nothing_left(gce, run)


def test_image_creation_ending_in_error(gce, tmp_path):
    tarball = gnu_tarball(tmp_path / "cernvm4-micro-2020.07-3.tar.gz", head=b"broken")
    run = Run(state=tmp_path / "state")
    gce.api.fail_operation("compute.images.insert", "INVALID_IMAGE_TAR", "injected: not a valid image")
    with pytest.raises(ProviderError, match=r"create image cvmfx-\w+: INVALID_IMAGE_TAR: injected"):
        create_only(target_for(gce, str(tarball)), run)
    assert_nothing_left(gce, run)


def test_instance_terminated_during_boot_is_permanent(gce, gce_image, tmp_path):
    run = Run(state=tmp_path / "state")
    machine, _ = create_only(target_for(gce, gce_image), run)
    try:
        gce.api.set_status(machine.name, "TERMINATED", "Instance was preempted.")
        with pytest.raises(PermanentError, match="is TERMINATED: Instance was preempted"):
            machine.wait_running(time.monotonic() + 5)
    finally:
        machine.destroy()
    assert_nothing_left(gce, run)


def test_firewall_name_clash_leaves_the_other_rule_alone(gce, gce_image, tmp_path):
    from google.cloud import compute_v1

    run = Run(state=tmp_path / "state")
    target = target_for(gce, gce_image)
    provider = GceProvider(target, run)
    machine = provider.machine(run.name(target.name))
    foreign = compute_v1.Firewall(
        name=f"{machine.name}-ssh",
        network="global/networks/default",
        allowed=[compute_v1.Allowed(I_p_protocol="tcp", ports=["443"])],
        source_ranges=["198.51.100.0/24"],
    )
    firewalls = gcemod.client("FirewallsClient", gce.api.url)
    operation = firewalls.insert_unary(project=gce.project, firewall_resource=foreign)
    gcemod.wait_operation("foreign rule", operation, gce.project, None, gce.api.url, time.monotonic() + 10)
    try:
        with pytest.raises(ProviderError, match="already exists .* not this run's; it was left alone"):
            try:
                provider.launch(machine, Context(hostname=machine.name, ssh_keys=(run.public_key,)))
            finally:
                machine.destroy()
        assert (gce.project, f"{machine.name}-ssh") in gce.api.firewalls, "the other rule is still there"
        assert run.ledger.entries() == [] and "instance" not in gce.api.held()
    finally:
        firewalls.delete_unary(project=gce.project, firewall=f"{machine.name}-ssh")


@pytest.mark.attack_row("forged tags on a foreign resource", "gce")
def test_sweep_leaves_a_foreign_rule_that_carries_our_description(gce, gce_image, tmp_path):
    """Issue 26.2: a firewall rule is judged by its description; a copy of ours on a foreign rule, or one naming a
    machine like ours without our mark, is not listed for sweep; the real rule and instance are."""
    from google.cloud import compute_v1

    run = Run(state=tmp_path / "state")
    target = target_for(gce, gce_image)
    machine, _ = create_only(target, run)
    firewalls = gcemod.client("FirewallsClient", gce.api.url)
    ours = firewalls.get(project=gce.project, firewall=f"{machine.name}-ssh")
    invented = ours.description.replace('"cvmfx-mark"', '"cvmfx-nomark"')
    rules = {"their-https": ours.description, f"{machine.name[:-4]}0000-ssh": invented}
    for name, description in rules.items():
        foreign = compute_v1.Firewall(
            name=name,
            network="global/networks/default",
            allowed=[compute_v1.Allowed(I_p_protocol="tcp", ports=["443"])],
            source_ranges=["198.51.100.0/24"],
            description=description,
        )
        operation = firewalls.insert_unary(project=gce.project, firewall_resource=foreign)
        gcemod.wait_operation("foreign rule", operation, gce.project, None, gce.api.url, time.monotonic() + 10)
    try:
        found = [r for r in GceProvider.leftovers(target, set()) if r.name.startswith(machine.name[:-4])]
        assert sorted(r.data["gce_name"] for r in found) == sorted([machine.name, f"{machine.name}-ssh"])
    finally:
        for name in rules:
            firewalls.delete_unary(project=gce.project, firewall=name)
        machine.destroy()
    assert_nothing_left(gce, run)


@pytest.mark.attack_row("a planted upload", "gce")
def test_a_planted_image_named_as_ours_is_not_booted(gce, tmp_path):
    """Issue 26.4: the image name is the content's hash, which anyone who can create images in the project can
    take first (with our labels copied, or none); the run refuses to boot it, naming it, and creates nothing."""
    from google.cloud import compute_v1

    tarball = gnu_tarball(tmp_path / "planted.tar.gz", head=b"the real content")
    name = "cvmfx-" + gcemod.content_hash(tarball)[:24]
    images = gcemod.client("ImagesClient", gce.api.url)
    theirs = gnu_tarball(tmp_path / "theirs.tar.gz", head=b"someone else's OS")
    gce.storage_client().bucket(gce.bucket).blob("theirs.tar.gz").upload_from_filename(str(theirs))
    body = compute_v1.Image(
        name=name,
        raw_disk=compute_v1.RawDisk(source=f"https://storage.googleapis.com/{gce.bucket}/theirs.tar.gz"),
        labels={"cvmfx-run": "00000000"},
    )
    operation = images.insert_unary(project=gce.project, image_resource=body)
    gcemod.wait_operation("planted image", operation, gce.project, None, gce.api.url, time.monotonic() + 30)
    run = Run(state=tmp_path / "state")
    try:
        with pytest.raises(ProviderError, match=rf"image {name} exists .* not made by cernvm-fixtures with this key"):
            create_only(target_for(gce, str(tarball)), run)
        assert run.ledger.entries() == [] and "instance" not in gce.api.held()
    finally:
        images.delete_unary(project=gce.project, image=name)
        gce.storage_client().bucket(gce.bucket).blob("theirs.tar.gz").delete()


def test_teardown_survives_resources_already_gone_and_retries_an_image_in_use(gce, tmp_path, monkeypatch):
    tarball = gnu_tarball(tmp_path / "cernvm4-micro-2020.07-4.tar.gz", head=b"gone")
    run = Run(state=tmp_path / "state")
    machine, _ = create_only(target_for(gce, str(tarball)), run)
    entries = run.ledger.entries()
    image = next(r for r in entries if r.kind == "image")
    with pytest.raises(ProviderError, match=r"delete image \S+: still in use"):
        monkeypatch.setattr(teardown, "BUSY_TIMEOUT", 0.5)
        GceProvider.destroy_resource(image)
    assert any(code == 409 for code, _ in gce.api.answers), "the API refused to delete an image in use"
    gce.api.firewalls.clear()
    machine.destroy()
    assert_nothing_left(gce, run)
    for resource in entries:  # again, from the ledger data alone: everything is gone, that is fine
        GceProvider.destroy_resource(resource)


# --- sweep after SIGKILL ----------------------------------------------------------------------------


@pytest.mark.parametrize("ledger", ["kept", "lost"])
def test_sweep_removes_what_a_killed_run_left(gce, tmp_path, ledger):
    tarball = gnu_tarball(tmp_path / f"cernvm4-micro-2020.07-{ledger}.tar.gz", head=ledger.encode())
    state = tmp_path / "state"
    env = {**subprocess_env(state), **gce.env}
    cfg = config_file(tmp_path / "cernvm.toml", gce, str(tarball))
    killed_launch(cfg, env)
    assert set(held(gce)) == {"instance", "image", "firewall", "object"}
    assert len(ledger_entries(state)) == 4
    sweep = sweep_killed(cfg, state, lose_ledger=ledger == "lost")
    assert held(gce) == {}, sweep.stdout
    order = re.findall(r"destroyed gce (\S+)", sweep.stdout)
    assert order == ["instance", "firewall", "image", "object"], sweep.stdout


# --- configuration and credentials ----------------------------------------------------------------


def test_bad_configs_fail_before_anything_is_created(gce, gce_image, tmp_path):
    tarball = gnu_tarball(tmp_path / "cernvm4.tar.gz")
    cases = [
        (
            {"image": "no-such-image"},
            "targets.gce.image: image projects/cvmfx-tests/global/images/no-such-image not found",
        ),
        ({"image": "family/nope"}, "targets.gce.image: image projects/cvmfx-tests/global/images/family/nope not found"),
        ({"image": "/nonexistent/cernvm.tar.gz"}, "targets.gce.image: '/nonexistent/cernvm.tar.gz' does not exist"),
        ({"image": str(tarball), "bucket": None}, "targets.gce.bucket: required to upload cernvm4.tar.gz"),
        (
            {"image": str(tarball), "bucket": "no-such-bucket"},
            "targets.gce.bucket: Cloud Storage bucket 'no-such-bucket'",
        ),
        ({"machine_type": "e2-huge"}, "targets.gce.machine_type: 'e2-huge' is not a machine type of zone"),
        ({"network": "nowhere"}, "targets.gce.network: network 'nowhere' not found"),
    ]
    for options, message in cases:
        run = Run(state=tmp_path / "state")
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
            # files are checked when the config loads, the rest before creating
            create_only(target_for(gce, options.pop("image", gce_image), **options), run)
        assert_nothing_left(gce, run)


def test_options_are_checked_with_clear_errors(gce):
    cases = [
        ({"ssh_cidr": "0.0.0.0/0"}, "not the whole internet"),
        ({"zone": "Europe"}, "a GCE zone such as"),
        ({"labels": {"Bad": "x"}}, "key 'Bad' is not a lowercase letter"),
        ({"labels": {"cvmfx-run": "x"}}, "which cernvm-fixtures sets itself"),
        ({"address": "public"}, "external"),
    ]
    for options, message in cases:
        with pytest.raises(ConfigError, match=message):
            target_for(gce, "x", **options)


def test_no_credentials_is_a_clear_error(gce, gce_image, tmp_path, monkeypatch):
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS")
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "empty-gcloud"))
    # google.auth reads NO_GCE_CHECK once at import: without it, it would ask 169.254.169.254 (blocked here)
    monkeypatch.setattr("google.auth.compute_engine._metadata._NO_GCE_CHECK", True)
    gcemod.reset_clients()
    try:
        with pytest.raises(ProviderError, match="found no Application Default Credentials"):
            create_only(target_for(gce, gce_image), Run(state=tmp_path / "state"))
    finally:
        gcemod.reset_clients()


def test_the_local_api_rejects_what_the_discovery_document_does_not_allow(gce, gce_image):
    """The checks can fail: a body with an unknown field and a wrong type is answered 400 and reported."""
    import requests

    token = next(iter(gce.api.tokens))
    answer = requests.post(
        f"{gce.api.url}/compute/v1/projects/{gce.project}/global/firewalls",
        json={"name": "x", "sourceRange": ["1.2.3.4/32"], "priority": "high"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert answer.status_code == 400 and answer.json()["error"]["errors"][0]["reason"] == "invalid"
    problems = list(gce.api.violations)
    gce.api.violations.clear()
    assert any("unknown field 'sourceRange'" in p for p in problems), problems
    assert any("priority: expected an int32 integer, got 'high'" in p for p in problems), problems
    unauthenticated = requests.get(
        f"{gce.api.url}/compute/v1/projects/{gce.project}/global/images/{gce_image}", timeout=10
    )
    assert unauthenticated.status_code == 401
