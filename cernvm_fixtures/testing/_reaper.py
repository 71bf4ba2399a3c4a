"""A local session's init: adopts and reaps the orphans of a shell's commands, as an instance's init does.

Run as ``python -I -S _reaper.py PROGRAM [ARG...]`` (standard library only; PROGRAM an absolute path): becomes
a child subreaper (``PR_SET_CHILD_SUBREAPER``), starts PROGRAM on its own stdin/stdout/stderr, lets go of
them, reaps every child, and exits with PROGRAM's status. PROGRAM dies with it (``PR_SET_PDEATHSIG``), as a
guest's processes die with the VM. Orphans then land here, not among the children of the host's init, which
other processes change all the time (see :mod:`cernvm_fixtures.transport.shell` on why that matters).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36


def main() -> None:
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    parent = os.getpid()
    program = os.fork()
    if program == 0:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(137)
        os.execv(sys.argv[1], sys.argv[1:])
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    while True:
        pid, status = os.wait()
        if pid == program:
            code = os.waitstatus_to_exitcode(status)
            os._exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main()
