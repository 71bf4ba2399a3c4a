"""Local stand-ins for cloud APIs that have no emulator, driven by the vendors' real SDKs over loopback."""
