from tests.fixtures.http import http_sink  # noqa: F401
from tests.fixtures.kafka import kafka_broker  # noqa: F401
