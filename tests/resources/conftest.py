from tests.fixtures.http import http_sink  # noqa: F401
