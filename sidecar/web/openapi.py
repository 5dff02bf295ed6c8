"""The OpenAPI 3.1 description of `/api/v1`, served at `/api/v1/openapi.json`.

Written as data, next to the routes it describes; tests/sidecar/test_api.py checks that
every `/api/v1` route of `sidecar.web.app.ROUTES` is here and nothing else is.
"""


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _query(name: str, description: str, schema: dict | None = None) -> dict:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or {"type": "string"}}  # fmt: skip


def _path(name: str, description: str, schema: dict | None = None) -> dict:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": schema or {"type": "string"}}  # fmt: skip


_ERRORS = {
    "400": "A bad parameter, named in `error`.",
    "401": "No credentials, or a tampered, ended or revoked one.",
    "403": "A read-only token on a state-changing call, or a session without its CSRF token.",
    "404": "Unknown, or of a company the caller does not see.",
}
_PAGING = [
    _query("cursor", "`next_cursor` of the previous page; absent for the first page."),
    _query("limit", "Rows per page, 1 to 500 (default 50).",
           {"type": "integer", "minimum": 1, "maximum": 500}),
]  # fmt: skip
_JOB_ID = _path("job_id", "The job's id (or a unique prefix of 8 or more characters).")
_SCHEDULE_ID = _path("schedule_id", "The schedule's id in its source.", {"type": "integer"})
_SOURCE = _query("source", "`moodle` or `file`, when both sources have the id.",
                 {"enum": ["moodle", "file"]})  # fmt: skip


def _op(summary: str, ok: dict, *, params=(), errors=("401", "404"), extra=None, write=False):
    responses = {"200": {"description": "OK", "content": {"application/json": {"schema": ok}}}}
    codes = list(errors) + (["403", "409"] if write else [])
    for code in sorted(set(codes)):
        text = _ERRORS.get(code, {"409": "The ledger is in no state for it (see `error`).",
                                  "413": "The upload is over its limit (10 MB).",
                                  "502": "Moodle refused a request.",
                                  "503": "Moodle could not be reached, or no daemon runtime."
                                  }.get(code, ""))  # fmt: skip
        responses[code] = {"description": text,
                           "content": {"application/json": {"schema": _ref("Error")}}}  # fmt: skip
    responses.update(extra or {})
    return {"summary": summary, "parameters": list(params), "responses": responses}


def _list_of(name: str) -> dict:
    return {"type": "object", "required": ["items", "next_cursor"],
            "properties": {"items": {"type": "array", "items": _ref(name)},
                           "next_cursor": {"type": ["string", "null"]}}}  # fmt: skip


_OBJ = {"type": "object"}
_LINE = {
    "type": "object",
    "properties": {"line": {"type": "integer"}, "message": {"type": "string"}},
}

