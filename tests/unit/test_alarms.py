"""The alarms, their topic and the dashboard in template.yaml, against the metrics the code emits."""

from __future__ import annotations

import json
from typing import Any

from reelay import metrics
from tests.template_support import template

TEMPLATE = template()
RES = TEMPLATE["Resources"]
ALARMS = {k: v["Properties"] for k, v in RES.items() if v["Type"] == "AWS::CloudWatch::Alarm"}
GLOBAL_ENV = TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]
NAMESPACE = GLOBAL_ENV["POWERTOOLS_METRICS_NAMESPACE"]
SERVICE = GLOBAL_ENV["POWERTOOLS_SERVICE_NAME"]


def _dlqs() -> set[str]:
    """Every queue some queue's RedrivePolicy sends its dead letters to, and every queue named *DLQ."""
    targets = {
        q["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
        for q in RES.values()
        if q["Type"] == "AWS::SQS::Queue" and "RedrivePolicy" in q.get("Properties", {})
    }
    named = {k for k, v in RES.items() if v["Type"] == "AWS::SQS::Queue" and k.endswith("DLQ")}
    return targets | named


def _metric_stats(alarm: dict[str, Any]) -> list[dict[str, Any]]:
    """The metrics an alarm reads: its own, or those of its metric math."""
    if "MetricName" in alarm:
        return [{"Namespace": alarm["Namespace"], "MetricName": alarm["MetricName"], "Dimensions": alarm["Dimensions"]}]
    return [m["MetricStat"]["Metric"] for m in alarm["Metrics"] if "MetricStat" in m]


def test_there_are_dead_letter_queues_to_watch() -> None:
    assert {"SubmitDLQ", "IngestDLQ"} <= _dlqs()


def test_every_dlq_has_an_alarm_on_any_visible_message() -> None:
    watched = {
        alarm["Dimensions"][0]["Value"]["Fn::GetAtt"][0]: alarm
        for alarm in ALARMS.values()
        if alarm.get("Namespace") == "AWS/SQS"
    }
    for dlq in _dlqs():
        assert dlq in watched, f"{dlq} has no alarm"
        alarm = watched[dlq]
        assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
        assert alarm["Dimensions"][0]["Name"] == "QueueName"
        assert alarm["Dimensions"][0]["Value"] == {"Fn::GetAtt": [dlq, "QueueName"]}
        assert alarm["Threshold"] == 0 and alarm["ComparisonOperator"] == "GreaterThanThreshold"
        assert alarm["Statistic"] == "Maximum"


def test_every_alarm_notifies_the_topic() -> None:
    assert ALARMS
    for name, alarm in ALARMS.items():
        assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}], name
        assert alarm["TreatMissingData"] == "notBreaching", name


def test_the_e_mail_subscription_is_optional() -> None:
    assert TEMPLATE["Parameters"]["AlarmEmail"]["Default"] == ""
    subscription = RES["AlarmEmailSubscription"]
    assert subscription["Condition"] == "HasAlarmEmail"
    assert subscription["Properties"]["Protocol"] == "email"
    assert subscription["Properties"]["Endpoint"] == {"Ref": "AlarmEmail"}
    assert TEMPLATE["Conditions"]["HasAlarmEmail"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmEmail"}, ""]}]}


def test_application_alarms_read_metrics_the_code_emits_with_the_service_dimension_alone() -> None:
    emitted = {getattr(metrics, n) for n in dir(metrics) if n.isupper() and isinstance(getattr(metrics, n), str)}
    wanted = {
        "FailureRateAlarm": {metrics.TASKS_FAILED, metrics.TASKS_SUCCEEDED},
        "IngestErrorsAlarm": {metrics.INGEST_ERRORS},
        "ReconcileFixesAlarm": {metrics.RECONCILE_FIXES},
        "WebhookExhaustedAlarm": {metrics.WEBHOOK_EXHAUSTED},
    }
    for name, names in wanted.items():
        ours = [m for m in _metric_stats(ALARMS[name]) if m["Namespace"] == NAMESPACE]
        assert {m["MetricName"] for m in ours} == names, name
        for metric in ours:
            assert metric["MetricName"] in emitted
            # The code emits these totals with {service} alone (metrics._TOTALS): an alarm needs the exact set.
            assert metric["MetricName"] in metrics._TOTALS
            assert metric["Dimensions"] == [{"Name": "service", "Value": SERVICE}], name


def test_the_failure_rate_alarm_needs_enough_ended_tasks() -> None:
    alarm = ALARMS["FailureRateAlarm"]
    [expression] = [m["Expression"] for m in alarm["Metrics"] if "Expression" in m]
    assert ">= 5" in expression and "failed" in expression and "succeeded" in expression
    assert alarm["Threshold"] == {"Ref": "AlarmFailureRate"}


def test_the_dashboard_shows_the_metrics_and_every_dlq() -> None:
    body = RES["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    parsed = json.loads(body.replace("${AWS::Region}", "us-east-1"))
    assert len(parsed["widgets"]) >= 6
    for name in (
        metrics.TASKS_SUBMITTED,
        metrics.TASKS_SUCCEEDED,
        metrics.TASKS_FAILED,
        metrics.BYTES_COPIED,
        metrics.CALLBACK_TO_SUCCEEDED,
        metrics.POLLS_PER_TASK,
        metrics.RECONCILE_FIXES,
        metrics.GOVERNOR_WAITS,
        metrics.WEBHOOK_DELIVERIES,
    ):
        assert name in body, name
    for dlq in _dlqs():
        assert f"${{{dlq}.QueueName}}" in body, dlq
