"""peewee models: the ledger of jobs, batches and recipients, and what surrounds it.

All times are naive UTC datetimes. JSON columns are TEXT (portable across SQLite,
PostgreSQL and MariaDB). The schema itself is created by `migrations.py`, never by
`create_tables` at runtime.
"""

import json

from peewee import (
    BigAutoField,
    BigIntegerField,
    BooleanField,
    CharField,
    CompositeKey,
    DatabaseProxy,
    DateTimeField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)

database = DatabaseProxy()


class JSONText(TextField):
    """A JSON value stored as TEXT."""

    def db_value(self, value):
        return None if value is None else json.dumps(value, separators=(",", ":"))

    def python_value(self, value):
        return None if value is None else json.loads(value)


class BaseModel(Model):
    class Meta:
        database = database
        legacy_table_names = False


class SchemaVersion(BaseModel):
    version = IntegerField(primary_key=True)
    name = CharField(100)
    applied_at = DateTimeField()


class Company(BaseModel):
    """An IOMAD tenant and its offload override (config or Moodle)."""

    id = BigIntegerField(primary_key=True)
    name = CharField(255, default="")
    enabled = BooleanField(default=True)
    provider = CharField(16, null=True)
    threshold = IntegerField(null=True)
    updated_at = DateTimeField()


class Job(BaseModel):
    id = CharField(36, primary_key=True)
    type = CharField(32)
    status = CharField(20, index=True)
    source = CharField(32, default="")
    tenant_id = BigIntegerField(null=True)
    courseid = BigIntegerField(null=True)
    created_by = BigIntegerField(null=True)
    idempotency_key = CharField(191, null=True, index=True)
    actions = JSONText()
    template_id = CharField(64)
    certificate_template_id = CharField(64, null=True)
    sender = CharField(255, default="")
    reply_to = CharField(255, null=True)
    template_data = JSONText()
    route = CharField(16)
    route_reason = TextField(default="")
    schedule_id = BigIntegerField(null=True)
    run_id = BigIntegerField(null=True)
    total = IntegerField()
    error = TextField(null=True)
    created_at = DateTimeField(index=True)
    updated_at = DateTimeField()
    finished_at = DateTimeField(null=True)
    # retention (sidecar.privacy): when the recipients' personal data was erased, and what
    erased_at = DateTimeField(null=True)
    erased = TextField(null=True)


class Batch(BaseModel):
    id = CharField(36, primary_key=True)
    job = ForeignKeyField(Job, backref="batches", on_delete="CASCADE")
    index = IntegerField()
    status = CharField(20, index=True)
    route = CharField(16)
    size = IntegerField()
    external_id = CharField(255, null=True)
    attempts = IntegerField(default=0)
    lease_until = DateTimeField(null=True)
    owner = CharField(100, null=True)  # host:pid of the local worker holding the lease
    submitted_at = DateTimeField(null=True)
    message_ids = JSONText(null=True)  # cloud: the queue's message id of each part
    error = TextField(null=True)  # cloud: why the batch could not be handed over
    updated_at = DateTimeField()

    class Meta:
        indexes = ((("job", "index"), True),)


class Recipient(BaseModel):
    # The composite indexes below lead with job and batch: no separate FK indexes
    # (each extra index costs ~15% on a 50,000-row job commit).
    id = BigAutoField()
    job = ForeignKeyField(Job, backref="recipients", on_delete="CASCADE", index=False)
    batch = ForeignKeyField(Batch, backref="recipients", on_delete="CASCADE", index=False)
    userid = BigIntegerField()
    email = CharField(254)
    firstname = CharField(100, default="")
    lastname = CharField(100, default="")
    vars = JSONText(default="{}")
    status = CharField(20)
    attempts = IntegerField(default=0)
    last_error = TextField(null=True)
    external_id = CharField(255, null=True)
    certificate_key = TextField(null=True)
    next_attempt_at = DateTimeField(null=True)
    timesent = DateTimeField(null=True)
    updated_at = DateTimeField()
    # SES reported a bounce or a complaint: a later `sent` report does not undo it
    bounced_at = DateTimeField(null=True)

    class Meta:
        indexes = (
            (("job", "userid"), True),
            (("batch", "status"), False),
            (("userid",), False),
            # the dashboard's mail per hour (sidecar/activity.py): a covering range count
            # per hour, job_id for a company's view (migration 7; costs ~15% on a 50,000-row
            # job commit, bench/commit.py)
            (("status", "timesent", "updated_at", "job"), False),
            # a job's counts by status and its progress over time (the dashboard's job page,
            # `jobs show`): a covering range of one job's rows, whatever else the ledger
            # holds (migration 8; bench/job_page.py)
            (("job", "status", "timesent", "updated_at"), False),
        )


class SendKey(BaseModel):
    """(idempotency key, user, action) already given to a job: never given to another."""

    idempotency_key = CharField(191)
    userid = BigIntegerField()
    action = CharField(16)
    job_id = CharField(36)

    class Meta:
        primary_key = CompositeKey("idempotency_key", "userid", "action")


class SeenCallback(BaseModel):
    callback_id = CharField(36, primary_key=True)
    job_id = CharField(36, index=True)
    batch_id = CharField(36)
    accepted = IntegerField()
    ignored = IntegerField()
    received_at = DateTimeField()


