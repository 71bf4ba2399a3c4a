"""Bad input caught when the config is loaded, not per test at launch: tables, image files, ISO signatures."""

from __future__ import annotations

from pathlib import Path

import pytest

from cernvm_fixtures import config
from cernvm_fixtures.errors import ConfigError

ISO = bytes(32769) + b"CD001" + bytes(100)


def load(tmp_path: Path, text: str, name: str = "cernvm.toml") -> config.Config:
    (tmp_path / name).write_text(text)
    return config.load(None, tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[tool]\ncernvm = 5\n", r"\[tool.cernvm\]: must be a table holding \[targets.<name>\] tables, got 5"),
        ("tool = 3\n", r"pyproject.toml: tool: must be a table, got 3"),
        ("[tool.cernvm]\ntargets = 'kvm'\n", r"\[tool.cernvm\]: no targets declared"),
    ],
)
def test_pyproject_tables_of_the_wrong_type(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, text, "pyproject.toml")


def test_an_explicit_pyproject_with_a_scalar_tool_table(tmp_path):
    path = tmp_path / "pyproject.toml"
    path.write_text("[tool]\ncernvm = 'yes'\n")
    with pytest.raises(ConfigError, match="must be a table holding"):
        config.load(path)


@pytest.mark.parametrize("image", ["/nonexistent/ucernvm-prod.iso", "/nonexistent/ucernvm-prod.hvm", "./cvm.tar"])
def test_a_missing_image_file_is_refused_at_load(tmp_path, image):
    with pytest.raises(ConfigError, match=rf"cernvm.toml: targets.t.image: '{image}' does not exist"):
        load(tmp_path, f"[targets.t]\nprovider = 'kvm'\nprofile = 'cernvm4'\nimage = '{image}'\n")


def test_a_file_without_the_iso9660_signature_is_refused_at_load(tmp_path):
    fake = tmp_path / "ucernvm.iso"
    fake.write_bytes(b"\x7fELF" + bytes(40000))
    with pytest.raises(ConfigError, match=r"targets.t.image: '.*ucernvm.iso' is not an ISO 9660 image \(no 'CD001'"):
        load(tmp_path, f"[targets.t]\nprovider = 'kvm'\nprofile = 'cernvm4'\nimage = '{fake}'\n")
    fake.write_bytes(ISO)
    assert load(tmp_path, f"[targets.t]\nprovider = 'kvm'\nprofile = 'cernvm4'\nimage = '{fake}'\n").targets["t"]


def test_a_short_file_is_not_an_iso_either(tmp_path):
    fake = tmp_path / "empty.iso"
    fake.touch()
    with pytest.raises(ConfigError, match="is not an ISO 9660 image"):
        load(tmp_path, f"[targets.t]\nprovider = 'kvm'\nprofile = 'cernvm4'\nimage = '{fake}'\n")


def test_a_command_line_image_is_checked_the_same_way(tmp_path):
    kvm = config.load(None, tmp_path).targets["kvm"]
    with pytest.raises(ConfigError, match=r"^--cernvm-image /nonexistent.iso \(target kvm\): '/nonexistent.iso' does"):
        kvm.with_overrides("/nonexistent.iso", "cernvm4")


def test_an_override_names_its_option_in_every_later_message(tmp_path):
    kvm = config.load(None, tmp_path).targets["kvm"]
    given = kvm.with_overrides("appliance:no-shared", image_from="--cernvm-image kvm=appliance:no-shared")
    assert given.where("image") == given.where("profile") == "--cernvm-image kvm=appliance:no-shared"
    assert given.where("boot") == "built-in defaults: targets.kvm.boot", "keys not overridden keep their origin"


def test_kernel_boot_of_an_image_other_than_the_appliance_is_refused_at_load(tmp_path):
    fake = tmp_path / "u.iso"
    fake.write_bytes(ISO)
    with pytest.raises(ConfigError, match=r"targets\.t\.image: '.*u\.iso': targets\.t\.boot = 'kernel' needs the app"):
        load(tmp_path, f"[targets.t]\nprovider = 'kvm'\nprofile = 'cernvm4'\nboot = 'kernel'\nimage = '{fake}'\n")
    table = "[targets.t]\nprovider = 'kvm'\nboot = 'kernel'\n"
    kvm = load(tmp_path, table).targets["t"]
    with pytest.raises(ConfigError, match=r"^--image .*u\.iso: '.*u\.iso': targets\.t\.boot = 'kernel' needs"):
        kvm.with_overrides(str(fake), "cernvm4", image_from=f"--image {fake}")


