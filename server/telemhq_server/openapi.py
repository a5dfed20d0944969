"""The OpenAPI 3.1 document served at ``/api/v1/openapi.json`` (written by hand: the API is
small, and this keeps the server free of a schema framework)."""

from __future__ import annotations

from typing import Any

__all__ = ["openapi_document"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _path(name: str, kind: str = "string", description: str | None = None) -> dict[str, Any]:
    """A required path parameter."""
    param: dict[str, Any] = {"name": name, "in": "path", "required": True}
    if description is not None:
        param["description"] = description
    param["schema"] = {"type": kind}
    return param


def _list_of(name: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["items", "next"],
        "properties": {
            "items": {"type": "array", "items": _ref(name)},
            "next": {"type": ["string", "null"], "description": "pass as ?cursor= for more"},
        },
    }


_ERRORS = {
    "400": _json(_ref("Error"), "Body not JSON, a string holding NUL, or a bad limit/cursor"),
    "401": _json(_ref("Error"), "Missing or invalid API key"),
    "403": _json(_ref("Error"), "The key is read-only"),
    "413": _json(_ref("Error"), "Body over the limit"),
    "503": _json(_ref("Error"), "The database is unavailable (locked or down); retry"),
}
_NOT_FOUND = {"404": _json(_ref("Error"), "No such object")}
_INVALID = {"422": _json(_ref("ValidationError"), "A field is invalid")}
_TRACKER_REF = _path("tracker", description="tracker id or slug")
_PAGING = [
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
    {"name": "cursor", "in": "query", "schema": {"type": "string"}},
]

_SCHEDULE = {
    "oneOf": [
        {
            "type": "object",
            "required": ["kind"],
            "properties": {"kind": {"const": "none"}},
        },
        {
            "type": "object",
            "required": ["kind", "period_seconds"],
            "properties": {
                "kind": {"const": "period"},
                "period_seconds": {"type": "integer", "minimum": 1},
                "grace_seconds": {"type": "integer", "minimum": 0},
            },
        },
        {
            "type": "object",
            "required": ["kind", "cron"],
            "properties": {
                "kind": {"const": "cron"},
                "cron": {"type": "string", "examples": ["0 3 * * *"]},
                "timezone": {"type": "string", "examples": ["Europe/Paris"]},
                "grace_seconds": {"type": "integer", "minimum": 0},
            },
        },
    ]
}

_TRACKER_INPUT = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 200},
        "slug": {"type": "string", "pattern": "^[a-z0-9]+(-[a-z0-9]+)*$", "maxLength": 100},
        "assertions": {
            "type": "array",
            "items": {"type": "string"},
            "examples": [["records_processed > 0", "errors = 0"]],
        },
        "schedule": _SCHEDULE,
        "max_runtime_seconds": {"type": ["integer", "null"], "minimum": 1},
        "failure_threshold": {"type": "integer", "minimum": 1, "default": 1},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "additionalProperties": False,
}

_STATE = {"type": "string", "enum": ["new", "up", "failing", "late", "down", "paused"]}
_TIME = {"type": ["string", "null"], "format": "date-time"}
_EVENT = {
    "type": "string",
    "enum": ["tracker.failing", "tracker.late", "tracker.down", "tracker.recovered"],
}

_SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    "ValidationError": {
        "type": "object",
        "required": ["error", "field"],
        "properties": {
            "error": {"type": "string"},
            "field": {"type": "string", "examples": ["assertions[0]"]},
            "expression": {"type": "string"},
            "position": {"type": "integer"},
            "pointer": {"type": "string"},
        },
    },
    "TrackerInput": _TRACKER_INPUT,
    "Tracker": {
        "type": "object",
        "required": [
            "id",
            "name",
            "slug",
            "token",
            "ping_url",
            "state",
            "assertions",
            "schedule",
            "n_runs",
            "last_run_at",
            "badge_url",
        ],
        "properties": {
            "id": {"type": "integer"},
            "name": {"type": "string"},
            "slug": {"type": "string"},
            "token": {"type": "string"},
            "ping_url": {"type": "string", "format": "uri"},
            "state": _STATE,
            "assertions": {"type": "array", "items": {"type": "string"}},
            "schedule": _SCHEDULE,
            "max_runtime_seconds": {"type": ["integer", "null"]},
            "failure_threshold": {"type": "integer"},
            "consecutive_failures": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "paused": {"type": "boolean"},
            "n_runs": {"type": "integer"},
            "last_run_at": _TIME,
            "last_ping_at": _TIME,
            "state_changed_at": _TIME,
            "next_expected_at": _TIME,
            "created_at": _TIME,
            "updated_at": _TIME,
            "badge_url": {"type": "string", "format": "uri"},
            "baselines": {
                "type": "array",
                "items": _ref("Baseline"),
                "description": "GET of one tracker with history-relative assertions only: "
                "each one's baseline now",
            },
            "retention_warning": {
                "type": ["string", "null"],
                "description": "GET of one tracker with history-relative assertions only: "
                "retention keeps less history than an assertion reads",
            },
        },
    },
    "Baseline": {
        "type": "object",
        "required": ["expression", "value", "text"],
        "properties": {
            "expression": {"type": "string"},
            "value": {"type": ["number", "null"], "description": "null: too little history"},
            "text": {"type": ["string", "null"], "examples": ["0.5 x median 98000 of ..."]},
            "reason": {"type": "string", "examples": ["history: 3 of 5 runs"]},
        },
    },
    "AssertionResult": {
        "type": "object",
        "required": ["expression", "passed", "actual", "reason"],
        "properties": {
            "expression": {"type": "string"},
            "passed": {"type": "boolean"},
            "actual": {},
            "reason": {"type": "string"},
            "evaluated": {
                "type": "boolean",
                "description": "history-relative assertions only: false when there was too "
                "little history (the run then neither passes nor fails it)",
            },
            "baseline": {
                "type": ["object", "null"],
                "description": "history-relative assertions only: the computed right-hand "
                "side, {value, text}",
            },
        },
    },
    "Run": {
        "type": "object",
        "required": ["id", "ping_id", "status", "passed", "assertions", "payload", "received_at"],
        "properties": {
            "id": {"type": "integer"},
            "ping_id": {"type": ["string", "null"]},
            "run_id": {"type": "string"},
            "status": {
                "type": "string",
                "enum": ["start", "success", "failure", "retry", "skipped", "cancelled"],
            },
            "passed": {"type": ["boolean", "null"], "description": "null for a start"},
            "duration_ms": {"type": ["number", "null"]},
            "assertions": {"type": "array", "items": _ref("AssertionResult")},
            "payload": {"type": "object"},
            "received_at": _TIME,
            "started_at": _TIME,
        },
    },
    "Flip": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "old_state": _STATE,
            "new_state": _STATE,
            "reason": {"type": "string"},
            "run_id": {"type": ["integer", "null"]},
            "created_at": _TIME,
        },
    },
    "ApiKey": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "name": {"type": "string"},
            "prefix": {"type": "string"},
            "scope": {"type": "string", "enum": ["read", "write"]},
            "created_at": _TIME,
            "key": {"type": "string", "description": "only in the answer to its creation"},
        },
    },
    "PingKey": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "name": {"type": "string"},
            "key": {"type": "string"},
            "auto_create": {"type": "boolean"},
            "created_at": _TIME,
        },
    },
    "WebhookInput": {
        "type": "object",
        "properties": {
            "url": {"type": "string", "format": "uri", "examples": ["https://example.com/hook"]},
            "events": {"type": "array", "items": _EVENT, "description": "default: all but late"},
            "secret": {
                "type": "string",
                "minLength": 16,
                "maxLength": 200,
                "description": "the signing secret; one is made when absent",
            },
            "enabled": {"type": "boolean", "default": True},
        },
        "additionalProperties": False,
    },
    "Webhook": {
        "type": "object",
        "required": ["id", "url", "events", "enabled", "created_at", "secret_hint"],
        "properties": {
            "id": {"type": "integer"},
            "url": {"type": "string"},
            "events": {"type": "array", "items": _EVENT},
            "enabled": {"type": "boolean"},
            "created_at": _TIME,
            "secret_hint": {"type": "string", "description": "the secret's first 4 characters"},
            "secret": {
                "type": "string",
                "description": "only in the answer to its creation, or to a change of secret",
            },
        },
    },
    "Delivery": {
        "type": "object",
        "required": ["id", "event", "tracker_id", "status", "created_at", "attempts", "body"],
        "properties": {
            "id": {"type": "integer"},
            "event": _EVENT,
            "tracker_id": {"type": ["integer", "null"]},
            "status": {"type": "string", "enum": ["pending", "delivered", "failed"]},
            "created_at": _TIME,
            "attempts": {"type": "integer"},
            "next_attempt_at": _TIME,
            "delivered_at": _TIME,
            "failed_at": _TIME,
            "last_error": {"type": ["string", "null"]},
            "body": {"type": "object", "description": "the JSON body sent to the receiver"},
            "attempt_log": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "attempted_at": _TIME,
                        "status_code": {"type": ["integer", "null"]},
                        "error": {"type": ["string", "null"]},
                        "duration_ms": {"type": ["number", "null"]},
                    },
                },
            },
        },
    },
    "OpenLineageRunEvent": {
        "type": "object",
        "description": "An OpenLineage RunEvent, checked against the spec version its "
        "schemaURL names (1-0-0 to 2-0-2; a later version of the same MODEL is checked against "
        "2-0-2). DatasetEvents and JobEvents are accepted and store nothing.",
        "required": ["eventTime", "producer", "schemaURL", "run", "job"],
        "properties": {
            "eventType": {"enum": ["START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"]},
            "eventTime": {"type": "string", "format": "date-time"},
            "producer": {"type": "string", "format": "uri"},
            "schemaURL": {
                "type": "string",
                "examples": ["https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"],
            },
            "run": {
                "type": "object",
                "required": ["runId"],
                "properties": {"runId": {"type": "string", "format": "uuid"}},
            },
            "job": {
                "type": "object",
                "required": ["namespace", "name"],
                "properties": {"namespace": {"type": "string"}, "name": {"type": "string"}},
            },
            "inputs": {"type": "array", "items": {"type": "object"}},
            "outputs": {"type": "array", "items": {"type": "object"}},
        },
    },
    "LineageIgnored": {
        "type": "object",
        "required": ["ok", "ignored"],
        "properties": {"ok": {"const": True}, "ignored": {"type": "string"}},
    },
    "PingAnswer": {
        "type": "object",
        "required": ["ok", "run_id", "state", "assertions"],
        "properties": {
            "ok": {"type": "boolean"},
            "run_id": {"type": "string"},
            "state": _STATE,
            "status": {"type": "string"},
            "passed": {"type": ["boolean", "null"]},
            "duplicate": {"type": "boolean"},
            "assertions": {"type": "array", "items": _ref("AssertionResult")},
        },
    },
}


