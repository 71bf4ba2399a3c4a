"""A local Azure Resource Manager and Azurite for the azure provider's tests."""
