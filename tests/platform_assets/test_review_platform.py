"""Bugs found by reviewing the code location as a stranger (session 5), each reproduced here
before it was fixed: every test below failed on main before its fix."""

from __future__ import annotations

import dagster as dg

from platform_assets.definitions import build_definitions
from platform_assets.replication.names import partitions_def_name, replica_key
from resources.replicator import ReplicatorResource
from scripts.jvm import free_port
from tests.fixtures.telegram import bot_api  # noqa: F401


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


# --------------------------------------------------------------------------- chat bot
def test_a_bot_command_whose_reply_fails_is_not_run_twice(tmp_path, bot_api) -> None:  # noqa: F811
    """``/run`` launched its run, then the reply to the chat failed (the Bot API answered
    502): the update's offset was only saved after the reply, so the next round handled the
    same ``/run`` again and launched a second run. Commands run at most once; the reply is
    sent on the next round."""
    from platform_assets.bot import build_bot
    from platform_assets.trigger import TriggerApp, serve_in_thread
    from resources.telegram import TelegramError
    from tests.fixtures.telegram import TOKEN as BOT_TOKEN
    from tests.platform_assets.landing.conftest import make_landing

    launches: list[str] = []
    landing = make_landing(tmp_path / "landing")
    app = TriggerApp(landing.spec, "trigger-t0ken", lambda plan: launches.append(plan.job) or
                     f"run-{len(launches)}")
    server, trigger_url = serve_in_thread(app)
    try:
        landing.spec_path.write_text(
            landing.spec_path.read_text()
            + f"bot:\n  token_env: BOT_TEST_TOKEN\n  api_url: {bot_api.url}\n"
              f"  allowed_chats: [111]\n  trigger_url: {trigger_url}\n"
              f"  state: bot/state.json\n  poll_s: 0\n")
        env = {"BOT_TEST_TOKEN": BOT_TOKEN, "LANDING_TEST_TOKEN": "trigger-t0ken"}
        bot = build_bot(landing.spec, env)
        bot_api.say(111, "/run orders")
        bot_api.fail["sendMessage"] = 1  # the reply to the command answers 502
        try:
            bot.run_once(poll_s=0)
        except TelegramError:
            pass  # the serve loop backs off and calls again
        bot.run_once(poll_s=0)
        build_bot(landing.spec, env).run_once(poll_s=0)  # and a restarted bot
        assert launches == ["landing_orders"]
        assert [t for t in bot_api.texts(111) if "launched" in t] == [
            "🚀 orders: run run-1 launched (landing_orders)."]
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------- spec validation
SPEC_HEAD = "clusters:\n  a: {uri: a}\n  b: {uri: b}\n  g: {uri: 'gs://bkt/'}\n  h: {uri: 'gs://bkt/t'}\n"


def _spec_error(tmp_path, text: str | bytes) -> str:
    import pytest

    from platform_assets.config import SpecError, load_spec

    p = tmp_path / "replication.yaml"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(SpecError) as err:
        load_spec(p)
    assert str(err.value).startswith(f"{p}")  # the file first
    return str(err.value)


def test_a_spec_that_is_not_utf8_is_a_spec_error_not_a_traceback(tmp_path) -> None:
    """Before: UnicodeDecodeError escaped load_spec (the code location, the trigger and the
    bot catch SpecError), a traceback instead of the file and what was expected."""
    msg = _spec_error(tmp_path, b"clusters:\n  a: {uri: /data/caf\xe9}\n")
    assert ":2: expected UTF-8 text: byte 0xe9" in msg


def test_infinite_or_nan_numbers_in_the_spec_are_refused_with_their_key(tmp_path) -> None:
    """Before: ``delay_s: .inf`` was taken (a retried step would sleep forever) and
    ``min_age_s: .inf`` held every file back for ever, silently."""
    msg = _spec_error(tmp_path, "platform: {retries: {delay_s: .inf}}\n" + SPEC_HEAD)
    assert "platform.retries.delay_s: Input should be a finite number" in msg
    msg = _spec_error(tmp_path, SPEC_HEAD + "datasets:\n  d: {source: {cluster: a}, "
                                            "targets: [{cluster: b}], min_age_s: .inf}\n")
    assert "datasets.d.min_age_s: Input should be a finite number" in msg


def test_two_datasets_replicating_into_one_place_are_refused(tmp_path) -> None:
    """Before: two datasets whose replicas were the same directory (or one inside the
    other's copied tree) loaded fine; a full load of one (delete) removes the other's files."""
    ds = "datasets:\n  d: {{source: {{cluster: a, path: s1}}, {d}}}\n  e: {{source: {{cluster: a, path: s2}}, {e}}}\n"
    same = ds.format(d="targets: [{cluster: b, path: t}]", e="targets: [{cluster: b, path: t}]")
    assert ("datasets.e.targets[0]: expected a place no other dataset's replica overlaps, got "
            "'b/t', which overlaps datasets.d.targets[0] ('b/t')") in _spec_error(tmp_path, SPEC_HEAD + same)
    # another cluster name for the same bucket prefix
    alias = ds.format(d="targets: [{cluster: g, path: t}]", e="targets: [{cluster: h}]")
    assert "overlaps datasets.d.targets[0] ('gs://bkt/t')" in _spec_error(tmp_path, SPEC_HEAD + alias)
    # inside an unpartitioned dataset's root; inside a partition directory of a partitioned one
    nested = ds.format(d="targets: [{cluster: b}], partitions: none", e="targets: [{cluster: b, path: x}]")
    assert "overlaps datasets.d.targets[0]" in _spec_error(tmp_path, SPEC_HEAD + nested)
    nested = ds.format(d="targets: [{cluster: b}], partitions: 'dt=*'",
                       e="targets: [{cluster: b, path: dt=1/x}]")
    assert "overlaps datasets.d.targets[0]" in _spec_error(tmp_path, SPEC_HEAD + nested)
    # beside the partition directories of a partitioned dataset: no overlap
    from platform_assets.config import load_spec

    (tmp_path / "ok.yaml").write_text(SPEC_HEAD + ds.format(
        d="targets: [{cluster: b}], partitions: 'dt=*'", e="targets: [{cluster: b, path: pinned}]"))
    assert sorted(load_spec(tmp_path / "ok.yaml").datasets) == ["d", "e"]