_CHANNEL_EVENT = {"type": "string", "enum": ["failing", "late", "down", "recovered"]}
_DURATION = {
    "type": "string",
    "description": "a duration: 30s, 15m, 1h or 2d (at least 1 s; 0s allowed for delay)",
}
_SELECTOR = {
    "type": "object",
    "description": "which trackers: every key given must match (empty: all trackers)",
    "properties": {
        "tags": {"type": "array", "items": {"type": "string"}},
        "orchestrator": {"type": "string", "description": "e.g. airflow, as its runs say"},
        "name": {"type": "string", "description": "a glob on the tracker's name or slug"},
        "tracker": {"type": "integer", "description": "one tracker's id"},
    },
}
_ALERT_SCHEMAS: dict[str, Any] = {
    "ChannelInput": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "url": {"type": "string", "description": "an Apprise URL (slack://, mailto://...)"},
            "events": {"type": "array", "items": _CHANNEL_EVENT},
            "after_failures": {"type": "integer", "minimum": 1, "maximum": 1000},
            "repeat_every": {**_DURATION, "type": ["string", "null"]},
            "max_repeats": {"type": "integer", "minimum": 0, "maximum": 1000},
            "delay": _DURATION,
            "selector": _SELECTOR,
            "enabled": {"type": "boolean"},
        },
    },
    "Channel": {
        "type": "object",
        "required": ["id", "name", "url_hint", "events", "selector", "enabled"],
        "properties": {
            "id": {"type": "integer"},
            "name": {"type": "string"},
            "url_hint": {"type": "string", "description": "the URL with its secrets masked"},
            "events": {"type": "array", "items": _CHANNEL_EVENT},
            "after_failures": {"type": "integer"},
            "repeat_every": {"type": ["string", "null"]},
            "max_repeats": {"type": "integer"},
            "delay": {"type": "string"},
            "selector": _SELECTOR,
            "enabled": {"type": "boolean"},
            "created_at": _TIME,
        },
    },
    "ChannelTest": {
        "type": "object",
        "required": ["ok", "error", "duration_ms"],
        "properties": {
            "ok": {"type": "boolean"},
            "error": {
                "type": ["string", "null"],
                "description": "what went wrong (secrets masked)",
            },
            "duration_ms": {"type": "number"},
        },
    },
    "ChannelDelivery": {
        "type": "object",
        "required": ["id", "event", "tracker_id", "status", "created_at", "attempts"],
        "properties": {
            "id": {"type": "integer"},
            "event": _CHANNEL_EVENT,
            "tracker_id": {"type": "integer"},
            "reminder": {"type": "integer", "description": "0: the first message; n: reminder n"},
            "status": {
                "type": "string",
                "enum": ["pending", "held", "delivered", "failed", "dropped"],
            },
            "created_at": _TIME,
            "attempts": {"type": "integer"},
            "next_attempt_at": _TIME,
            "delivered_at": _TIME,
            "failed_at": _TIME,
            "dropped_at": _TIME,
            "last_error": {"type": ["string", "null"]},
            "held_by_silence": {"type": ["integer", "null"]},
            "incident": {
                "type": ["string", "null"],
                "description": "the incident id de-duplicating services get (an Opsgenie "
                "alias, the X-TelemHQ-Incident header of a JSON post), shared by the message's "
                "retries, reminders and recovery; set when it is first sent",
            },
            "body": {"type": "object"},
            "attempt_log": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "attempted_at": _TIME,
                        "ok": {"type": "boolean"},
                        "error": {"type": ["string", "null"]},
                        "duration_ms": {"type": ["number", "null"]},
                    },
                },
            },
        },
    },
    "SilenceInput": {
        "type": "object",
        "description": "starts_at (default now) + ends_at (or duration), "
        "or cron + duration + timezone",
        "properties": {
            "selector": _SELECTOR,
            "starts_at": {"type": "string", "format": "date-time"},
            "ends_at": {"type": "string", "format": "date-time"},
            "cron": {"type": "string"},
            "duration": _DURATION,
            "timezone": {"type": "string"},
            "comment": {"type": "string"},
        },
    },
    "Silence": {
        "type": "object",
        "required": ["id", "selector", "timezone", "comment", "active"],
        "properties": {
            "id": {"type": "integer"},
            "selector": _SELECTOR,
            "starts_at": _TIME,
            "ends_at": _TIME,
            "cron": {"type": ["string", "null"]},
            "duration": {"type": ["string", "null"]},
            "timezone": {"type": "string"},
            "comment": {"type": "string"},
            "ended_at": _TIME,
            "created_at": _TIME,
            "active": {"type": "boolean"},
            "active_until": _TIME,
        },
    },
}


