"""The serving tests use the trained world of tests/conftest.py (`served_world`, `served_env`)."""
