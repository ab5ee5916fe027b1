"""Hive DDL is built from validated, quoted values only (no Spark needed)."""

from __future__ import annotations

import pytest

from platform_assets.hive.spec import partition_spec
from resources import hive_worker as hw
from resources.hive import HiveClient


def test_create_table_quotes_every_identifier_and_literal() -> None:
    sql = hw.create_table_sql("analytics", "sales", [["id", "bigint"], ["amount", "decimal(10,2)"]],
                              [["dt", "string"]], "file:/data/b/sales", "parquet",
                              {"copy_slave": "1", "copy_finished": "2026-11-21T07:00:00.000001+00:00"})
    assert sql == (
        "CREATE TABLE IF NOT EXISTS `analytics`.`sales` (`id` bigint, `amount` decimal(10,2)) "
        "PARTITIONED BY (`dt` string) STORED AS PARQUET LOCATION 'file:/data/b/sales' "
        "TBLPROPERTIES ('copy_slave' = '1', 'copy_finished' = '2026-11-21T07:00:00.000001+00:00')"
    )
    assert hw.add_partition_sql("db", "t", {"dt": "2026-11-20", "hour": "03"}, "/d/t/dt=2026-11-20/hour=03") == (
        "ALTER TABLE `db`.`t` ADD IF NOT EXISTS PARTITION (`dt` = '2026-11-20', `hour` = '03') "
        "LOCATION '/d/t/dt=2026-11-20/hour=03'"
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: hw.ident("t`; DROP TABLE x"), "expected a Hive identifier"),
        (lambda: hw.ident("1abc"), "expected a Hive identifier"),
        (lambda: hw.col_type("string) ; DROP TABLE x --"), "expected a Hive column type"),
        (lambda: hw.col_type("string'"), "expected a Hive column type"),
        (lambda: hw.partition_clause({"dt": "2026' OR '1'='1"}), "expected a partition value"),
        (lambda: hw.partition_clause({"dt": "../x"}), "expected a partition value"),
        (lambda: hw.partition_clause({}), "at least one partition column"),
        (lambda: hw.location_literal("/x' ; DROP"), "expected a location"),
        (lambda: hw.location_literal("relative/path"), "absolute path or a URI"),
        (lambda: hw.properties_clause({"k'": "v"}), "table property key"),
        (lambda: hw.properties_clause({"k": "v'; --"}), "table property value"),
        (lambda: hw.create_table_sql("d", "t", [["a", "int"]], [], "/x", "csv"), "file format"),
        (lambda: partition_spec("dt=2026';DROP"), "expected name=value levels"),
        (lambda: partition_spec("folder_1"), "expected name=value levels"),
    ],
)
def test_bad_names_and_values_are_refused(call, message: str) -> None:
    with pytest.raises(hw.HiveInputError, match=message):
        call()


def test_partition_spec_parses_hive_layouts() -> None:
    assert partition_spec("dt=2026-11-20/hour=03") == {"dt": "2026-11-20", "hour": "03"}
    assert partition_spec("all") == {}


def test_metastore_setting_is_embedded_or_thrift(tmp_path) -> None:
    assert HiveClient("a", str(tmp_path), "thrift://meta-1:9083,thrift://meta-2:9083").metastore.startswith("thrift")
    with pytest.raises(ValueError, match="expected 'embedded' or thrift://"):
        HiveClient("a", str(tmp_path), "jdbc:mysql://x")
    with pytest.raises(ValueError, match="cluster name"):
        HiveClient("a;b", str(tmp_path))


def test_worker_answers_bad_requests_without_spark(tmp_path) -> None:
    import io
    import json

    worker = hw.Worker(spark=None)
    inp = io.StringIO(
        '{"id": 1, "op": "describe_table", "args": {"database": "x;drop", "table": "t"}}\n'
        '{"id": 2, "op": "__class__"}\nnot json\n{"id": 3, "op": "shutdown"}\n'
        '{"id": 4, "op": "ping"}\n'
    )
    out = io.StringIO()
    hw.serve(worker, inp, out)
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert lines[0] == {"id": 1, "ok": False, "kind": "input",
                        "error": "expected a Hive identifier (letters, digits, '_'), got 'x;drop'"}
    assert lines[1]["ok"] is False and "unknown operation" in lines[1]["error"]
    assert lines[2]["ok"] is False and lines[2]["id"] is None
    assert lines[3] == {"id": 3, "ok": True, "result": None}
    assert len(lines) == 4  # nothing served after shutdown