def _alert_paths() -> dict[str, Any]:
    """``/api/v1/channels`` and ``/api/v1/silences``."""
    channel_id = _path("channel_id", "integer")
    silence_id = _path("silence_id", "integer")
    channel_body = {
        "required": True,
        "content": {"application/json": {"schema": _ref("ChannelInput")}},
    }
    silence_body = {
        "required": True,
        "content": {"application/json": {"schema": _ref("SilenceInput")}},
    }
    gone = {"204": {"description": "Deleted"}, **_NOT_FOUND, **_ERRORS}
    return {
        "/api/v1/channels": {
            "get": {
                "summary": "List notification channels (their URLs' secrets are never shown)",
                "responses": {"200": _json(_list_of("Channel")), **_ERRORS},
            },
            "post": {
                "summary": "Create a notification channel (an Apprise URL with a policy)",
                "requestBody": channel_body,
                "responses": {"201": _json(_ref("Channel"), "Created"), **_INVALID, **_ERRORS},
            },
        },
        "/api/v1/channels/{channel_id}": {
            "parameters": [channel_id],
            "get": {
                "summary": "Get a channel",
                "responses": {"200": _json(_ref("Channel")), **_NOT_FOUND, **_ERRORS},
            },
            "patch": {
                "summary": "Change a channel (only the fields given)",
                "requestBody": channel_body,
                "responses": {
                    "200": _json(_ref("Channel")),
                    **_NOT_FOUND,
                    **_INVALID,
                    **_ERRORS,
                },
            },
            "delete": {"summary": "Delete a channel with its deliveries", "responses": gone},
        },
        "/api/v1/channels/{channel_id}/test": {
            "parameters": [channel_id],
            "post": {
                "summary": "Send a test message now and answer with the outcome",
                "responses": {"200": _json(_ref("ChannelTest")), **_NOT_FOUND, **_ERRORS},
            },
        },
        "/api/v1/channels/{channel_id}/deliveries": {
            "parameters": [channel_id],
            "get": {
                "summary": "Messages queued for a channel, newest first, with every attempt",
                "parameters": _PAGING,
                "responses": {
                    "200": _json(_list_of("ChannelDelivery")),
                    **_NOT_FOUND,
                    **_ERRORS,
                },
            },
        },
        "/api/v1/silences": {
            "get": {
                "summary": "List silences",
                "responses": {"200": _json(_list_of("Silence")), **_ERRORS},
            },
            "post": {
                "summary": "Create a silence: notifications held while it covers a tracker",
                "requestBody": silence_body,
                "responses": {"201": _json(_ref("Silence"), "Created"), **_INVALID, **_ERRORS},
            },
        },
        "/api/v1/silences/{silence_id}": {
            "parameters": [silence_id],
            "get": {
                "summary": "Get a silence",
                "responses": {"200": _json(_ref("Silence")), **_NOT_FOUND, **_ERRORS},
            },
            "delete": {"summary": "End a silence now", "responses": gone},
        },
    }


