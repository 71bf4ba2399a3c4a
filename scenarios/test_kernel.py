"""The kernel: the release the profile promises, booted with the CernVM command line."""

import re

from cernvm_fixtures.plugin import expect


def test_kernel_release(cernvm):
    pattern = expect(cernvm, "kernel.release")
    release = cernvm.run("uname -r").check().stdout.strip()
    assert re.match(pattern, release), (
        f"kernel release is {release!r}, but profile {cernvm.profile.name!r} expects one matching {pattern!r}"
    )


def test_kernel_command_line(cernvm):
    wanted = expect(cernvm, "kernel.cmdline")
    cmdline = cernvm.get("/proc/cmdline").decode().split()
    missing = [word for word in wanted if word not in cmdline]
    assert not missing, (
        f"kernel command line lacks {' '.join(missing)} (profile {cernvm.profile.name!r}); it is: {' '.join(cmdline)}"
    )