def test_a_boolean_where_the_spec_wants_a_number_is_refused_with_its_key(tmp_path) -> None:
    """Before: ``max_retries: true`` loaded as 1 retry and ``workers: yes`` as one worker
    (pydantic's lax mode takes a YAML boolean as an integer), silently."""
    msg = _spec_error(tmp_path, "platform: {retries: {max_retries: true}}\n" + SPEC_HEAD)
    assert "platform.retries.max_retries: Input should be a valid integer" in msg
    msg = _spec_error(tmp_path, SPEC_HEAD + "datasets:\n  d: {source: {cluster: a}, "
                                            "targets: [{cluster: b}], min_age_s: no}\n")
    assert "datasets.d.min_age_s: Input should be a valid number" in msg


def test_hash_and_query_marks_in_places_are_names_not_uri_parts(tmp_path) -> None:
    """Before: a cluster URI ``gs://bkt/run#1`` loaded, and the engine copied into
    ``gs://bkt/run``; a partition directory named ``v#2`` under a URI cluster became
    ``.../events/v#2``, whose '#' the engine dropped. Now the URI is refused with its key, and
    names below a URI are percent-encoded (the engine decodes them back)."""
    from platform_assets.config import load_spec
    from replicator.filesystems.registry import resolve

    msg = _spec_error(tmp_path, "clusters:\n  a: {uri: a}\n  b: {uri: 'gs://bkt/run#1'}\n")
    assert "clusters.b.uri: expected a URI without '?' or '#'" in msg
    p = tmp_path / "replication.yaml"
    p.write_text(SPEC_HEAD + "datasets:\n  d: {source: {cluster: a, path: 'in#1'}, "
                             "targets: [{cluster: g, path: 'x?y'}]}\n")
    spec = load_spec(p)
    uri = spec.endpoint_uri(spec.datasets["d"].targets[0], "v#2 100%")
    assert uri == "gs://bkt/x%3Fy/v%232 100%25"
    assert resolve(uri)[1] == "bkt/x?y/v#2 100%"
    local = spec.endpoint_uri(spec.datasets["d"].source, "v#2")
    assert local == f"{tmp_path}/a/in#1/v#2" and resolve(local)[1] == local
    # the partitions the sensors list and copy go the same way (join_partition)
    from platform_assets.datasets import resolve as resolve_spec

    view = resolve_spec(spec)["d"]
    assert view.targets[0].uri("v#2") == "gs://bkt/x%3Fy/v%232"
    assert view.source_uri("v#2") == f"{tmp_path}/a/in#1/v#2"


def test_a_file_uri_in_the_spec_is_the_place_the_cli_means(tmp_path) -> None:
    """Before: ``replicator copy file:///data/a%20b`` copied from ``/data/a b`` (the engine
    decodes a file:// URI), while a spec cluster ``uri: file:///data/a%20b`` meant a directory
    literally named ``a%20b``. Now the spec decodes it the same way, and a file:// URI with
    ``#`` or ``?`` (a fragment, a query to the engine) is refused with its key."""
    from platform_assets.config import load_spec
    from platform_assets.datasets import resolve as resolve_spec
    from platform_assets.landing.view import landing_view
    from replicator.filesystems.registry import resolve

    where = f"{tmp_path}/a b/100%"
    uri = "file://" + where.replace("%", "%25").replace(" ", "%20")
    assert resolve(uri)[1] == where  # the engine (CLI) side
    p = tmp_path / "replication.yaml"
    p.write_text(f"clusters:\n  a: {{uri: '{uri}'}}\n  g: {{uri: 'gs://bkt/'}}\n"
                 "datasets:\n  d: {source: {cluster: a, path: in}, targets: [{cluster: g}], partitions: 'dt=*'}\n"
                 "landing:\n  l: {source: {cluster: a, path: drop}, raw: {cluster: a, path: raw},"
                 " output: {cluster: a, path: out}, columns: {x: int}}\n")
    spec = load_spec(p)  # the platform side
    assert spec.cluster_root("a") == where
    assert spec.endpoint_uri(spec.datasets["d"].source, "dt=1") == f"{where}/in/dt=1"
    assert resolve(spec.endpoint_uri(spec.datasets["d"].source))[1] == f"{where}/in"
    assert resolve_spec(spec)["d"].source_uri("dt=1") == f"{where}/in/dt=1"
    assert landing_view(spec, "l").raw == f"{where}/raw"
    # an audit file names the place the same way (its fields are split on spaces: a space in
    # a path can only be written %20)
    from platform_assets.replication.audit_sensor import parse_audit_text

    accepted, rejected = parse_audit_text(resolve_spec(spec), f"{uri}/in/dt=1 gs://bkt/dt=1\n")
    assert not rejected and [a.partition for a in accepted] == ["dt=1"]
    msg = _spec_error(tmp_path, "clusters:\n  a: {uri: 'file:///data/run#1'}\n")
    assert "clusters.a.uri: expected a URI without '?' or '#'" in msg