def openapi_document(base_url: str) -> dict[str, Any]:
    body = {"required": False, "content": {"application/json": {"schema": {"type": "object"}}}}
    tracker_body = {
        "required": True,
        "content": {"application/json": {"schema": _ref("TrackerInput")}},
    }
    ping = {
        "summary": "Record a run (body optional: a JSON object)",
        "security": [],
        "requestBody": body,
        "responses": {
            "200": _json(_ref("PingAnswer")),
            "400": _json({"type": "object"}, "Body not a JSON object, or a bad field"),
            "404": _json({"type": "object"}, "Unknown token"),
            "413": _json({"type": "object"}, "Body over the limit"),
        },
    }
    token = _path("token")
    webhook_id = _path("webhook_id", "integer")
    webhook_body = {
        "required": True,
        "content": {"application/json": {"schema": _ref("WebhookInput")}},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "TelemHQ reference server",
            "version": "1",
            "description": "Ping ingest and management API of the TelemHQ reference server.",
        },
        "servers": [{"url": base_url}],
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {**_SCHEMAS, **_ALERT_SCHEMAS},
        },
        "paths": {
            "/ping/{token}": {"parameters": [token], "post": ping},
            "/ping/{token}/start": {"parameters": [token], "post": ping},
            "/ping/{token}/fail": {"parameters": [token], "post": ping},
            "/ping/_batch": {
                "post": {
                    "summary": "Record several pings in one request (answered ping by ping)",
                    "security": [],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["pings"],
                                    "properties": {
                                        "pings": {
                                            "type": "array",
                                            "maxItems": 1000,
                                            "items": {
                                                "type": "object",
                                                "required": ["ping"],
                                                "properties": {
                                                    "ping": {
                                                        "type": "string",
                                                        "description": "what follows /ping/ in "
                                                        "the ping URL, e.g. TOKEN/start",
                                                    },
                                                    "body": {"type": "object"},
                                                },
                                            },
                                        }
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "results": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "description": "the ping's answer, with its HTTP "
                                            "status as status and the run's as run_status",
                                        },
                                    }
                                },
                            }
                        ),
                        "400": _json({"type": "object"}, "Not a batch"),
                        "413": _json({"type": "object"}, "Body over the limit"),
                    },
                }
            },
            "/ping/{ping_key}/{slug}": {
                "parameters": [
                    _path("ping_key"),
                    _path("slug"),
                ],
                "post": {
                    **ping,
                    "summary": "Record a run by slug; may create the tracker",
                    "description": "With a ping key that creates trackers, the first POST to "
                    "a new slug creates its tracker, named after the body's job (else the "
                    "slug) and tagged with its orchestrator and its tags list.",
                },
            },
            "/api/v1/lineage": {
                "post": {
                    "summary": "Record an OpenLineage event as a run of <namespace>/<job name>",
                    "description": "What the OpenLineage clients' HTTP transport sends "
                    "(optionally Content-Encoding: gzip). The bearer is a ping key (the tracker "
                    "is created by its first START, COMPLETE, FAIL or ABORT) or a read-write API "
                    "key (existing trackers only). RUNNING and OTHER events, DatasetEvents and "
                    "JobEvents are acknowledged and store nothing.",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("OpenLineageRunEvent")}},
                    },
                    "responses": {
                        "200": _json({"oneOf": [_ref("PingAnswer"), _ref("LineageIgnored")]}),
                        "400": _json(_ref("Error"), "Not JSON, not gzip, or not a valid event"),
                        "401": _json(
                            _ref("Error"), "Missing key, or neither a ping key nor an API key"
                        ),
                        "403": _json(_ref("Error"), "The API key is read-only"),
                        "404": _json(_ref("Error"), "No such tracker, and the key creates none"),
                        "413": _json(_ref("Error"), "Event over the limit (after decompression)"),
                        "415": _json(_ref("Error"), "A Content-Encoding other than gzip"),
                        "503": _json(_ref("Error"), "The database is unavailable; retry"),
                    },
                }
            },
            "/api/v1/trackers": {
                "get": {
                    "summary": "List trackers",
                    "parameters": [
                        *_PAGING,
                        {"name": "tag", "in": "query", "schema": {"type": "string"}},
                        {"name": "state", "in": "query", "schema": _STATE},
                    ],
                    "responses": {"200": _json(_list_of("Tracker")), **_ERRORS},
                },
                "post": {
                    "summary": "Create a tracker",
                    "requestBody": tracker_body,
                    "responses": {
                        "201": _json(_ref("Tracker"), "Created"),
                        "409": _json(_ref("Error"), "Slug taken"),
                        **_INVALID,
                        **_ERRORS,
                    },
                },
            },
            "/api/v1/trackers/{tracker}": {
                "parameters": [_TRACKER_REF],
                "get": {
                    "summary": "Get a tracker",
                    "responses": {"200": _json(_ref("Tracker")), **_NOT_FOUND, **_ERRORS},
                },
                "patch": {
                    "summary": "Change a tracker (only the fields given)",
                    "requestBody": tracker_body,
                    "responses": {
                        "200": _json(_ref("Tracker")),
                        **_NOT_FOUND,
                        **_INVALID,
                        **_ERRORS,
                    },
                },
                "put": {
                    "summary": "Change a tracker (the same as PATCH: only the fields given)",
                    "requestBody": tracker_body,
                    "responses": {
                        "200": _json(_ref("Tracker")),
                        **_NOT_FOUND,
                        **_INVALID,
                        **_ERRORS,
                    },
                },
                "delete": {
                    "summary": "Delete a tracker with its runs and flips",
                    "responses": {"204": {"description": "Deleted"}, **_NOT_FOUND, **_ERRORS},
                },
            },
            "/api/v1/trackers/{tracker}/runs": {
                "parameters": [_TRACKER_REF],
                "get": {
                    "summary": "Runs of a tracker, newest first",
                    "parameters": [
                        *_PAGING,
                        {"name": "status", "in": "query", "schema": {"type": "string"}},
                    ],
                    "responses": {"200": _json(_list_of("Run")), **_NOT_FOUND, **_ERRORS},
                },
            },
            "/api/v1/trackers/{tracker}/flips": {
                "parameters": [_TRACKER_REF],
                "get": {
                    "summary": "State changes of a tracker, newest first",
                    "parameters": _PAGING,
                    "responses": {"200": _json(_list_of("Flip")), **_NOT_FOUND, **_ERRORS},
                },
            },
            **{
                f"/api/v1/trackers/{{tracker}}/{action}": {
                    "parameters": [_TRACKER_REF],
                    "post": {
                        "summary": summary,
                        "responses": {"200": _json(_ref("Tracker")), **_NOT_FOUND, **_ERRORS},
                    },
                }
                for action, summary in (
                    ("pause", "Pause: runs are recorded, the state stays paused"),
                    ("resume", "Resume: the state becomes new until the next run"),
                    ("rotate-token", "Give the tracker a new token (the old one stops working)"),
                )
            },
            "/api/v1/keys": {
                "get": {
                    "summary": "List API keys (hashes are never shown)",
                    "responses": {"200": _json(_list_of("ApiKey")), **_ERRORS},
                },
                "post": {
                    "summary": "Create an API key (shown once)",
                    "requestBody": body,
                    "responses": {"201": _json(_ref("ApiKey"), "Created"), **_INVALID, **_ERRORS},
                },
            },
            "/api/v1/keys/{key_id}": {
                "delete": {
                    "summary": "Delete an API key",
                    "parameters": [_path("key_id", "integer")],
                    "responses": {"204": {"description": "Deleted"}, **_NOT_FOUND, **_ERRORS},
                }
            },
            "/api/v1/ping-keys": {
                "get": {
                    "summary": "List ping keys",
                    "responses": {"200": _json(_list_of("PingKey")), **_ERRORS},
                },
                "post": {
                    "summary": "Create a ping key (name-based pings: /ping/{key}/{slug})",
                    "requestBody": body,
                    "responses": {
                        "201": _json(_ref("PingKey"), "Created"),
                        **_INVALID,
                        **_ERRORS,
                    },
                },
            },
            "/api/v1/ping-keys/{key_id}": {
                "delete": {
                    "summary": "Delete a ping key",
                    "parameters": [_path("key_id", "integer")],
                    "responses": {"204": {"description": "Deleted"}, **_NOT_FOUND, **_ERRORS},
                }
            },
            "/api/v1/webhooks": {
                "get": {
                    "summary": "List webhooks (secrets are never shown)",
                    "responses": {"200": _json(_list_of("Webhook")), **_ERRORS},
                },
                "post": {
                    "summary": "Create a webhook (its secret is shown once, in the answer)",
                    "requestBody": webhook_body,
                    "responses": {
                        "201": _json(_ref("Webhook"), "Created"),
                        **_INVALID,
                        **_ERRORS,
                    },
                },
            },
            "/api/v1/webhooks/{webhook_id}": {
                "parameters": [webhook_id],
                "get": {
                    "summary": "Get a webhook",
                    "responses": {"200": _json(_ref("Webhook")), **_NOT_FOUND, **_ERRORS},
                },
                "patch": {
                    "summary": "Change a webhook (only the fields given)",
                    "requestBody": webhook_body,
                    "responses": {
                        "200": _json(_ref("Webhook")),
                        **_NOT_FOUND,
                        **_INVALID,
                        **_ERRORS,
                    },
                },
                "delete": {
                    "summary": "Delete a webhook with its deliveries",
                    "responses": {"204": {"description": "Deleted"}, **_NOT_FOUND, **_ERRORS},
                },
            },
            "/api/v1/webhooks/{webhook_id}/deliveries": {
                "parameters": [webhook_id],
                "get": {
                    "summary": "Alerts queued for a webhook, newest first, with every attempt",
                    "parameters": _PAGING,
                    "responses": {"200": _json(_list_of("Delivery")), **_NOT_FOUND, **_ERRORS},
                },
            },
            **_alert_paths(),
            "/api/v1/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": {"description": "OK"}},
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness and database check",
                    "security": [],
                    "responses": {
                        "200": {"description": "OK"},
                        "503": {"description": "The database does not answer"},
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "security": [],
                    "responses": {"200": {"description": "OK"}},
                }
            },
        },
    }
