"""The chat bot: relays every step's message to the chats subscribed to its dataset, delivers
reports as documents, and takes commands from the allowed chats.

``python -m platform_assets.bot [--spec replication.yaml] [--once]`` runs it with the spec's
``bot`` section (Telegram Bot API over HTTPS, ``resources.telegram``; token from the variable
named by ``bot.token_env``, never logged). Messages come from Kafka when the platform's notifier
is kind ``kafka`` (a consumer group, offsets committed after relaying), else from the JSONL
outbox (the byte offset is kept in the bot's state file). A message is relayed at least once;
repeats (same ``id``) are dropped.

Commands (only from ``bot.allowed_chats``; any other chat is refused and logged):

- ``/run <dataset> [partition]``: launches through the trigger endpoint (its allow-list and
  token, ``trigger.token_env``), as ``replicator trigger`` does;
- ``/status <dataset>``: the last step seen for the dataset;
- ``/report <dataset>``: the last report again, as documents (HTML, and PNG of its charts);
- ``/help``.

Bad input (unknown command, unknown dataset, a partition with ``..``) gets an answer saying what
was expected, and nothing runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import requests

from platform_assets.config import BotSpec, ReplicationSpec, SpecError, load_spec
from platform_assets.trigger import PARTITION_RE
from replicator.secrets import redact, register_secret
from resources.telegram import TelegramClient, TelegramError

log = logging.getLogger("platform_assets.bot")
SEEN_IDS = 2000  # ids of relayed messages remembered to drop repeats
HELP = ("Commands:\n/run <dataset> [partition] - launch a run\n"
        "/status <dataset> - the last step seen\n/report <dataset> - the last report\n/help")


# ---------------------------------------------------------------- message text
def _when(event: dict[str, Any]) -> str:
    try:
        return datetime.fromtimestamp(float(event["at"]), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (KeyError, TypeError, ValueError):
        return ""


def _files(value: Any, total: Any = None) -> str:
    """A list of names, the first 10 shown; ``total``: how many there are when the event
    carries only the first of them (``files_total``)."""
    if isinstance(value, list):
        n = total if isinstance(total, int) and total >= len(value) else len(value)
        shown = ", ".join(str(v) for v in value[:10])
        return shown + (f" and {n - min(len(value), 10)} more" if n > 10 else "")
    return str(value)


def _count(event: dict[str, Any], key: str) -> int:
    """How many ``key`` the event names: its ``<key>_total`` (the list holds the first 50)."""
    total = event.get(f"{key}_total")
    return total if isinstance(total, int) else len(event.get(key) or [])


def format_event(event: dict[str, Any]) -> str:
    """A step's message as text a person reads in a chat."""
    step = str(event.get("event", "event"))
    ds = event.get("dataset") or "-"
    batch = f" (batch {event['batch']})" if event.get("batch") else ""
    if step == "detected":
        text = (f"📥 {ds}: {_count(event, 'files')} new file(s) detected{batch}: "
                f"{_files(event.get('files') or [], event.get('files_total'))}")
    elif step == "ingested":
        text = (f"📦 {ds}: {_count(event, 'files')} file(s) copied to the raw area, "
                f"verified{batch}: {_files(event.get('files') or [], event.get('files_total'))}")
    elif step == "validated":
        text = f"✅ {ds}: validation passed{batch}: {event.get('rows', '?')} rows in {event.get('files', '?')} file(s)"
    elif step == "rejected":
        text = (f"❌ {ds}: batch rejected{batch}\nfile {event.get('file')}, row {event.get('row')}, "
                f"rule {event.get('rule')}")
        if event.get("error"):
            text += f"\n{event['error']}"
        if event.get("files_rejected"):
            text += (f"\nrejected files: "
                     f"{_files(event['files_rejected'], event.get('files_rejected_total'))}")
    elif step == "converted":
        text = (f"🗂 {ds}: {event.get('files', '?')} file(s) converted to "
                f"{event.get('parquet_files', '?')} Parquet file(s){batch} in {event.get('output', '?')}")
    elif step == "report_ready":
        text = f"📊 {ds}: report ready{batch}"
    elif step in ("run_succeeded", "run_failed"):
        part = f" {event['partition']}" if event.get("partition") else ""
        icon = "✅" if step == "run_succeeded" else "❌"
        verb = "succeeded" if step == "run_succeeded" else "failed"
        text = f"{icon} {ds}{part}: run {event.get('run_id', '?')} ({event.get('job', '?')}) {verb}"
        if event.get("error"):
            text += f"\n{event['error']}"
    else:
        skip = {"event", "dataset", "at", "id", "pipeline"}
        rest = ", ".join(f"{k}={_files(v)}" for k, v in sorted(event.items()) if k not in skip)
        text = f"🔔 {ds}: {step}" + (f": {rest}" if rest else "")
    when = _when(event)
    return redact(text + (f"\n{when}" if when else ""))


