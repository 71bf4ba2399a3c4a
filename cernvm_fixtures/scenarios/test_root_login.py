"""Root cannot log in with a password (CernVM's release checklist), tried from the host against the instance's
SSH server, on connections of their own (the passwords are never shown).

``ssh.password_authentication`` says whether the server offers password logins at all (CernVM 4: yes, for the
users its context creates; the appliance: no); ``ssh.root_passwords`` are the passwords tried for root, each of
which must be refused.
"""

import pytest

from cernvm_fixtures import expect
from cernvm_fixtures.errors import Unsupported


def test_password_authentication_as_the_profile_says(cernvm):
    wanted = expect(cernvm, "ssh.password_authentication")
    try:
        methods = cernvm.auth_methods("root")
    except Unsupported as e:
        pytest.skip(f"{cernvm.target.name}: {e.reason}")
    offered = "password" in methods
    assert offered == (wanted == "yes"), (
        f"the SSH server offers root {', '.join(methods) or 'nothing'}: password authentication is "
        f"{'offered' if offered else 'not offered'}, profile {cernvm.profile.name!r} expects "
        f"ssh.password_authentication = {wanted!r}"
    )


def test_root_cannot_log_in_with_a_password(cernvm):
    passwords = expect(cernvm, "ssh.root_passwords")
    try:
        accepted = sum(cernvm.password_login("root", password) for password in passwords)
    except Unsupported as e:
        pytest.skip(f"{cernvm.target.name}: {e.reason}")
    assert not accepted, (
        f"root logged in over SSH with a password: {accepted} of the {len(passwords)} password(s) of profile "
        f"{cernvm.profile.name!r}'s ssh.root_passwords accepted (not shown)"
    )
