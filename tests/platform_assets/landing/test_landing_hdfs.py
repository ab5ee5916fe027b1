"""The landing pipeline with its raw area and Parquet output on a real HDFS (MiniDFSCluster),
over hdfs:// (hdfs-native RPC) and webhdfs://: sensor -> ingest -> validation -> Parquet ->
report, and a rejected file. What lands on the cluster is read back with plain WebHDFS REST
calls (not our client) and with pyarrow."""

from __future__ import annotations

import csv
import io
import json

import pyarrow.parquet as pq
import pytest
import requests

from platform_assets.bot import _read
from platform_assets.definitions import build_definitions
from platform_assets.landing.names import (
    TAG_BATCH,
    ingested_key,
    landing_job_name,
    parquet_key,
    report_key,
)
from platform_assets.runner import QUIET
from tests.platform_assets.landing.conftest import GOOD_CSV, make_landing
from tests.platform_assets.landing.test_landing_pipeline import _latest_md, _tick

BAD_CSV = "order_id,customer,amount,dt\n10,ada,1,2026-11-20\n11,,2,2026-11-20\n"


class Rest:
    """Plain WebHDFS REST calls against the real NameNode (a client that is not ours)."""

    def __init__(self, base: str, user: str) -> None:
        self.base = base
        self.user = user

    def _url(self, path: str) -> str:
        return f"{self.base}/webhdfs/v1{path}"

    def names(self, path: str) -> list[str]:
        r = requests.get(self._url(path), params={"op": "LISTSTATUS"}, timeout=30)
        r.raise_for_status()
        return [st["pathSuffix"] for st in r.json()["FileStatuses"]["FileStatus"]]

    def create(self, path: str, data: bytes) -> None:
        r = requests.put(self._url(path), params={"op": "CREATE", "user.name": self.user},
                         allow_redirects=False, timeout=30)
        r.raise_for_status()
        requests.put(r.headers["Location"], data=data, timeout=30).raise_for_status()

    def status(self, path: str) -> dict | None:
        r = requests.get(self._url(path), params={"op": "GETFILESTATUS"}, timeout=30)
        if r.status_code == 404:
            return None
        r.raise_for_status()
        return r.json()["FileStatus"]

    def files(self, path: str) -> dict[str, int]:
        """Every file under ``path`` (relative path -> length)."""
        out: dict[str, int] = {}
        stack = [""]
        while stack:
            rel = stack.pop()
            r = requests.get(self._url(f"{path}/{rel}".rstrip("/")), params={"op": "LISTSTATUS"},
                             timeout=30)
            r.raise_for_status()
            for st in r.json()["FileStatuses"]["FileStatus"]:
                child = f"{rel}/{st['pathSuffix']}".lstrip("/")
                if st["type"] == "DIRECTORY":
                    stack.append(child)
                else:
                    out[child] = st["length"]
        return out

    def read(self, path: str) -> bytes:
        r = requests.get(self._url(path), params={"op": "OPEN"}, timeout=60)
        r.raise_for_status()
        return r.content


@pytest.fixture
def lake(request, hdfs_cluster, tmp_path):
    """A landing zone whose lake cluster (raw + output) is a fresh directory on the real HDFS,
    reached over ``request.param``: hdfs (RPC) or webhdfs."""
    base = hdfs_cluster.fresh_dir("landing")
    uri = hdfs_cluster.uri(base) if request.param == "hdfs" else hdfs_cluster.webhdfs_uri(base)
    landing = make_landing(tmp_path / "landing", lake_uri=uri)
    return landing, base, Rest(hdfs_cluster.webhdfs, hdfs_cluster.superuser), request.param


def _parquet(rest: Rest, output: str) -> dict[str, int]:
    return {p: n for p, n in rest.files(output).items()
            if not p.startswith(("_", ".")) and p.endswith(".parquet")}


def _rows(rest: Rest, output: str) -> list[tuple]:
    rows = []
    for p in sorted(_parquet(rest, output)):
        t = pq.read_table(io.BytesIO(rest.read(f"{output}/{p}")))
        dt = p.split("/")[0].removeprefix("dt=")
        rows += [(r["order_id"], r["customer"], r["amount"], dt) for r in t.to_pylist()]
    return sorted(rows)


