import pytest


@pytest.fixture(autouse=True)
def _keyset(keyset):
    """Every test here may take backups."""
