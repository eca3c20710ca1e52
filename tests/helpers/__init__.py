"""Helper programs and fixtures used by the tests (not tests themselves)."""