@pytest.mark.parametrize("lake", ["hdfs", "webhdfs"], indirect=True)
def test_landing_hdfs_good_file_to_parquet_and_report(lake, instance) -> None:
    landing, base, rest, scheme = lake
    raw, output = f"{base}/raw/orders", f"{base}/curated/orders"
    landing.write("a.csv", GOOD_CSV)
    defs = build_definitions(landing.spec_path)

    result, launched = _tick(landing, defs, instance)
    assert len(launched) == 1 and launched[0].success
    batch = result.run_requests[0].tags[TAG_BATCH]

    # the raw copy is on the cluster, byte for byte, verified by the engine
    assert rest.files(raw) == {"a.csv": len(GOOD_CSV), "_SUCCESS.json": pytest.approx(1, abs=1 << 20)}
    assert rest.read(f"{raw}/a.csv") == GOOD_CSV.encode()
    assert _latest_md(instance, ingested_key("orders"))["verified"].value is True

    # Parquet on the cluster, partitioned by dt, with the declared types; nothing staged left
    assert sorted(_parquet(rest, output)) == [
        "dt=2026-11-20/a-part-0.parquet", "dt=2026-11-21/a-part-0.parquet",
        "dt=2026-11-22/a-part-0.parquet"]
    schema = pq.read_schema(io.BytesIO(rest.read(f"{output}/dt=2026-11-20/a-part-0.parquet")))
    assert (str(schema.field("order_id").type), str(schema.field("amount").type)) == ("int64", "double")
    assert _rows(rest, output) == [(1, "ada", 10.5, "2026-11-20"), (2, "bob", 3.0, "2026-11-21"),
                                   (3, "cy", 4.25, "2026-11-20"), (4, "dee", 7.0, "2026-11-22")]
    assert not [n for n in rest.names(output) if n.startswith(".")]

    # the report, its charts and CSV sit next to the data on the cluster; the metadata and the
    # report_ready event carry URIs the bot can read
    md = _latest_md(instance, report_key("orders"))
    prefix = f"{scheme}://"
    report_uri = md["report"].value
    assert report_uri.startswith(prefix) and report_uri.endswith(
        f"{output}/_landing/reports/{batch}/report.html")
    page = rest.read(f"{output}/_landing/reports/{batch}/report.html").decode()
    assert page.count("<svg") == 4 and "a.csv" in page and batch in page
    assert _read(report_uri).decode() == page
    assert _read(md["charts_png"].value).startswith(b"\x89PNG\r\n\x1a\n")
    rows = list(csv.DictReader(io.StringIO(_read(md["summary_csv"].value).decode())))
    assert [(r["file"], r["rows"], r["status"], r["parquet_files"]) for r in rows] == [
        ("a.csv", "4", "ok", "3")]
    if scheme == "webhdfs":  # the link opens the page straight from the NameNode
        assert requests.get(md["report_url"].value, timeout=30).text == page
    record = json.loads(rest.read(f"{output}/_landing/batches/{batch}.json"))
    assert record["files"] == ["a.csv"] and record["validation"][0]["status"] == "ok"

    events = [json.loads(line) for line in landing.outbox()]
    assert [e["event"] for e in events] == ["detected", "ingested", "validated", "converted",
                                            "report_ready"]
    assert events[-1]["report"] == report_uri and events[-1]["report_png"] == md["charts_png"].value

    # a rerun of the batch gives the same files; a changed file replaces its Parquet parts
    job = defs.resolve_job_def(landing_job_name("orders"))
    assert job.execute_in_process(instance=instance, tags={TAG_BATCH: batch}, run_config=QUIET).success
    assert sorted(_parquet(rest, output)) == [
        "dt=2026-11-20/a-part-0.parquet", "dt=2026-11-21/a-part-0.parquet",
        "dt=2026-11-22/a-part-0.parquet"]
    landing.write("a.csv", "order_id,customer,amount,dt\n1,ada,1,2026-12-01\n", age_s=60)
    _, launched = _tick(landing, defs, instance, result.cursor)
    assert launched[0].success
    assert sorted(_parquet(rest, output)) == ["dt=2026-12-01/a-part-0.parquet"]
    assert _rows(rest, output) == [(1, "ada", 1.0, "2026-12-01")]
    history = rest.read(f"{output}/_landing/history.jsonl").decode().splitlines()
    assert len(history) == 3 and [json.loads(h)["rows"] for h in history] == [4, 4, 1]


@pytest.mark.parametrize("lake", ["hdfs"], indirect=True)
def test_landing_hdfs_bad_file_is_rejected_and_nothing_is_converted(lake, instance) -> None:
    landing, base, rest, _ = lake
    raw, output = f"{base}/raw/orders", f"{base}/curated/orders"
    landing.write("good.csv", GOOD_CSV)
    landing.write("bad.csv", BAD_CSV)
    defs = build_definitions(landing.spec_path)

    _, launched = _tick(landing, defs, instance)
    assert len(launched) == 1 and not launched[0].success
    assert sorted(rest.files(raw)) == ["_SUCCESS.json", "bad.csv", "good.csv"]
    assert not _parquet(rest, output)
    assert not instance.fetch_materializations(parquet_key("orders"), limit=1).records
    events = [json.loads(line) for line in landing.outbox()]
    assert [e["event"] for e in events] == ["detected", "ingested", "rejected"]
    assert (events[2]["file"], events[2]["row"], events[2]["rule"]) == ("bad.csv", 2, "not_null")
    # the good file waits on the cluster for the next batch
    assert json.loads(rest.read(f"{output}/_landing/pending.json")) == ["good.csv"]

    landing.write("bad.csv", BAD_CSV.replace("11,,2", "11,bo,2"), age_s=60)
    _, launched = _tick(landing, defs, instance)
    assert len(launched) == 1 and launched[0].success
    assert len(_rows(rest, output)) == 6  # good.csv (4) + the corrected bad.csv (2)
    assert json.loads(rest.read(f"{output}/_landing/pending.json")) == []


