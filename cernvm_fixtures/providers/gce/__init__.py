"""Google Compute Engine through google-cloud-compute: the CernVM GCE recipe, made safe and leak-proof.

What a launch creates (each recorded in the ledger *before* its create call, and labelled with the ledger
entry's fields within GCE's label rules):

* if ``image`` is a local file: the tarball (a ``.tar.gz`` checked to hold only ``disk.raw``, GNU format, a whole
  number of GiB; or one made so from a disk, see :mod:`.tarball`) as an object in ``bucket`` and an image made
  from it (``images.insert`` with ``rawDisk.source``), both named by the tarball's content hash, so a later run
  reuses them; the run deletes them at the end only when it made them (see :mod:`.image`);
* a firewall rule admitting tcp/22 from ``ssh_cidr`` alone, to a network tag no other instance has
  (firewall rules carry no labels: the ledger entry goes into the rule's description);
* the instance, with the run's SSH key in *its own* metadata (``ssh-keys``, ``block-project-ssh-keys``),
  never in project-wide metadata, and the context as the ``user-data`` metadata key (see :mod:`.bodies`).

Every long-running operation is waited for through its zone or global operation, on the same endpoint as
the call that started it. Teardown goes instance, firewall rule, image, object; deletes only what carries
this run's labels; "already gone" is fine. ``leftovers`` finds ours by labels alone, for ``sweep``.

Credentials come only from Application Default Credentials (``google.auth.default()``): the
GOOGLE_APPLICATION_CREDENTIALS file, gcloud's ADC, or the metadata server; nothing secret is logged,
recorded or written.

Modules, leaf first: :mod:`.api` (the SDK: clients, errors, operations), :mod:`.labels` (names, the ledger entry
on the platform), :mod:`.options`, :mod:`.tarball`, :mod:`.image`, :mod:`.bodies`, :mod:`.teardown`, :mod:`.machine`,
:mod:`.provider`.
"""

from __future__ import annotations

from .api import ERRORS, client, credentials, reset_clients, wait_operation
from .image import TARBALL, content_hash, find_image, image_link
from .labels import CREATION_ORDER, LABEL_KEY, LABEL_VALUE, OUR_LABELS, description_for, labels_in_description, ours
from .machine import GceMachine
from .options import GceOptions
from .provider import GceProvider

__all__ = [
    "CREATION_ORDER",
    "ERRORS",
    "LABEL_KEY",
    "LABEL_VALUE",
    "OUR_LABELS",
    "TARBALL",
    "GceMachine",
    "GceOptions",
    "GceProvider",
    "client",
    "content_hash",
    "credentials",
    "description_for",
    "find_image",
    "image_link",
    "labels_in_description",
    "ours",
    "reset_clients",
    "wait_operation",
]
