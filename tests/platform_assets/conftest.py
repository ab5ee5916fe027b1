from tests.fixtures.platform import dagster_home, instance, platform  # noqa: F401
from tests.fixtures.postgres import postgres_server  # noqa: F401