# ---------------------------------------------------------------- where messages come from
class EventSource(Protocol):
    def poll(self, timeout_s: float) -> list[dict[str, Any]]: ...
    def commit(self) -> None: ...
    def close(self) -> None: ...


class OutboxSource:
    """Tails the JSONL outbox from a byte offset (kept in the bot state by the caller)."""

    def __init__(self, path: str, offset: int = 0) -> None:
        self.path = path
        self.offset = offset

    def poll(self, timeout_s: float) -> list[dict[str, Any]]:
        try:
            size = os.path.getsize(self.path)
        except OSError:
            return []
        if size < self.offset:  # the outbox was rotated or truncated: read it from the start
            self.offset = 0
        out = []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            for line in f:
                if not line.endswith(b"\n"):
                    break  # a line still being written
                self.offset += len(line)
                try:
                    out.append(json.loads(line))
                except ValueError:
                    log.warning("outbox %s: skipped a line that is not JSON", self.path)
        return out

    def commit(self) -> None:
        pass

    def close(self) -> None:
        pass


class KafkaSource:
    """A consumer of the notifier's topics in the bot's group; offsets committed after relaying."""

    def __init__(self, bootstrap: str, topics: list[str], group_id: str) -> None:
        from confluent_kafka import Consumer

        self._consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": group_id,
            "auto.offset.reset": "earliest", "enable.auto.commit": False,
            "logger": logging.getLogger("platform_assets.bot.kafka"),
        })
        self._consumer.subscribe(topics)
        self._dirty = False

    def poll(self, timeout_s: float) -> list[dict[str, Any]]:
        out = []
        for msg in self._consumer.consume(num_messages=100, timeout=timeout_s):
            if msg.error():
                log.warning("kafka: %s", msg.error())
                continue
            try:
                out.append(json.loads(msg.value()))
            except ValueError:
                log.warning("kafka %s: skipped a message that is not JSON", msg.topic())
            self._dirty = True
        return out

    def commit(self) -> None:
        if self._dirty:
            self._consumer.commit(asynchronous=False)
            self._dirty = False

    def close(self) -> None:
        self._consumer.close()


