"""One router per domain; every route of the JSON API (but the health checks) is under
API_PREFIX, written here once."""

API_PREFIX = "/v1"
