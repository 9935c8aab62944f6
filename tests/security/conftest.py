"""tests/security: the adversarial tests, as a store writer and an anonymous client would play
them (issue 18). Fixtures come from tests/conftest.py."""
