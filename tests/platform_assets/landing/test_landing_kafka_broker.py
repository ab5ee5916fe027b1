"""The landing pipeline with the Kafka notifier on a real broker: every step's message read back
from its topic, keyed by dataset, and relayed by the chat bot reading the same topics."""

from __future__ import annotations

from platform_assets.bot import build_bot
from platform_assets.definitions import build_definitions
from tests.fixtures.kafka import KafkaBroker
from tests.fixtures.telegram import TOKEN as BOT_TOKEN
from tests.fixtures.telegram import BotApi
from tests.platform_assets.landing.conftest import GOOD_CSV, make_landing
from tests.platform_assets.landing.test_landing_pipeline import _tick

STEP_TOPICS = {"detected": "e2e.detected", "ingested": "e2e.ingested",
               "validated": "e2e.validated", "rejected": "e2e.rejected",
               "converted": "e2e.converted", "report_ready": "e2e.reports"}


def test_landing_kafka_broker_gets_every_step_and_the_chat_bot_relays_them(
    tmp_path, instance, kafka_broker: KafkaBroker, bot_api: BotApi
) -> None:
    topics = ", ".join(f"{k}: {v}" for k, v in STEP_TOPICS.items())
    notifier = (f"{{kind: kafka, bootstrap_servers: '{kafka_broker.bootstrap}', "
                f"topic: e2e.runs, topics: {{{topics}}}, outbox: outbox/kafka.jsonl}}")
    landing = make_landing(tmp_path / "landing", notifier=notifier)
    landing.spec_path.write_text(
        landing.spec_path.read_text()
        + f"bot:\n  token_env: BOT_TEST_TOKEN\n  api_url: {bot_api.url}\n  allowed_chats: [7]\n"
          f"  subscriptions: {{orders: [7]}}\n  state: bot/state.json\n  poll_s: 0\n"
          f"  group_id: e2e-bot\n")
    defs = build_definitions(landing.spec_path)
    landing.write("a.csv", GOOD_CSV)
    _, launched = _tick(landing, defs, instance)
    assert launched[0].success
    landing.write("bad.csv", GOOD_CSV.replace("2,bob", "1,bob"), age_s=60)
    _, launched = _tick(landing, defs, instance)
    assert not launched[0].success
    assert not landing.outbox()  # nothing waits: all delivered

    # every message the topics hold (read to their end offsets; only this test writes them)
    got = kafka_broker.events(sorted(set(STEP_TOPICS.values())))
    steps = [(e["event"], e["_topic"]) for e in got]
    assert sorted(steps) == sorted(
        [(s, STEP_TOPICS[s]) for s in ("detected", "ingested", "validated", "converted",
                                       "report_ready", "detected", "ingested", "rejected")])
    assert {e["_key"] for e in got} == {"orders"}
    batches = sorted({e["batch"] for e in got})
    assert len(batches) == 2
    for batch in batches:  # each batch's steps in pipeline order (by time: one key, each topic)
        mine = sorted((e for e in got if e["batch"] == batch), key=lambda e: e["at"])
        assert mine[0]["event"] == "detected"
    [rejected] = [e for e in got if e["event"] == "rejected"]
    assert (rejected["file"], rejected["row"], rejected["rule"]) == ("bad.csv", 2, "unique")

    bot = build_bot(landing.spec, {"BOT_TEST_TOKEN": BOT_TOKEN})
    try:
        deadline_rounds = 30
        while len(bot_api.texts(7)) < 8 and deadline_rounds:
            bot.run_once(events_timeout_s=2, poll_s=0)
            deadline_rounds -= 1
    finally:
        bot.source.close()
    texts = bot_api.texts(7)
    assert len(texts) == 8
    assert any("file bad.csv, row 2, rule unique" in t for t in texts)
    assert {d["filename"] for d in bot_api.docs(7)} == {"report.html", "charts.png"}
