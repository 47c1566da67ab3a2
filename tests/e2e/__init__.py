"""End-to-end tests: every piece of the product a real process (see conftest.py)."""
