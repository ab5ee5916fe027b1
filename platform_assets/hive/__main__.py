"""``python -m platform_assets.hive copy-table ...`` (see :mod:`platform_assets.hive.copy_table`)."""

from platform_assets.hive.copy_table import main

raise SystemExit(main())
