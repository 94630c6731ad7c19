"""Makes notebooks/conftest.py importable as notebooks.conftest (tests/ has its own conftest)."""
