"""`make demo`: the engine from its CLI, then the Dagster platform run (when present)."""

from __future__ import annotations

import importlib.util

from scripts import demo_cli


def main() -> None:
    demo_cli.main()
    if importlib.util.find_spec("scripts.demo_hive") is not None:
        from scripts import demo_hive

        demo_hive.clean()  # last run's Hive demo data, before the platform demo lists sources
    if importlib.util.find_spec("scripts.demo_platform") is not None:
        from scripts import demo_platform

        print("\n== platform demo (Dagster)")
        demo_platform.main()
    if importlib.util.find_spec("scripts.demo_landing") is not None:
        from scripts import demo_landing

        print("\n== landing zone: sensor -> raw -> validation -> Parquet -> report")
        demo_landing.main()
    if importlib.util.find_spec("scripts.demo_hive") is not None:
        from scripts import demo_hive

        print("\n== Hive table replicated to a second cluster (Spark, two metastores)")
        demo_hive.main()
    print("\ndemo: done")


if __name__ == "__main__":
    main()
