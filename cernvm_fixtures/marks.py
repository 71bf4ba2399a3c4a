"""The mark on everything cernvm-fixtures creates: an HMAC of the ledger entry's identity, keyed by a secret that only
this user's state directory (or a CI secret store) holds, so a sweep by tags deletes only what it can prove it made.

Tags, labels and metadata can be set by anyone with a tagging permission (Azure's Tag Contributor, ``ec2:CreateTags``)
and are readable by everyone in the account; the key is neither. A leaf module: the ledger's directories only.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from .dirs import state_dir, write_once

if TYPE_CHECKING:
    from .ledger import Resource

KEY_ENV = "CERNVM_FIXTURES_MARK_KEY"
"""A shared secret (any string) that replaces the state directory's key: set it from the CI's secret store where runs
on several machines (or throw-away runners) must sweep each other's leftovers."""
KEY_FILE = "mark.key"
"""The state directory's own key: 32 random bytes, created once, mode 0600."""
MARK_LENGTH = 32
"""Hex digits of the mark (128 bits): one tag or label value on every platform."""


def key() -> bytes:
    """The mark key: ``$CERNVM_FIXTURES_MARK_KEY``, else the state directory's key file (created on first use)."""
    shared = os.environ.get(KEY_ENV)
    if shared:
        return hashlib.sha256(b"cernvm-fixtures mark key\0" + shared.encode()).digest()
    path = state_dir() / KEY_FILE
    try:
        found = path.stat()
    except FileNotFoundError:
        write_once(path, secrets.token_bytes(32))  # another process may win: its key is the one read back
        found = path.stat()
    seen = (path, found.st_ino, found.st_mtime_ns)
    if seen not in _read:  # a sweep decodes every resource's fields: read the file once, not each time
        _read[seen] = path.read_bytes()
    return _read[seen]


_read: dict[tuple[Path, int, int], bytes] = {}
"""Key files read, by path and the file's identity (a state directory made again gets its new key read)."""


def identity(resource: Resource) -> bytes:
    """What the mark covers: the entry fields that never change (not its expiry or kept state, which do)."""
    owner = resource.owner
    parts = (
        resource.provider,
        resource.name,
        resource.run,
        owner.host,
        str(owner.pid),
        str(round(resource.created * 1e6)),
    )
    return "\0".join(parts).encode()


def mark(resource: Resource) -> str:
    """The mark of ``resource``'s ledger entry (hex)."""
    return hmac.new(key(), identity(resource), hashlib.sha256).hexdigest()[:MARK_LENGTH]


def proven(resource: Resource, value: str | None) -> bool:
    """Whether ``value`` (a mark found on the platform) is the mark of ``resource``: the entry was written by a holder
    of this key, not forged or invented."""
    return value is not None and hmac.compare_digest(value, mark(resource))


NAME_MARK_LENGTH = 16
"""Hex digits of a name's mark (64 bits): short enough for a name, too many to guess."""


def name_mark(name: str) -> str:
    """The mark of an object's own name, for objects that carry nothing but a name (an OpenStack key pair): the
    provider names it ``<name>-k<mark>``, which no one without the key can forge."""
    return hmac.new(key(), b"name\0" + name.encode(), hashlib.sha256).hexdigest()[:NAME_MARK_LENGTH]


def proven_name(name: str, value: str) -> bool:
    """Whether ``value`` is the mark of ``name`` under this key."""
    return hmac.compare_digest(value, name_mark(name))
