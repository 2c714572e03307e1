"""The distributed end-to-end tests: one package, so that its modules share one stack (conftest.py)."""