# ---------------------------------------------------------------- the bot
class Bot:
    def __init__(self, spec: ReplicationSpec, client: TelegramClient, source: EventSource,
                 state_path: Path, trigger_token: str = "") -> None:
        if spec.bot is None:
            raise SpecError(f"{spec.source_file}: bot: expected a bot section")
        self.spec = spec
        self.cfg: BotSpec = spec.bot
        self.client = client
        self.source = source
        self.state_path = state_path
        self.state = self._load_state()
        if trigger_token:
            register_secret(trigger_token)
        self._trigger_token = trigger_token
        self.datasets = sorted({*spec.landing, *spec.datasets})
        self._pending: list[dict[str, Any]] = []
        # replies to commands already run, not yet delivered (a failed send): sent first on
        # the next round, so a command runs at most once and its reply still arrives
        self._replies: list[tuple[int, str | dict[str, Any]]] = []

    # state ------------------------------------------------------------------
    def _load_state(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            data = {}
        data.setdefault("update_offset", None)
        data.setdefault("outbox_offset", 0)
        data.setdefault("last", {})
        data.setdefault("reports", {})
        data.setdefault("seen", [])
        return data

    def _save_state(self) -> None:
        if isinstance(self.source, OutboxSource):
            self.state["outbox_offset"] = self.source.offset
        self.state["seen"] = self.state["seen"][-SEEN_IDS:]
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, sort_keys=True))
        os.replace(tmp, self.state_path)

    # relaying ---------------------------------------------------------------
    def relay(self, event: dict[str, Any]) -> None:
        eid = event.get("id")
        if eid and eid in self.state["seen"]:
            return
        ds = event.get("dataset")
        if ds:
            self.state["last"][ds] = event
            if event.get("event") == "report_ready":
                self.state["reports"][ds] = event
        for chat in self.cfg.subscriptions.get(ds or "", ()):
            self.client.send_message(chat, format_event(event))
            if event.get("event") == "report_ready":
                self._send_report(chat, event)
        if eid:
            self.state["seen"].append(eid)

    def _send_report(self, chat: int, event: dict[str, Any]) -> None:
        caption = f"{event.get('dataset')}: report of batch {event.get('batch')}"
        for key, mime in (("report", "text/html"), ("report_png", "image/png")):
            where = event.get(key)
            if not where:
                continue
            try:
                content = _read(str(where))
            except OSError as exc:
                self.client.send_message(chat, f"⚠️ the {key} file {where} cannot be read: "
                                               f"{exc.strerror or type(exc).__name__}")
                continue
            self.client.send_document(chat, os.path.basename(str(where)), content, caption, mime)

    # commands ---------------------------------------------------------------
    def handle_update(self, update: dict[str, Any]) -> None:
        msg = update.get("message") or {}
        text = (msg.get("text") or "").strip()
        chat = (msg.get("chat") or {}).get("id")
        if chat is None or not text:
            return
        if chat not in self.cfg.allowed_chats:
            log.warning("refused a message from chat %s (not in bot.allowed_chats): %r",
                        chat, redact(text[:100]))
            self.client.send_message(chat, "⛔ This chat is not allowed to send commands to "
                                           "this bot. Ask the platform team to add it.")
            return
        self._replies.append((chat, self.answer(text)))
        self._send_replies()

    def _send_replies(self) -> None:
        while self._replies:  # in order; a failed send leaves it and the rest for next round
            chat, reply = self._replies[0]
            if isinstance(reply, dict):  # /report: the last report_ready message and its documents
                self.client.send_message(chat, format_event(reply))
                self._send_report(chat, reply)
            else:
                self.client.send_message(chat, reply)
            self._replies.pop(0)

    def answer(self, text: str) -> str | dict[str, Any]:
        """The reply to a command: text, or (``/report``) the report's message to send again."""
        if not text.startswith("/"):
            return f"I only understand commands.\n{HELP}"
        words = text.split()
        cmd = words[0].split("@", 1)[0].lower()
        args = words[1:]
        if cmd in ("/help", "/start"):
            return HELP
        if cmd not in ("/run", "/status", "/report"):
            return f"Unknown command {words[0][:40]}.\n{HELP}"
        if not args:
            return f"{cmd} needs a dataset: {cmd} <dataset>. Datasets: {', '.join(self.datasets)}"
        ds = args[0]
        if ds not in self.datasets:
            return (f"Unknown dataset {ds[:60]!r}. Datasets: {', '.join(self.datasets) or 'none'}")
        if cmd == "/status":
            return self._status(ds)
        if cmd == "/report":
            return self._report(ds)
        if len(args) > 2:
            return "/run takes a dataset and at most one partition: /run <dataset> [partition]"
        partition = args[1] if len(args) == 2 else None
        if partition is not None and (not PARTITION_RE.match(partition)
                                      or ".." in partition.split("/") or ".." in partition):
            return ("Bad partition: expected letters, digits and . _ - = / (at most 200), "
                    "no '..'. Nothing was launched.")
        return self._run(ds, partition)

    def _status(self, ds: str) -> str:
        last = self.state["last"].get(ds)
        if not last:
            return f"{ds}: no step seen yet."
        return f"{ds}: last step\n{format_event(last)}"

    def _report(self, ds: str) -> str | dict[str, Any]:
        return self.state["reports"].get(ds) or f"{ds}: no report yet."

    def _run(self, ds: str, partition: str | None) -> str:
        if self.spec.trigger is None:
            return "No trigger endpoint is configured (trigger section of the spec): nothing launched."
        if not self._trigger_token:
            return (f"The bot has no trigger token (variable {self.spec.trigger.token_env}): "
                    "nothing launched.")
        url = (self.cfg.trigger_url or f"http://{self.spec.trigger.listen}").rstrip("/") + "/trigger"
        body: dict[str, Any] = {"dataset": ds}
        if partition:
            body["partition"] = partition
        try:
            resp = requests.post(url, json=body, timeout=60,
                                 headers={"Authorization": f"Bearer {self._trigger_token}"})
        except requests.RequestException as exc:
            return f"The trigger endpoint does not answer ({type(exc).__name__}): nothing launched."
        try:
            payload = resp.json()
        except ValueError:
            payload = {}
        if resp.status_code == 200:
            part = f" partition {payload.get('partition')}" if payload.get("partition") else ""
            return f"🚀 {ds}{part}: run {payload.get('run_id')} launched ({payload.get('job')})."
        reason = redact(str(payload.get("error") or f"HTTP {resp.status_code}"))[:300]
        return f"Refused by the trigger endpoint: {reason}. Nothing was launched."

    # loop -------------------------------------------------------------------
    def run_once(self, events_timeout_s: float = 1.0, poll_s: int | None = None) -> None:
        """Relay what arrived, then answer the commands (long-polling up to ``poll_s``)."""
        self._send_replies()
        if not self._pending:
            self._pending = self.source.poll(events_timeout_s)
        while self._pending:  # a failed send leaves the rest for the next round, in order
            self.relay(self._pending[0])
            self._pending.pop(0)
        self._save_state()  # the source's position is saved/committed only once all are relayed
        self.source.commit()
        offset = self.state["update_offset"]
        updates = self.client.get_updates(offset, self.cfg.poll_s if poll_s is None else poll_s)
        for update in updates:
            # marked handled before it runs: a command whose reply fails is not run again
            self.state["update_offset"] = int(update["update_id"]) + 1
            self._save_state()
            self.handle_update(update)

    def serve(self, stop: threading.Event) -> None:
        backoff = 1.0
        while not stop.is_set():
            try:
                self.run_once()
                backoff = 1.0
            except TelegramError as exc:
                log.warning("bot: %s; retrying in %.0f s", exc, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, 60.0)