DOCUMENT: dict = {
    "openapi": "3.1.0",
    "info": {
        "title": "moodle-offload API",
        "version": "1",
        "description": "Jobs, schedules and certificates of a moodle-offload daemon. "
        "See docs/api.md.",
    },
    "servers": [{"url": "/api/v1"}],
    "security": [{"bearer": []}, {"session": []}],
    "paths": {
        "/whoami": {"get": _op("Who the request acts for", _ref("Principal"), errors=["401"])},
        "/health": {
            "get": _op(
                "The state of each moving part (database, Moodle, providers, SMTP, stuck jobs)",
                _ref("Health"),
                errors=["400", "401", "403"],
                params=[
                    _query(
                        "fresh",
                        "`true`: check again now instead of the cached state "
                        "(principals that see every company only).",
                        {"enum": ["true", "false"]},
                    )
                ],
            )
        },  # fmt: skip
        "/activity": {
            "get": _op(
                "Recipients sent and failed per hour, oldest hour first",
                _ref("Activity"),
                errors=["400", "401"],
                params=[
                    _query(
                        "hours",
                        "How many hours back, 1 to 744 (default 168).",
                        {"type": "integer", "minimum": 1, "maximum": 744},
                    )
                ],
            )
        },  # fmt: skip
        "/openapi.json": {"get": {**_op("This description", _OBJ, errors=[]), "security": []}},
        "/jobs": {
            "get": _op(
                "Jobs, newest first",
                _list_of("Job"),
                errors=["400", "401"],
                params=[
                    _query(
                        "status",
                        "Job status; repeat or comma-separate for several.",
                        {
                            "enum": [
                                "pending",
                                "queued",
                                "processing",
                                "completed",
                                "partial_failure",
                                "failed",
                                "retry_pending",
                                "cancelled",
                            ]
                        },
                    ),
                    _query("type", "Job type, e.g. send_reminder, certificate, csv."),
                    _query("course", "Moodle course id.", {"type": "integer"}),
                    _query("company", "IOMAD company id.", {"type": "integer"}),
                    _query("since", "Created at or after (ISO 8601 date or date-time, UTC)."),
                    _query("until", "Created before (ISO 8601 date or date-time, UTC)."),
                    *_PAGING,
                ],
            )
        },  # fmt: skip
        "/jobs/{job_id}": {
            "get": _op(
                "One job: counts, route and reason, batches, its run",
                _ref("JobDetail"),
                params=[_JOB_ID],
            )
        },  # fmt: skip
        "/jobs/{job_id}/recipients": {
            "get": _op(
                "The job's recipients in userid order",
                _list_of("Recipient"),
                errors=["400", "401", "404"],
                params=[
                    _JOB_ID,
                    _query("status", "Recipient status; repeat or comma-separate for several."),
                    _query("q", "Part of the address, first or last name (any case)."),
                    *_PAGING,
                ],
            )
        },
        "/jobs/{job_id}/retry": {
            "post": _op("Re-queue the failed recipients", _OBJ, params=[_JOB_ID], write=True)
        },
        "/jobs/{job_id}/cancel": {
            "post": _op("Cancel what is not delivered yet", _OBJ, params=[_JOB_ID], write=True)
        },
        "/jobs/{job_id}/export": {
            "get": _op(
                "Every recipient as CSV",
                _OBJ,
                params=[_JOB_ID],
                extra={
                    "200": {
                        "description": "CSV, the columns of `jobs export`",
                        "content": {"text/csv": {"schema": {"type": "string"}}},
                    }
                },
            )
        },
        "/schedules": {
            "get": _op(
                "Synced schedules with next due time and last run",
                _list_of("Schedule"),
                errors=["400", "401"],
                params=[
                    _query("all", "`true`: deleted schedules too.", {"enum": ["true", "false"]})
                ],
            )
        },
        "/schedules/{schedule_id}": {
            "get": _op(
                "One schedule",
                _ref("Schedule"),
                errors=["400", "401", "404"],
                params=[_SCHEDULE_ID, _SOURCE],
            )
        },
        "/schedules/{schedule_id}/dry-run": {
            "get": _op(
                "What a run would do now; sends nothing",
                _ref("Preview"),
                errors=["400", "401", "404", "409", "502", "503"],
                params=[
                    _SCHEDULE_ID,
                    _SOURCE,
                    _query(
                        "reissue",
                        "`true`: certificates also for learners who hold one.",
                        {"enum": ["true", "false"]},
                    ),
                ],
            )
        },
        "/schedules/{schedule_id}/run": {
            "post": _op(
                "Fire the schedule now",
                _ref("RunOutcome"),
                errors=["400", "401", "404", "502", "503"],
                params=[_SCHEDULE_ID, _SOURCE],
                write=True,
            )
        },
        "/schedules/{schedule_id}/runs": {
            "get": _op(
                "The schedule's runs, latest first",
                _list_of("Run"),
                errors=["400", "401", "404"],
                params=[_SCHEDULE_ID, _SOURCE, *_PAGING],
            )
        },
        "/certificates": {
            "get": _op(
                "Certificates, newest first",
                _list_of("Certificate"),
                errors=["400", "401"],
                params=[
                    _query("userid", "The learner's Moodle user id.", {"type": "integer"}),
                    _query("code", "The certificate's code (any case)."),
                    _query("course", "Moodle course id.", {"type": "integer"}),
                    _query(
                        "learner",
                        "Part of the learner's address, first or last name (any case); "
                        "each word must match.",
                    ),
                    *_PAGING,
                ],
            )
        },
        "/send/{kind}": {
            "post": {
                **_op(
                    "Preview a bulk tool's send, or send it (`confirm: true`)",
                    _ref("ToolSend"),
                    params=[
                        _path(
                            "kind",
                            "The tool.",
                            {"enum": ["reengagement", "certificates", "license", "welcome"]},
                        )
                    ],
                    errors=("400", "401", "403", "409", "502", "503"),
                    extra={
                        "201": {
                            "description": "Sent: the jobs are committed (`jobs`).",
                            "content": {"application/json": {"schema": _ref("ToolSend")}},
                        }
                    },
                ),  # fmt: skip
                "requestBody": {
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "description": "The tool's fields (docs/api.md), `confirm`, "
                                "`expected`.",
                                "properties": {
                                    "course": {"type": ["integer", "string"]},
                                    "inactive_days": {"type": ["integer", "string"]},
                                    "exclude_completed": {"type": ["boolean", "string"]},
                                    "key": {"type": "string", "maxLength": 100},
                                    "users": {
                                        "type": ["array", "string"],
                                        "items": {"type": "integer"},
                                    },
                                    "reissue": {"type": ["boolean", "string"]},
                                    "reissue_at": {"type": "string"},
                                    "since": {"type": "string"},
                                    "license": {"type": ["integer", "string"]},
                                    "company": {"type": ["integer", "string"]},
                                    "confirm": {"type": "boolean"},
                                    "expected": {"type": ["integer", "string"]},
                                },
                            }
                        }
                    },
                },  # fmt: skip
            }
        },
        "/send/csv": {
            "post": {
                **_op(
                    "Preview a CSV send, or send it (`confirm=true`)",
                    _ref("CsvPreview"),
                    errors=("400", "401", "403", "413", "503"),
                    extra={
                        "201": {
                            "description": "Sent: the job is committed (`job`).",
                            "content": {"application/json": {"schema": _ref("CsvPreview")}},
                        }
                    },
                ),
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["file"],
                                "properties": {
                                    "file": {
                                        "type": "string",
                                        "contentMediaType": "text/csv",
                                        "description": "userid,email,firstname,lastname[,extra...]",
                                    },
                                    "template": {"type": "string", "default": "custom"},
                                    "subject": {"type": "string", "maxLength": 255},
                                    "message": {"type": "string", "maxLength": 20000},
                                    "key": {"type": "string", "maxLength": 100},
                                    "certificate": {"type": "string", "enum": ["true", "false"]},
                                    "skip_invalid": {"type": "string", "enum": ["true", "false"]},
                                    "confirm": {"type": "string", "enum": ["true", "false"]},
                                },
                            }
                        }
                    },
                },
            }
        },
        "/certificates/courses/{course}.zip": {
            "get": _op(
                "Every issued, valid certificate of a course in one ZIP (streamed)",
                _OBJ,
                params=[
                    _path("course", "The course id.", {"type": "integer"}),
                    _query(
                        "since", "Only those issued at or after this ISO 8601 date or date-time."
                    ),
                ],
                errors=["400", "401", "404"],
                extra={
                    "200": {
                        "description": "A ZIP: one stored PDF per certificate, named "
                        "Lastname_Firstname_YYYY-MM-DD_CODE.pdf; MISSING.txt lists "
                        "any that could not be read.",
                        "content": {
                            "application/zip": {"schema": {"type": "string", "format": "binary"}}
                        },
                    }
                },
            )
        },  # fmt: skip
        "/users/{userid}/purge": {
            "post": _op(
                "Erase everything the sidecar holds about one user (site-wide principals "
                "only; idempotent)",
                _OBJ,
                params=[
                    _path("userid", "The Moodle user id.", {"type": "integer", "minimum": 1}),
                    _query(
                        "include_suppression",
                        "`true`: also delete their suppression and unsubscribe entries.",
                        {"enum": ["true", "false"]},
                    ),
                ],
                errors=["400", "401", "503"],
                write=True,
            )
        },  # fmt: skip
        "/certificates/{code}/revoke": {
            "post": {
                **_op(
                    "Revoke a certificate (its link then answers 410)",
                    _ref("Certificate"),
                    params=[
                        _path("code", "The certificate's code."),
                        _query("reason", "Why, 1 to 500 characters (or in the JSON body)."),
                    ],
                    errors=["400", "401", "404"],
                    write=True,
                ),
                "requestBody": {
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {"reason": {"type": "string", "maxLength": 500}},
                            }
                        }
                    },
                },
            }
        },
    },  # fmt: skip
    "components": {
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "An API token from `moodle-offload token create`.",
            },
            "session": {
                "type": "apiKey",
                "in": "cookie",
                "name": "offload_session",
                "description": "A signed-in browser; state-changing calls also "
                "send the session's CSRF token as X-CSRF-Token.",
            },
        },  # fmt: skip
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error", "status"],
                "properties": {"error": {"type": "string"}, "status": {"type": "integer"}},
            },
            "Health": {
                "type": "object",
                "required": ["state", "parts"],
                "properties": {
                    "state": {"enum": ["ok", "warn", "fail", "off"]},
                    "parts": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name", "state", "summary", "detail", "checked_at"],
                            "properties": {
                                "name": {"type": "string"},
                                "state": {"enum": ["ok", "warn", "fail", "off"]},
                                "summary": {"type": "string"},
                                "detail": {"type": "object"},
                                "checked_at": {"type": "string", "format": "date-time"},
                            },
                        },
                    },
                },
            },
            "Activity": {
                "type": "object",
                "required": ["hours", "sent", "failed", "items"],
                "properties": {
                    "hours": {"type": "integer"},
                    "sent": {"type": "integer"},
                    "failed": {"type": "integer"},
                    "items": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "hour": {"type": "string", "format": "date-time"},
                                "sent": {"type": "integer"},
                                "failed": {"type": "integer"},
                            },
                        },
                    },
                },
            },
            "Principal": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "kind": {"enum": ["session", "token"]},
                    "source": {"type": "string"},
                    "is_admin": {"type": "boolean"},
                    "companies": {"type": "array", "items": {"type": "integer"}},
                    "read_only": {"type": "boolean"},
                },
            },
            "Job": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "type": {"type": "string"},
                    "status": {"type": "string"},
                    "source": {"type": "string"},
                    "company": {"type": ["integer", "null"]},
                    "course": {"type": ["integer", "null"]},
                    "route": {"type": "string"},
                    "total": {"type": "integer"},
                    "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
                    "progress": {
                        "type": "object",
                        "properties": {
                            k: {"type": "integer"}
                            for k in ("recipients", "done", "open", "sent", "failed")
                        },
                    },
                    "schedule_id": {"type": ["integer", "null"]},
                    "run_id": {"type": ["integer", "null"]},
                    "created_at": {"type": "string", "format": "date-time"},
                    "updated_at": {"type": "string", "format": "date-time"},
                    "finished_at": {"type": ["string", "null"], "format": "date-time"},
                },
            },
            "JobDetail": {
                "allOf": [
                    _ref("Job"),
                    {
                        "type": "object",
                        "properties": {
                            "route_reason": {"type": "string"},
                            "template_id": {"type": "string"},
                            "actions": _OBJ,
                            "error": {"type": ["string", "null"]},
                            "erased": {
                                "type": ["object", "null"],
                                "description": "what [retention] erased, when and why; "
                                "null when nothing",
                                "properties": {
                                    "at": {"type": "string", "format": "date-time"},
                                    "what": {"type": "array", "items": {"type": "string"}},
                                    "why": {"type": "string"},
                                },
                            },
                            "purged": {
                                "type": "integer",
                                "description": "recipients erased by purge-user",
                            },
                            "batches": {"type": "array", "items": _OBJ},
                            "run": {"type": ["object", "null"]},
                        },
                    },
                ]
            },
            "Recipient": {
                "type": "object",
                "properties": {
                    "userid": {"type": "integer"},
                    "email": {"type": "string"},
                    "firstname": {"type": "string"},
                    "lastname": {"type": "string"},
                    "status": {"type": "string"},
                    "attempts": {"type": "integer"},
                    "last_error": {"type": ["string", "null"]},
                    "timesent": {"type": ["string", "null"]},
                },
            },
            "Schedule": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer"},
                    "source": {"enum": ["moodle", "file"]},
                    "name": {"type": "string"},
                    "company": {"type": ["integer", "null"]},
                    "course": {"type": "integer"},
                    "cloud_preference": {"type": "string"},
                    "next_due": {"type": ["string", "null"]},
                    "next_due_local": {"type": ["string", "null"]},
                    "last_run": {"oneOf": [_ref("Run"), {"type": "null"}]},
                },
            },
            "Run": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer"},
                    "due_at": {"type": "string"},
                    "status": {"type": "string"},
                    "recipients": {"type": "integer"},
                    "counts": _OBJ,
                    "summary": {"type": "string"},
                    "jobs": {"type": "array", "items": {"type": "string"}},
                },
            },
            "Preview": {
                "type": "object",
                "properties": {
                    "recipients": {"type": "integer"},
                    "counts": _OBJ,
                    "summary": {"type": "string"},
                    "route": {"type": "string"},
                    "route_reason": {"type": "string"},
                    "sample": {"type": ["object", "null"]},
                },
            },
            "RunOutcome": {
                "type": "object",
                "properties": {
                    "status": {"type": "string"},
                    "summary": {"type": "string"},
                    "jobs": {"type": "array", "items": {"type": "string"}},
                    "error": {"type": ["string", "null"]},
                },
            },
            "ToolSend": {
                "type": "object",
                "required": ["preview", "jobs"],
                "properties": {
                    "preview": {
                        "type": "object",
                        "required": ["tool", "fields", "to_send", "expected"],
                        "properties": {
                            "tool": {"type": "string"},
                            "fields": {
                                "type": "object",
                                "description": "The fields as "
                                "meant now: send them back to confirm the same.",
                            },
                            "to_send": {"type": "integer"},
                            "expected": {"type": "integer"},
                            "facts": {"type": "object"},
                            "left_out": {
                                "type": "object",
                                "additionalProperties": {"type": "integer"},
                            },
                            "refused": {"type": "array", "items": {"type": "string"}},
                            "notes": {"type": "array", "items": {"type": "string"}},
                            "route": {"type": "string"},
                            "route_reason": {"type": "string"},
                            "sample": {"type": ["object", "null"]},
                        },
                    },
                    "jobs": {"type": "array", "items": {"type": "string"}},
                },
            },  # fmt: skip
            "CsvPreview": {
                "type": "object",
                "required": ["file", "key", "valid_rows", "invalid_rows", "to_send", "job"],
                "properties": {
                    "file": {"type": "string"},
                    "key": {"type": "string", "description": "The idempotency key."},
                    "valid_rows": {"type": "integer"},
                    "invalid_rows": {"type": "array", "items": _LINE},
                    "merged_rows": {"type": "array", "items": _LINE},
                    "extra_columns": {"type": "array", "items": {"type": "string"}},
                    "already_sent": {"type": "integer"},
                    "held_back": {"type": "object", "additionalProperties": {"type": "integer"}},
                    "to_send": {"type": "integer"},
                    "sample": {"type": ["object", "null"]},
                    "job": {
                        "type": ["object", "null"],
                        "description": "With confirm=true: job_id, pending, "
                        "skipped_duplicate, suppressed.",
                    },
                },
            },
            "Certificate": {
                "type": "object",
                "properties": {
                    "code": {"type": "string"},
                    "userid": {"type": "integer"},
                    "course": {"type": ["integer", "null"]},
                    "job_id": {"type": "string"},
                    "status": {"enum": ["valid", "revoked"]},
                    "issued_at": {"type": "string"},
                    "revoked_at": {"type": ["string", "null"]},
                    "revoked_reason": {"type": ["string", "null"]},
                    "download_url": {"type": ["string", "null"]},
                    "verify_url": {"type": ["string", "null"]},
                },
            },
        },  # fmt: skip
    },
}
