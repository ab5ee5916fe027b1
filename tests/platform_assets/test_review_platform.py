"""Bugs found by reviewing the code location as a stranger (session 5), each reproduced here
before it was fixed: every test below failed on main before its fix."""

from __future__ import annotations

import dagster as dg

from platform_assets.definitions import build_definitions
from platform_assets.replication.names import partitions_def_name, replica_key
from resources.replicator import ReplicatorResource
from scripts.jvm import free_port


def _replica(defs: dg.Definitions, key: dg.AssetKey) -> list[dg.AssetsDefinition]:
    return [a for a in defs.assets if isinstance(a, dg.AssetsDefinition) and key in a.keys]


# --------------------------------------------------------------------------- retry rule
def test_a_replica_whose_destination_refuses_connections_is_retried(tmp_path, instance) -> None:
    """A destination that is down (connection refused: a NameNode restarting) is a failure a
    retry can cure. The engine reports it as the run's error, not as a file's; the adapter
    took every run-level error as not retryable, so the step's RetryPolicy never retried."""
    port = free_port()  # nothing listens there: every connection is refused
    spec = tmp_path / "replication.yaml"
    (tmp_path / "onprem" / "events" / "dt=1").mkdir(parents=True)
    (tmp_path / "onprem" / "events" / "dt=1" / "a.csv").write_text("a\n")
    spec.write_text(f"""\
version: 1
platform:
  state_path: state.db
  retries: {{max_retries: 2, delay_s: 0}}
clusters:
  onprem: {{uri: onprem}}
  dr: {{uri: "sftp://replicator@127.0.0.1:{port}/dr"}}
datasets:
  events:
    source: {{cluster: onprem, path: events}}
    partitions: "dt=*"
    targets: [{{cluster: dr, path: events}}]
""")
    instance.add_dynamic_partitions(partitions_def_name("events"), ["dt=1"])
    defs = build_definitions(spec)
    key = replica_key("events", "dr")
    result = dg.materialize(_replica(defs, key), instance=instance, partition_key="dt=1",
                            selection=[key], raise_on_error=False,
                            resources={"replicator": ReplicatorResource(
                                state_path=str(tmp_path / "state.db"), retries=0)})
    assert not result.success
    retried = [e for e in result.all_events
               if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert len(retried) == 2  # max_retries of the spec, then the failure stands
    assert all("Unable to connect" in str(e.event_specific_data.error) for e in retried)