@pytest.mark.parametrize("image", ["ami-0123456789abcdef0", "my_cernvm", "cernvm/cvm:4", "appliance:no-shared"])
def test_names_that_are_not_files_are_left_to_the_provider(tmp_path, image):
    profile = "" if image.startswith("appliance") else "profile = 'cernvm4'\n"
    provider = "kvm" if image.startswith("appliance") else "docker"  # docker's tarball has no appliance variants
    table = f"[targets.t]\nprovider = '{provider}'\n{profile}image = '{image}'\n"
    assert load(tmp_path, table).targets["t"].image == image


def test_ec2_refuses_an_existing_iso_at_launch_naming_what_it_boots(tmp_path):
    from cernvm_fixtures.providers.ec2 import Ec2Provider
    from cernvm_fixtures.run import Run

    iso = tmp_path / "ucernvm.iso"
    iso.write_bytes(ISO)
    raw = {
        "provider": "ec2",
        "image": str(iso),
        "profile": "cernvm4",
        "region": "eu-west-1",
        "ssh_cidr": "203.0.113.7/32",
    }
    target = config.parse({"targets": {"ec2": raw}}, "cernvm.toml").targets["ec2"]
    with pytest.raises(ConfigError, match="the ec2 provider boots an AMI id"):
        Ec2Provider(target, Run(state=tmp_path)).image()


def _matrix(**table) -> dict:
    return {"targets": {"kvm": {"provider": "kvm", **table}}}


def test_images_expand_into_one_target_per_image():
    loaded = config.parse(
        _matrix(images={"appliance": "appliance", "sshfs": {"image": "appliance:sshfs"}}), "cernvm.toml"
    )
    assert list(loaded.targets) == ["kvm-appliance", "kvm-sshfs"]
    cell = loaded.targets["kvm-sshfs"]
    assert (cell.declared, cell.image_label, cell.image, cell.profile) == (
        "kvm",
        "sshfs",
        "appliance:sshfs",
        "appliance",
    )
    assert cell.where("image") == "cernvm.toml: targets.kvm.images.sshfs.image"
    assert cell.where("domain_type") == "cernvm.toml: targets.kvm.domain_type"
    assert loaded.aliases()["kvm"] == ["kvm-appliance", "kvm-sshfs"]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"image": "appliance", "images": {"a": "appliance"}}, r"targets\.kvm\.image: give either image .* or images"),
        ({"images": {}}, r"targets\.kvm\.images: a table of label = image"),
        ({"images": {"CernVM5": "appliance"}}, r"targets\.kvm\.images\.CernVM5: invalid image label"),
        ({"images": {"a" * 21: "appliance"}}, r"invalid image label; .*at most 20"),
        ({"images": {"x": {"image": "appliance", "flavor": "m"}}}, r"targets\.kvm\.images\.x: an image .* profile"),
        ({"images": {"x": "/srv/ucernvm-5.iso"}}, r"targets\.kvm\.images\.x\.profile: .*needs a profile"),
        ({"images": {"x": {"image": "/nonexistent.iso", "profile": "cernvm5"}}}, r"images\.x\.image: .*does not exist"),
        ({"images": {"x": "appliance"}, "domain_type": "xen"}, r"targets\.kvm\.domain_type"),
    ],
)
def test_bad_images_name_the_key_and_what_is_valid(table, message):
    with pytest.raises(ConfigError, match=message):
        config.parse(_matrix(**table), "cernvm.toml")


def test_an_image_cell_may_not_shadow_a_declared_target():
    raw = {"targets": {"kvm": {"provider": "kvm", "images": {"two": "appliance"}}, "kvm-two": {"provider": "kvm"}}}
    with pytest.raises(ConfigError, match="'kvm-two' is declared twice"):
        config.parse(raw, "cernvm.toml")
