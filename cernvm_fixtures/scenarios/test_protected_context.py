"""A password-protected context (CernVM's release checklist: "contextualize with a password protected context").

In CernVM this is a CernVM Online context stored encrypted on the CernVM Online server, which decrypts it when a user
types its password in the service's web pages while pairing the VM by PIN; the VM only receives the decrypted user
data. A profile says in ``protected_context.supported`` whether there is anything of the image's to test; where
there is not (every profile so far), the scenario is skipped with the profile's reason, booting nothing.
"""

from cernvm_fixtures import expect_ahead


def test_password_protected_context(cernvm_target):
    supported = expect_ahead(cernvm_target, "protected_context.supported")  # skipped here with the profile's reason
    raise AssertionError(
        f"profile {cernvm_target.profile!r} sets protected_context.supported = {supported!r}, but the image has no "
        "mechanism of its own for a password-protected context that this suite could check: only false, with "
        "the reason, is valid"
    )
