"""Config loading and validation: every error names the file, the key, the bad value and what is valid."""

import textwrap

import pytest

from cernvm_fixtures import config
from cernvm_fixtures.errors import ConfigError


def write(tmp_path, text, name="cernvm.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def error(tmp_path, text, name="cernvm.toml"):
    path = write(tmp_path, text, name)
    with pytest.raises(ConfigError) as e:
        config.load(None, tmp_path)
    return str(e.value).replace(str(path), "FILE")


def test_defaults_boot_the_appliance_on_kvm(tmp_path):
    loaded = config.load(None, tmp_path)
    assert loaded.origin == "built-in defaults"
    kvm = loaded.targets["kvm"]
    assert (kvm.provider, kvm.image, kvm.profile) == ("kvm", "appliance", "appliance")
    assert kvm.options.domain_type == "auto" and kvm.options.network == "user"
    assert loaded.enabled == list(loaded.targets)


def test_cernvm_toml_is_found_in_rootdir(tmp_path):
    write(
        tmp_path,
        """
        [targets.kvm-tcg]
        provider = "kvm"
        domain_type = "qemu"
        memory = 1024
        [targets.off]
        provider = "kvm"
        enabled = false
    """,
    )
    loaded = config.load(None, tmp_path)
    assert loaded.targets["kvm-tcg"].options.memory == 1024
    assert loaded.enabled == ["kvm-tcg"]


def test_tool_cernvm_in_pyproject(tmp_path):
    write(
        tmp_path,
        """
        [project]
        name = "x"
        [tool.cernvm.targets.vm]
        provider = "kvm"
        image = "appliance:no-cvmfs"
    """,
        "pyproject.toml",
    )
    loaded = config.load(None, tmp_path)
    assert loaded.targets["vm"].image == "appliance:no-cvmfs"
    assert loaded.targets["vm"].profile == "appliance"
    assert "[tool.cernvm]" in loaded.origin


def test_pyproject_without_tool_cernvm_means_defaults(tmp_path):
    write(tmp_path, "[project]\nname = 'x'\n", "pyproject.toml")
    assert config.load(None, tmp_path).origin == "built-in defaults"


def test_explicit_path_must_exist(tmp_path):
    with pytest.raises(ConfigError, match="nope.toml: config file not found"):
        config.load(tmp_path / "nope.toml")


def test_invalid_toml_names_file_and_line(tmp_path):
    message = error(tmp_path, "[targets.kvm]\nprovider = kvm\n")
    assert message.startswith("FILE: invalid TOML") and "line 2" in message


def test_unknown_provider_lists_installed_ones(tmp_path):
    message = error(tmp_path, "[targets.x]\nprovider = 'vmware'\n")
    assert "targets.x.provider" in message and "'vmware'" in message and "kvm" in message


def test_missing_provider(tmp_path):
    assert "targets.x.provider: required key is missing" in error(tmp_path, "[targets.x]\nimage = 'appliance'\n")


def test_unknown_key_lists_valid_keys(tmp_path):
    message = error(tmp_path, "[targets.kvm]\nprovider = 'kvm'\nmemroy = 512\n")
    assert "FILE: targets.kvm.memroy: unknown key; valid keys are" in message
    assert "memory" in message and "domain_type" in message and "image" in message


def test_bad_choice_names_valid_choices(tmp_path):
    message = error(tmp_path, "[targets.kvm]\nprovider = 'kvm'\ndomain_type = 'kvmm'\n")
    assert "targets.kvm.domain_type" in message and "'kvmm'" in message
    assert "'auto'" in message and "'qemu'" in message


def test_bad_type_and_range(tmp_path):
    message = error(tmp_path, "[targets.kvm]\nprovider = 'kvm'\nmemory = 'lots'\nvcpus = 0\n")
    assert "targets.kvm.memory: expected a valid integer" in message and "'lots'" in message
    assert "targets.kvm.vcpus" in message


def test_deadlines_are_validated(tmp_path):
    message = error(tmp_path, "[targets.kvm]\nprovider = 'kvm'\ndeadlines = { ready = -1, boot = 3 }\n")
    assert "targets.kvm.deadlines.ready" in message and "targets.kvm.deadlines.boot: unknown key" in message


def test_real_image_needs_a_profile(tmp_path):
    message = error(tmp_path, "[targets.kvm]\nprovider = 'kvm'\nimage = '/srv/ucernvm.iso'\n")
    assert "needs a profile" in message and "cernvm4" in message


def test_invalid_target_name(tmp_path):
    assert "invalid target name" in error(tmp_path, "[targets.KVM_1]\nprovider = 'kvm'\n")


def test_shared_folder_must_be_a_directory(tmp_path):
    message = error(tmp_path, "[targets.kvm]\nprovider = 'kvm'\nshared_folders = { data = '/no/such/dir' }\n")
    assert "targets.kvm.shared_folders.data" in message and "is not a directory" in message


def test_unknown_top_level_key_and_no_targets(tmp_path):
    assert "unknown top-level key(s) target" in error(tmp_path, "[target.kvm]\nprovider = 'kvm'\n")
    assert "no targets declared" in error(tmp_path, "targets = {}\n")


def test_command_line_image_override_brings_its_profile(tmp_path):
    kvm = config.load(None, tmp_path).targets["kvm"]
    iso = tmp_path / "x.iso"
    iso.write_bytes(bytes(32769) + b"CD001")
    assert kvm.with_overrides("appliance:no-shared").profile == "appliance"
    assert kvm.with_overrides(str(iso), "cernvm4").profile == "cernvm4"
    with pytest.raises(ConfigError, match="--cernvm-image"):
        kvm.with_overrides(str(iso))


def test_deadlines_profile_first_boot_then_the_targets_own_keys():
    from cernvm_fixtures import profile
    from cernvm_fixtures.config import Deadlines, effective_deadlines

    c4 = profile.load("cernvm4")
    assert effective_deadlines(Deadlines(), c4).reachable == c4.boot.deadlines.reachable
    assert effective_deadlines(Deadlines(reachable=5), c4).reachable == 5
    assert effective_deadlines(Deadlines(reachable=5), c4).ready == c4.boot.deadlines.ready
    assert effective_deadlines(Deadlines(), profile.load("cernvm5").model_copy(update={"boot": profile.Boot()})) == (
        Deadlines()
    )


def test_config_finds_providers_through_the_registry_it_is_given():
    """Config imports no provider: a registry passed in (any object with names and get) answers for them."""
    from pydantic import BaseModel, ConfigDict

    class FakeOptions(BaseModel):
        model_config = ConfigDict(extra="forbid")
        size: int = 1

    class Fake:
        name, Options, shares_folders = "fake", FakeOptions, False

        @classmethod
        def check_image_name(cls, target): ...

        @classmethod
        def check_profile(cls, target, profile):
            raise ConfigError(f"{target.where('profile')}: fake refuses {profile.name}")

    class Only:
        @staticmethod
        def names():
            return ["fake"]

        @staticmethod
        def get(name):
            if name != "fake":
                raise ConfigError(f"unknown provider {name!r}; installed providers are fake")
            return Fake

    target = config.parse({"targets": {"t": {"provider": "fake", "size": 3}}}, "here", Only).targets["t"]
    assert (target.provider, target.options.size) == ("fake", 3)
    with pytest.raises(ConfigError, match=r"^here: targets\.t\.profile: fake refuses appliance$"):
        target.load_profile(Only)
    with pytest.raises(ConfigError, match=r"here: targets\.t\.provider: unknown provider 'kvm'; installed .* fake"):
        config.parse({"targets": {"t": {"provider": "kvm"}}}, "here", Only)
    with pytest.raises(ConfigError, match=r"here: targets\.t\.provider: required key .* installed providers are fake"):
        config.parse({"targets": {"t": {}}}, "here", Only)