def _read(where: str) -> bytes:
    """The bytes of a local path or of a URI the engine's file systems resolve (hdfs://...)."""
    if "://" not in where or where.startswith("file://"):
        return Path(where.removeprefix("file://")).read_bytes()
    from replicator.filesystems.registry import resolve

    fs, path = resolve(where)
    with fs.open_read(path) as f:
        return f.read()


def make_source(spec: ReplicationSpec, state: dict[str, Any]) -> EventSource:
    n = spec.platform.notifier
    cfg = spec.bot
    assert cfg is not None
    if n.kind == "kafka" and n.bootstrap_servers:
        topics = sorted({t for t in (n.topic, *n.topics.values()) if t})
        return KafkaSource(n.bootstrap_servers, topics, cfg.group_id)
    return OutboxSource(str(spec.resolve_location(n.outbox)), int(state.get("outbox_offset") or 0))


def build_bot(spec: ReplicationSpec, env: dict[str, str] | None = None) -> Bot:
    env = dict(os.environ if env is None else env)
    cfg = spec.bot
    if cfg is None:
        raise SpecError(f"{spec.source_file}: bot: expected a bot section (token_env, allowed_chats, "
                        "subscriptions)")
    token = env.get(cfg.token_env, "")
    if not token:
        raise SpecError(f"bot: environment variable {cfg.token_env} is not set (the bot token)")
    client = TelegramClient(token, cfg.api_url)
    trigger_token = env.get(spec.trigger.token_env, "") if spec.trigger else ""
    state_path = Path(spec.resolve_location(cfg.state))
    bot = Bot(spec, client, OutboxSource(""), state_path, trigger_token)
    bot.source = make_source(spec, bot.state)
    return bot


def main(argv: list[str] | None = None) -> int:
    repo = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(prog="python -m platform_assets.bot",
                                     description="Chat bot: relays landing/replication steps, "
                                                 "delivers reports, takes /run /status /report.")
    parser.add_argument("--spec", default=os.environ.get("REPLICATION_SPEC") or str(repo / "replication.yaml"))
    parser.add_argument("--once", action="store_true", help="one relay + one getUpdates, then exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("urllib3").setLevel(logging.WARNING)  # its debug lines carry URLs
    try:
        bot = build_bot(load_spec(args.spec))
    except SpecError as exc:
        print(f"bot: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    cfg = bot.cfg
    print(f"bot: relaying to {sum(len(c) for c in cfg.subscriptions.values())} subscription(s), "
          f"commands from {len(cfg.allowed_chats)} chat(s), Bot API {cfg.api_url}", flush=True)
    try:
        if args.once:
            bot.run_once(poll_s=0)
        else:
            bot.serve(stop)
    except TelegramError as exc:
        print(f"bot: {exc}", file=sys.stderr)
        return 1
    finally:
        bot.source.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
