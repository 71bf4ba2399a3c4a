"""cernvm-fixtures: boot CernVM on every documented platform and check it with pytest."""

__version__ = "0.1.0"
