"""The API key every test service starts with (its first-start admin key) and the settings
that lift the rate limits for tests that are not about them."""

from __future__ import annotations

from service.api_config import SCOPES

TEST_KEY = "rvk_test_" + "0123456789abcdef" * 3
AUTH = {"Authorization": f"Bearer {TEST_KEY}"}

API_ENV = {"REVIVAL_API__BOOTSTRAP_KEY": TEST_KEY} | {
    f"REVIVAL_API__RATE_LIMITS__{scope.upper()}__{field}": "1000000"
    for scope in SCOPES
    for field in ("PER_SECOND", "BURST")
}