@pytest.mark.parametrize("lake", ["webhdfs"], indirect=True)
def test_landing_hdfs_a_failed_swap_leaves_the_previous_parquet(lake, instance) -> None:
    """A partition directory that cannot be made (a file stands at its name on the cluster)
    fails the Parquet step before any earlier output is removed, and leaves nothing staged."""
    landing, base, rest, _ = lake
    output = f"{base}/curated/orders"
    landing.write("a.csv", GOOD_CSV)
    defs = build_definitions(landing.spec_path)
    result, launched = _tick(landing, defs, instance)
    assert launched[0].success
    before = {p: rest.read(f"{output}/{p}") for p in _parquet(rest, output)}

    rest.create(f"{output}/dt=2026-12-09", b"in the way")
    landing.write("a.csv", "order_id,customer,amount,dt\n1,ada,1,2026-12-09\n", age_s=60)
    _, launched = _tick(landing, defs, instance, result.cursor)
    assert len(launched) == 1 and not launched[0].success
    assert {p: rest.read(f"{output}/{p}") for p in _parquet(rest, output)} == before
    assert not [n for n in rest.names(output) if n.startswith(".")]


@pytest.mark.parametrize("uri", ["gs://bucket/curated", "s3://bucket/curated"])
def test_landing_output_on_an_object_store_is_refused_before_any_copy(tmp_path, instance, uri) -> None:
    """No rename on object stores, so no staged swap: the run fails up front, naming the key,
    and copies nothing into the raw area."""
    landing = make_landing(tmp_path / "landing")
    spec_text = landing.spec_path.read_text().replace(
        "output: {cluster: lake, path: curated/orders}", "output: {cluster: bucket, path: curated}"
    ).replace("clusters:\n", f"clusters:\n  bucket: {{uri: \"{uri.rsplit('/', 1)[0]}\"}}\n")
    landing.spec_path.write_text(spec_text)
    landing.write("a.csv", GOOD_CSV)
    defs = build_definitions(landing.spec_path)
    job = defs.resolve_job_def(landing_job_name("orders"))
    result = job.execute_in_process(instance=instance, run_config=QUIET, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    text = failure.step_failure_data.user_failure_data.description
    assert text.startswith("landing.orders.output: ") and "atomic rename" in text
    assert not (landing.root / "lake" / "raw" / "orders" / "a.csv").exists()


@pytest.mark.parametrize("lake", ["hdfs"], indirect=True)
def test_landing_hdfs_chat_bot_sends_the_report_from_the_cluster_as_documents(
        lake, instance, bot_api) -> None:
    """The bot reads the report HTML and its PNG from the HDFS output (hdfs:// URIs in the
    report_ready event) and delivers both to the subscribed chat through the Bot API; a bad
    file's rejection reaches the chat with file, row and rule."""
    from tests.platform_assets.landing.test_landing_chat_bot import SUBSCRIBED, _bot, _bot_yaml

    landing, base, rest, _ = lake
    output = f"{base}/curated/orders"
    landing.spec_path.write_text(landing.spec_path.read_text() + _bot_yaml(bot_api.url))
    landing.write("a.csv", GOOD_CSV)
    defs = build_definitions(landing.spec_path)
    result, launched = _tick(landing, defs, instance)
    assert launched[0].success
    batch = result.run_requests[0].tags[TAG_BATCH]
    _bot(landing).run_once(poll_s=0)

    docs = bot_api.docs(SUBSCRIBED)
    [html] = [d for d in docs if d["filename"].endswith(".html")]
    [png] = [d for d in docs if d["filename"] == "charts.png"]
    assert html["mime"] == "text/html" and png["mime"] == "image/png"
    assert html["content"] == rest.read(f"{output}/_landing/reports/{batch}/report.html")
    assert png["content"] == rest.read(f"{output}/_landing/reports/{batch}/charts.png")
    assert any("report ready" in t for t in bot_api.texts(SUBSCRIBED))

    landing.write("bad.csv", BAD_CSV, age_s=60)
    _, launched = _tick(landing, defs, instance, result.cursor)
    assert not launched[0].success
    _bot(landing).run_once(poll_s=0)
    rejected = [t for t in bot_api.texts(SUBSCRIBED) if "rejected" in t]
    assert len(rejected) == 1 and "bad.csv" in rejected[0] and "rule not_null" in rejected[0]
