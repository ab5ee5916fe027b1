"""The chat bot against a local server that follows the Telegram Bot API: every landing step
relayed as text to the subscribed chats, the report delivered as documents, and commands
(``/run`` through the real trigger endpoint, ``/status``, ``/report``) only from allowed chats."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import uuid
from pathlib import Path

import dagster as dg
import pytest

from platform_assets.bot import Bot, build_bot, format_event, main
from platform_assets.definitions import build_definitions
from platform_assets.landing.names import report_key
from platform_assets.trigger import Launch, TriggerApp, serve_in_thread
from resources.telegram import TelegramError
from tests.fixtures.process import start_server
from tests.fixtures.telegram import TOKEN as BOT_TOKEN
from tests.fixtures.telegram import BotApi
from tests.platform_assets.landing.conftest import GOOD_CSV, Landing, make_landing
from tests.platform_assets.landing.png import count_colour, read_png
from tests.platform_assets.landing.test_landing_pipeline import BAD_CSV, _tick

REPO = Path(__file__).resolve().parents[3]
SUBSCRIBED, OTHER, STRANGER = 111, 222, 333
TRIGGER_TOKEN = "trigger-t0ken-for-bot-tests"


def _bot_yaml(api_url: str, trigger_url: str = "http://127.0.0.1:9") -> str:
    return (f"bot:\n  token_env: BOT_TEST_TOKEN\n  api_url: {api_url}\n"
            f"  allowed_chats: [{SUBSCRIBED}, {OTHER}]\n"
            f"  subscriptions: {{orders: [{SUBSCRIBED}]}}\n"
            f"  trigger_url: {trigger_url}\n  state: bot/state.json\n  poll_s: 0\n")


def _landing_with_bot(root: Path, api: BotApi, trigger_url: str = "http://127.0.0.1:9") -> Landing:
    landing = make_landing(root)
    landing.spec_path.write_text(landing.spec_path.read_text() + _bot_yaml(api.url, trigger_url))
    return landing


def _bot(landing: Landing) -> Bot:
    return build_bot(landing.spec, {"BOT_TEST_TOKEN": BOT_TOKEN,
                                    "LANDING_TEST_TOKEN": TRIGGER_TOKEN})


def test_chat_bot_relays_every_step_and_sends_the_report_as_documents(
    tmp_path, instance, bot_api: BotApi
) -> None:
    landing = _landing_with_bot(tmp_path / "landing", bot_api)
    landing.write("a.csv", GOOD_CSV)
    defs = build_definitions(landing.spec_path)
    _, launched = _tick(landing, defs, instance)
    assert launched[0].success
    bot = _bot(landing)
    bot.run_once(poll_s=0)

    texts = bot_api.texts(SUBSCRIBED)
    steps = ["new file(s) detected", "copied to the raw area", "validation passed", "converted to",
             "report ready"]
    assert [next(i for i, t in enumerate(texts) if s in t) for s in steps] == sorted(
        next(i for i, t in enumerate(texts) if s in t) for s in steps)  # in pipeline order
    assert all(t.startswith(("📥 orders", "📦 orders", "✅ orders", "🗂 orders", "📊 orders"))
               for t in texts)
    detected, validated = (next(t for t in texts if s in t) for s in (steps[0], steps[2]))
    assert "a.csv" in detected and "4 rows in 1 file(s)" in validated
    docs = bot_api.docs(SUBSCRIBED)
    html = [d for d in docs if d["filename"].endswith(".html")]
    assert len(html) == 1 and html[0]["mime"] == "text/html"
    assert b"a.csv" in html[0]["content"] and html[0]["content"].count(b"<svg") == 4
    [png] = [d for d in docs if d["filename"] == "charts.png"]
    assert png["mime"] == "image/png"
    (tmp_path / "charts.png").write_bytes(png["content"])
    img = read_png(str(tmp_path / "charts.png"))
    assert img.shape[:2] == (800, 1200)
    assert count_colour(img, (0x2E, 0x7D, 0x32)) > 500  # the accepted file's bar, in green
    assert count_colour(img, (0xC6, 0x28, 0x28)) > 50  # the current batch on the trend, in red
    md = instance.fetch_materializations(report_key("orders"), limit=1).records[0]
    md = md.asset_materialization.metadata
    assert Path(md["charts_png"].value).read_bytes() == png["content"]  # beside the HTML
    assert Path(md["charts_png"].value).parent == Path(md["report"].value).parent
    assert bot_api.texts(OTHER) == [] and bot_api.docs(OTHER) == []  # not subscribed
    assert BOT_TOKEN not in (landing.root / "bot" / "state.json").read_text()

    # the same messages are not relayed twice: a new bot process resumes from its state
    before = len(bot_api.messages)
    _bot(landing).run_once(poll_s=0)
    assert len(bot_api.messages) == before

    # a bad file's rejection reaches the chat with file, row and rule
    landing.write("bad.csv", BAD_CSV)
    _, launched = _tick(landing, defs, instance)
    assert not launched[0].success
    _bot(landing).run_once(poll_s=0)
    rejected = [t for t in bot_api.texts(SUBSCRIBED) if "rejected" in t]
    assert len(rejected) == 1
    assert "file bad.csv, row 2, rule not_null" in rejected[0]


def test_chat_bot_commands_run_through_the_trigger_and_strangers_are_refused(
    tmp_path, instance, bot_api: BotApi, caplog
) -> None:
    root = tmp_path / "landing"
    launches: list[Launch] = []

    runs: list[threading.Thread] = []

    def launch_in_process(plan: Launch) -> str:
        """The trigger's launcher without a webserver: like a launch, it answers with the run
        id at once and the run goes on in the background (run in the request, a slow run
        timed the bot's request out)."""
        launches.append(plan)
        job = build_definitions(root / "replication.yaml").resolve_job_def(plan.job)
        run_id = str(uuid.uuid4())
        runs.append(threading.Thread(target=job.execute_in_process, kwargs=dict(
            instance=instance, tags=plan.tags, raise_on_error=False, run_id=run_id)))
        runs[-1].start()
        return run_id

    server, trigger_url = None, ""
    landing = make_landing(root)
    app = TriggerApp(landing.spec, TRIGGER_TOKEN, launch_in_process)
    server, trigger_url = serve_in_thread(app)
    try:
        landing.spec_path.write_text(landing.spec_path.read_text()
                                     + _bot_yaml(bot_api.url, trigger_url))
        landing.write("a.csv", GOOD_CSV)
        bot = _bot(landing)

        bot_api.say(STRANGER, "/run orders")
        with caplog.at_level(logging.WARNING, logger="platform_assets.bot"):
            bot.run_once(poll_s=0)
        assert "not allowed" in bot_api.texts(STRANGER)[-1]
        assert launches == [] and not instance.get_runs()
        assert any(f"chat {STRANGER}" in r.getMessage() for r in caplog.records)

        for text, expected in [
            ("/frobnicate orders", "Unknown command /frobnicate"),
            ("/run payroll", "Unknown dataset 'payroll'. Datasets: events, orders"),
            ("/run orders ../../etc", "Bad partition"),
            ("/run orders a/../b", "Bad partition"),
            ("/run", "/run needs a dataset"),
            ("/report orders", "orders: no report yet."),
            ("/status orders", "orders: no step seen yet."),
            ("hello", "I only understand commands"),
        ]:
            bot_api.say(OTHER, text)
            bot.run_once(poll_s=0)
            assert expected in bot_api.texts(OTHER)[-1], text
        assert launches == [] and not instance.get_runs()  # nothing ran

        bot_api.say(SUBSCRIBED, "/run orders")
        bot.run_once(poll_s=0)
        answer = bot_api.texts(SUBSCRIBED)[-1]
        [launched] = runs
        launched.join(timeout=600)
        assert not launched.is_alive(), "the launched run did not end"
        [run] = instance.get_runs()
        assert answer == f"🚀 orders: run {run.run_id} launched (landing_orders)."
        assert run.job_name == "landing_orders" and run.tags["replication/trigger"] == "command"
        assert run.status == dg.DagsterRunStatus.SUCCESS

        bot.run_once(poll_s=0)  # relays the steps of that run
        bot_api.say(OTHER, "/status orders")
        bot_api.say(OTHER, "/report orders")
        bot.run_once(poll_s=0)
        status, report = bot_api.texts(OTHER)[-2:]
        assert status.startswith("orders: last step\n📊 orders: report ready")
        assert report.startswith("📊 orders: report ready")
        assert [d["filename"] for d in bot_api.docs(OTHER)] == ["report.html", "charts.png"]
    finally:
        server.shutdown()
        server.server_close()
    assert TRIGGER_TOKEN not in caplog.text and BOT_TOKEN not in caplog.text


def test_chat_bot_process_refuses_a_missing_token_and_bad_spec(tmp_path, bot_api, monkeypatch,
                                                               capsys) -> None:
    landing = _landing_with_bot(tmp_path / "landing", bot_api)
    monkeypatch.delenv("BOT_TEST_TOKEN", raising=False)
    assert main(["--spec", str(landing.spec_path), "--once"]) == 2
    assert "BOT_TEST_TOKEN is not set" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(landing.spec_path.read_text().replace("subscriptions: {orders:",
                                                         "subscriptions: {ordres:"))
    monkeypatch.setenv("BOT_TEST_TOKEN", BOT_TOKEN)
    assert main(["--spec", str(bad), "--once"]) == 2
    assert "bot.subscriptions.ordres: expected a landing or replication dataset" in capsys.readouterr().err
    # a wrong token: the Bot API refuses, the process says so (exit 1) without the token
    monkeypatch.setenv("BOT_TEST_TOKEN", "999:wrong-token")
    assert main(["--spec", str(landing.spec_path), "--once"]) == 1
    err = capsys.readouterr().err
    assert "Unauthorized" in err and "wrong-token" not in err


@pytest.mark.parametrize("event, text", [
    ({"event": "rejected", "dataset": "orders", "batch": "b1", "file": "x.csv", "row": 7,
      "rule": "unique", "error": "x.csv row 7: duplicate"},
     "❌ orders: batch rejected (batch b1)\nfile x.csv, row 7, rule unique\nx.csv row 7: duplicate"),
    ({"event": "run_failed", "dataset": "events", "partition": "dt=1", "run_id": "r9",
      "job": "copy_events", "error": "boom"},
     "❌ events dt=1: run r9 (copy_events) failed\nboom"),
    ({"event": "audit_file_archived", "audit_file": "a.txt"}, "🔔 -: audit_file_archived: audit_file=a.txt"),
])
def test_chat_bot_formats_messages_readably(event, text) -> None:
    assert format_event(event) == text


def test_chat_bot_loses_nothing_when_the_bot_api_fails_mid_relay(tmp_path, instance,
                                                                  bot_api: BotApi) -> None:
    landing = _landing_with_bot(tmp_path / "landing", bot_api)
    landing.write("a.csv", GOOD_CSV)
    _, launched = _tick(landing, build_definitions(landing.spec_path), instance)
    assert launched[0].success
    bot = _bot(landing)
    bot_api.fail["sendMessage"] = 1  # the Bot API answers 502 to the first message
    with pytest.raises(TelegramError, match="sendMessage: Bad Gateway") as err:
        bot.run_once(poll_s=0)
    assert err.value.retryable
    assert bot_api.texts(SUBSCRIBED) == []
    bot.run_once(poll_s=0)  # the next round relays them all, in order, once
    texts = bot_api.texts(SUBSCRIBED)
    assert [t.split(":")[0] for t in texts] == [
        "📥 orders", "📦 orders", "✅ orders", "🗂 orders", "📊 orders"]
    _bot(landing).run_once(poll_s=0)  # a restarted bot sends none of them again
    assert bot_api.texts(SUBSCRIBED) == texts


def test_chat_bot_process_relays_answers_and_stops_on_sigterm(tmp_path, instance,
                                                              bot_api: BotApi) -> None:
    landing = _landing_with_bot(tmp_path / "landing", bot_api)
    landing.write("a.csv", GOOD_CSV)
    _, launched = _tick(landing, build_definitions(landing.spec_path), instance)
    assert launched[0].success
    log = tmp_path / "bot.log"
    env = {**os.environ, "BOT_TEST_TOKEN": BOT_TOKEN}
    proc = start_server([sys.executable, "-m", "platform_assets.bot", "--spec",
                         str(landing.spec_path)], env, log, cwd=REPO)
    try:
        assert bot_api.wait(lambda api: len(api.docs(SUBSCRIBED)) == 2), log.read_text()[-2000:]
        bot_api.say(OTHER, "/status orders")
        assert bot_api.wait(lambda api: api.texts(OTHER)), log.read_text()[-2000:]
        assert bot_api.texts(OTHER)[0].startswith("orders: last step\n📊 orders: report ready")
        bot_api.say(STRANGER, "/run orders")
        assert bot_api.wait(lambda api: api.texts(STRANGER))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    text = log.read_text()
    assert f"refused a message from chat {STRANGER}" in text
    assert BOT_TOKEN not in text and "bot-t0ken" not in text
