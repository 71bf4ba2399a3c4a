"""The kernel: the release the profile promises, booted with the CernVM command line.

A container has no kernel of its own: profiles expect the Docker host's, through
``${host_kernel}`` (any ``${trait}`` in the pattern is the instance's trait value,
matched literally).
"""

import fnmatch
import re
from string import Template

from cernvm_fixtures import expect


def test_kernel_release(cernvm):
    pattern = expect(cernvm, "kernel.release")
    why = cernvm.profile.expect("kernel.release", cernvm.traits).why
    pattern = Template(pattern).safe_substitute({k: re.escape(v) for k, v in cernvm.traits.items()})
    release = cernvm.run("uname -r").check().stdout.strip()
    assert re.match(pattern, release), (
        f"kernel release is {release!r}, but profile {cernvm.profile.name!r} expects one matching {pattern!r}"
        + (f" ({why})" if why else "")
    )


def test_kernel_command_line(cernvm):
    wanted = expect(cernvm, "kernel.cmdline")  # words, or patterns such as ``cvmfs_server=*``
    cmdline = cernvm.get("/proc/cmdline").decode().split()
    missing = [word for word in wanted if not fnmatch.filter(cmdline, word)]
    assert not missing, (
        f"kernel command line lacks {' '.join(missing)} (profile {cernvm.profile.name!r}); it is: {' '.join(cmdline)}"
    )
