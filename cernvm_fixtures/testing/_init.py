"""The "machine" of the local provider: a process that boots (writes a boot id), reboots on SIGUSR1, stops on SIGTERM.

Run as ``python -I -S _init.py DIRECTORY BOOT_SECONDS`` (standard library only): it detaches (forks, the parent exits,
so no process holds it as a child, as no process holds a VM), writes ``DIRECTORY/init.pid`` and logs to
``DIRECTORY/console.log``.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import uuid
from pathlib import Path


def main() -> None:
    directory, boot_seconds = Path(sys.argv[1]), float(sys.argv[2])
    if os.fork():
        os._exit(0)
    reboot = threading.Event()
    signal.signal(signal.SIGUSR1, lambda *_: reboot.set())
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    (directory / "init.pid").write_text(str(os.getpid()))
    with open(directory / "console.log", "a", buffering=1) as console:
        while True:
            (directory / "ready").unlink(missing_ok=True)
            console.write("local machine: booting\n")
            time.sleep(boot_seconds)
            boot_id = uuid.uuid4().hex
            (directory / "boot_id").write_text(boot_id)
            (directory / "ready").touch()
            console.write(f"local machine: up, boot id {boot_id}\n")
            reboot.wait()
            reboot.clear()
            console.write("local machine: rebooting\n")


if __name__ == "__main__":
    main()
