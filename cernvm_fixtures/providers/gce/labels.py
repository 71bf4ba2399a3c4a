"""Names and labels (a leaf): GCE's naming rules, the kinds a launch creates, and the ledger entry on the platform.

Every resource carries its ledger entry as labels: the kit's fields (:func:`..kit.encode_fields`, made for GCE's
label rules) next to the user's own. A firewall rule has no labels, so the same fields go into its description
(:func:`description_for`); an uploaded object carries them as its metadata.
"""

from __future__ import annotations

import json
import re

from ...ledger import Resource
from ..kit import FIELD_BUDGET, FIELD_PREFIX, encode_fields, field

NAME = re.compile(r"^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$")
ZONE = re.compile(r"^[a-z]+-[a-z]+\d+-[a-z]$")
LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
LABEL_LIMIT = 64
"""Labels GCE allows per resource."""
OUR_LABELS = FIELD_BUDGET
"""Labels cernvm-fixtures sets at most (the ledger entry's fields); the rest of GCE's 64 are the user's."""
OBJECT_PREFIX = "cernvm-fixtures/"
"""Key prefix of uploaded images in the bucket (sweep looks there)."""

CREATION_ORDER = ("object", "image", "firewall", "instance")
"""Resource kinds in the order they depend on each other; teardown goes the other way."""

DESCRIPTION = "cernvm-fixtures "
"""How a firewall rule's description that holds a ledger entry starts."""


def label_problems(labels: dict[str, str], reserved: int = OUR_LABELS) -> list[str]:
    """What is wrong with the user's labels under GCE's rules and ours (empty: nothing)."""
    problems = []
    if len(labels) > LABEL_LIMIT - reserved:
        problems.append(
            f"{len(labels)} labels, at most {LABEL_LIMIT - reserved} "
            f"(GCE allows {LABEL_LIMIT}, cernvm-fixtures sets up to {reserved})"
        )
    for key, value in labels.items():
        if not LABEL_KEY.match(key):
            problems.append(f"key {key!r} is not a lowercase letter followed by up to 62 of a-z 0-9 _ -")
        if not LABEL_VALUE.match(value):
            problems.append(f"value {value!r} of {key!r} is not up to 63 of a-z 0-9 _ -")
        if key.startswith(FIELD_PREFIX):
            problems.append(f"key {key!r} uses the prefix {FIELD_PREFIX!r}, which cernvm-fixtures sets itself")
    return problems


def description_for(resource: Resource) -> str:
    """A firewall rule's description: it has no labels, so the entry's fields go here, as JSON."""
    return DESCRIPTION + json.dumps(encode_fields(resource), sort_keys=True, separators=(",", ":"))


def labels_in_description(description: str) -> dict[str, str]:
    """The fields :func:`description_for` wrote (empty for any other description)."""
    if not description.startswith(DESCRIPTION + "{"):
        return {}
    try:
        found = json.loads(description[len(DESCRIPTION) :])
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def ours(labels: dict[str, str], resource: Resource) -> bool:
    """Whether a resource found by name carries this ledger entry's run and machine (else it is someone else's)."""
    return field(labels, "run") == resource.run and field(labels, "name") == resource.name
