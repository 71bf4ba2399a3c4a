"""The CernVM scenario suite: what a correct CernVM instance is, one property per test, each read from the profile.

Shipped in the package, so an installed wheel validates an image: ``pytest --pyargs cernvm_fixtures.scenarios``
or ``cernvm-fixtures validate IMAGE``. The repository's ``scenarios/`` points here.
"""
