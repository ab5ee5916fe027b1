from tests.fixtures.platform import dagster_home, instance, platform  # noqa: F401
