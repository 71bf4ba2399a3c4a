"""A local OpenStack for the openstack provider's tests (see :mod:`.cloud`; its fixtures in :mod:`.fixtures`)."""