class Certificate(BaseModel):
    code = CharField(32, primary_key=True)
    job_id = CharField(36, index=True)
    userid = BigIntegerField(index=True)
    courseid = BigIntegerField(null=True)
    storage = CharField(16)  # local | s3 | r2
    key = TextField()
    issued_at = DateTimeField()
    revoked_at = DateTimeField(null=True)
    revoked_reason = TextField(null=True)  # why, as the admin said it (migration 9)
    # written back to Moodle ({prefix}_record_certificate, sidecar.writeback; migration 10):
    # None = not yet, sending = the call may be in flight, recorded, unknown (it may or
    # may not have run: never retried), refused (Moodle answered an error)
    record_state = CharField(16, null=True)
    record_at = DateTimeField(null=True)  # when record_state last changed
    record_error = TextField(null=True)

    class Meta:
        indexes = ((("job_id", "userid"), True), (("record_state", "courseid"), False))


class SuppressedAddress(BaseModel):
    """An address SES reported bounced (permanently) or complained: later jobs skip it."""

    email = CharField(254, primary_key=True)  # lower case
    reason = TextField()
    source = CharField(32)  # ses_bounce | ses_complaint
    job_id = CharField(36, null=True)
    userid = BigIntegerField(null=True)
    created_at = DateTimeField()


class OptOut(BaseModel):
    """A learner's unsubscribe from one kind of bulk mail: later jobs of that kind skip them.

    Kept apart from SuppressedAddress: a bounce is a fact about a mailbox (any mail to it
    fails), an opt-out is a person's choice about one kind of mail, kept if their address
    changes, and never applied to certificates or account mail.
    """

    userid = BigIntegerField()
    kind = CharField(16)  # reminders | reengagement | custom
    source = CharField(32)  # one-click | page | cli
    created_at = DateTimeField()

    class Meta:
        primary_key = CompositeKey("userid", "kind")


class AuditLog(BaseModel):
    id = BigAutoField()
    at = DateTimeField(index=True)
    event = CharField(64)
    job_id = CharField(36, null=True, index=True)
    detail = TextField(default="")


class AdminAccount(BaseModel):
    """A local dashboard account (`moodle-offload admin add`): for sites without token.php."""

    name = CharField(64, primary_key=True)
    password_hash = CharField(255)  # sidecar.passwords: scrypt, parameters and salt inside
    created_at = DateTimeField()
    updated_at = DateTimeField()


class ApiToken(BaseModel):
    """A bearer token for programs; only its SHA-256 is kept (the token is shown once)."""

    name = CharField(64, primary_key=True)
    token_hash = CharField(64, unique=True)
    company_id = BigIntegerField(null=True)  # None: every company
    read_only = BooleanField(default=False)
    created_at = DateTimeField()
    last_used_at = DateTimeField(null=True)


class WebSession(BaseModel):
    """A signed-in dashboard user; the cookie carries the id, this row only its SHA-256."""

    id_hash = CharField(64, primary_key=True)
    name = CharField(255)
    source = CharField(16)  # local | moodle
    is_admin = BooleanField()
    companies = JSONText(default=list)
    read_only = BooleanField(default=False)
    csrf = CharField(64)
    address = CharField(64, default="")
    created_at = DateTimeField()
    seen_at = DateTimeField(index=True)


class LoginFailure(BaseModel):
    """One failed sign-in, kept for the length of the rate-limit window."""

    id = BigAutoField()
    at = DateTimeField(index=True)
    address = CharField(64, index=True)
    username = CharField(191, index=True)


class ScheduleRecord(BaseModel):
    """The last good copy of one schedule, from Moodle or the schedules file."""

    id = BigAutoField()
    source = CharField(16)  # moodle | file
    remote_id = BigIntegerField()
    name = CharField(255, default="")
    enabled = BooleanField(default=True)
    data = JSONText()  # Schedule.as_row()
    fingerprint = CharField(64)
    timemodified = BigIntegerField(default=0)
    first_seen_at = DateTimeField()  # due times before this never fire
    synced_at = DateTimeField()
    deleted_at = DateTimeField(null=True)

    class Meta:
        table_name = "schedule"
        indexes = ((("source", "remote_id"), True),)


class ScheduleRun(BaseModel):
    """One due time of one schedule. Written before anything is selected or sent; the
    unique (schedule, due_at) is what makes a run fire once across daemons."""

    id = BigAutoField()
    schedule = ForeignKeyField(ScheduleRecord, backref="runs", on_delete="CASCADE", index=False)
    due_at = DateTimeField()
    status = CharField(16)  # claimed | done | failed | retry | skipped | superseded
    manual = BooleanField(default=False)  # `schedules run`: not a due time of the schedule
    owner = CharField(100, null=True)
    missed = IntegerField(default=0)
    claimed_at = DateTimeField()
    finished_at = DateTimeField(null=True)
    recipients = IntegerField(default=0)
    counts = JSONText(default=dict)  # suppressed by reason, certificates, ...
    route = CharField(16, null=True)
    route_reason = TextField(default="")
    error = TextField(null=True)

    class Meta:
        table_name = "schedule_run"
        indexes = ((("schedule", "due_at"), True),)


class SyncState(BaseModel):
    """The outcome of the last schedule sync of each source, for /healthz and `check`."""

    source = CharField(16, primary_key=True)
    ok_at = DateTimeField(null=True)
    error = TextField(null=True)
    error_at = DateTimeField(null=True)
    schedules = IntegerField(default=0)
    skipped = IntegerField(default=0)


ALL_MODELS = (
    SchemaVersion,
    Company,
    Job,
    Batch,
    Recipient,
    SendKey,
    SeenCallback,
    Certificate,
    SuppressedAddress,
    OptOut,
    AuditLog,
    ScheduleRecord,
    ScheduleRun,
    SyncState,
    AdminAccount,
    ApiToken,
    WebSession,
    LoginFailure,
)
