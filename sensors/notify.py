"""Run success / failure notifications through the configured notifier, and the sensor that
delivers what waits in the Kafka outbox once the broker is back (shared by every kind).

Which run tags fill which event fields is the caller's (``tag_fields``: event field -> tags),
so this module knows no dataset kind.
"""

from collections.abc import Mapping
from typing import Any

import dagster as dg

from resources.notify import NotificationQueued, NotifierResource


def run_event(run: dg.DagsterRun, event: str, tag_fields: Mapping[str, tuple[str, ...]],
              error: str | None = None) -> dict[str, Any]:
    """The notification for ``run``: each field of ``tag_fields`` takes the first of its tags
    the run carries."""
    tags = run.tags or {}
    out: dict[str, Any] = {
        "event": event,
        "run_id": run.run_id,
        "job": run.job_name,
        "status": run.status.value,
    }
    for name, candidates in tag_fields.items():
        out[name] = next((tags[t] for t in candidates if tags.get(t)), None)
    out["assets"] = sorted(k.to_user_string() for k in (run.asset_selection or ()))
    if error:
        out["error"] = error
    return {k: v for k, v in out.items() if v not in (None, [], "")}


def build_notification_sensors(
    tag_fields: Mapping[str, tuple[str, ...]],
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
    *, outbox: bool = False,
) -> list[dg.SensorDefinition]:
    """Run success/failure sensors; with ``outbox`` (notifier kind kafka) also the sensor that
    delivers what waits in the outbox."""
    @dg.run_status_sensor(
        name="notify_run_success",
        run_status=dg.DagsterRunStatus.SUCCESS,
        default_status=default_status,
        minimum_interval_seconds=30,
        description="Sends a notification when a run of this code location succeeds.",
    )
    def notify_run_success(context: dg.RunStatusSensorContext, notifier: NotifierResource) -> None:
        _notify(context, notifier, run_event(context.dagster_run, "run_succeeded", tag_fields))

    @dg.run_failure_sensor(
        name="notify_run_failure",
        default_status=default_status,
        minimum_interval_seconds=30,
        description="Sends a notification when a run of this code location fails.",
    )
    def notify_run_failure(context: dg.RunFailureSensorContext, notifier: NotifierResource) -> None:
        message = context.failure_event.message if context.failure_event else None
        _notify(context, notifier,
                run_event(context.dagster_run, "run_failed", tag_fields, error=message))

    @dg.sensor(
        name="notify_outbox",
        default_status=default_status,
        minimum_interval_seconds=60,
        description="Kind kafka: delivers the notifications that wait in the outbox (the broker "
                    "was down) in order, once the broker answers again.",
    )
    def notify_outbox(context: dg.SensorEvaluationContext,
                      notifier: NotifierResource) -> dg.SkipReason:
        left = notifier.flush_outbox()
        return dg.SkipReason(f"{left} notification(s) still wait in the outbox" if left
                             else "outbox empty")

    return [notify_run_success, notify_run_failure, *([notify_outbox] if outbox else [])]


def _notify(context: Any, notifier: NotifierResource, event: dict[str, Any]) -> None:
    """A message queued because the broker is down is not a sensor failure (a failed tick
    would send it again)."""
    try:
        notifier.notify(event)
    except NotificationQueued as exc:
        context.log.warning(str(exc))
