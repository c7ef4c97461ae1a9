"""The store's tables, as SQLAlchemy Core metadata; Alembic migrations are the source of truth on disk."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects import mysql, postgresql

# Constraint names are stable across SQLite, PostgreSQL and MariaDB so migrations can refer to them.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# MySQL/MariaDB TEXT holds only 64 KB; HL7 messages and FHIR resources can be megabytes.
LongText = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
# FHIR resources: JSONB in PostgreSQL (indexable, queryable in place), JSON text elsewhere.
Json = JSON().with_variant(postgresql.JSONB(), "postgresql")
# Microsecond timestamps everywhere; MariaDB's DATETIME defaults to whole seconds.
Timestamp = DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
Id = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements only INTEGER PRIMARY KEY

# ---------------------------------------------------------------- HL7 v2
hl7_message = Table(
    "hl7_message",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("received_at", Timestamp, nullable=False),
    Column("channel", String(64), nullable=False, server_default="default"),
    Column("sending_application", String(180), nullable=False, server_default=""),
    Column("sending_facility", String(180), nullable=False, server_default=""),
    Column("receiving_application", String(180), nullable=False, server_default=""),
    Column("receiving_facility", String(180), nullable=False, server_default=""),
    Column("message_type", String(16), nullable=False, server_default=""),
    Column("trigger_event", String(16), nullable=False, server_default=""),
    Column("control_id", String(199), nullable=False),
    Column("version", String(16), nullable=False, server_default=""),
    Column("raw", LongText, nullable=False),
    Column("status", String(16), nullable=False, server_default="received"),
    Column("error", Text),
    Column("ack_code", String(2)),
    Column("processed_at", Timestamp),
    UniqueConstraint("sending_application", "sending_facility", "control_id"),
    Index(None, "received_at"),
    Index(None, "message_type", "trigger_event"),
    Index(None, "status"),
)

hl7_message_resource = Table(
    "hl7_message_resource",
    metadata,
    Column("message_id", Id, ForeignKey("hl7_message.id", ondelete="CASCADE"), nullable=False),
    Column("resource_type", String(64), nullable=False),
    Column("resource_id", String(64), nullable=False),
    PrimaryKeyConstraint("message_id", "resource_type", "resource_id"),
)

# ---------------------------------------------------------------- FHIR
fhir_resource = Table(
    "fhir_resource",
    metadata,
    Column("resource_type", String(64), nullable=False),
    Column("id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", Timestamp, nullable=False),
    Column("deleted", Boolean, nullable=False, server_default="0"),
    Column("resource", Json, nullable=False),
    PrimaryKeyConstraint("resource_type", "id"),
    Index(None, "last_updated"),
)

fhir_resource_history = Table(
    "fhir_resource_history",
    metadata,
    Column("resource_type", String(64), nullable=False),
    Column("id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", Timestamp, nullable=False),
    Column("deleted", Boolean, nullable=False, server_default="0"),
    Column("resource", Json, nullable=False),
    PrimaryKeyConstraint("resource_type", "id", "version_id"),
    Index(None, "last_updated"),
)

# ---------------------------------------------------------------- FHIR search index
# One table per kind of search parameter (HAPI's layout), kept in step with fhir_resource by the writers in
# the same transaction: a current, not deleted resource has exactly the rows its parameters extract
# (clinhub/fhir/index.py); a deleted one has none. `param` is the stored parameter name; every table has a
# lookup index for searching and a (resource_type, resource_id) index for replacing a resource's rows.
# Long values are cut to the column's size on write and on search alike (MariaDB caps an index at 3072 B).
fhir_search_token = Table(
    "fhir_search_token",
    metadata,
    Column("resource_type", String(64), nullable=False),
    Column("resource_id", String(64), nullable=False),
    Column("param", String(64), nullable=False),
    Column("system", String(255)),
    Column("code", String(255), nullable=False),
    Index("ix_fhir_search_token_lookup", "resource_type", "param", "code", "resource_id"),
    Index("ix_fhir_search_token_resource", "resource_type", "resource_id"),
)

fhir_search_string = Table(
    "fhir_search_string",
    metadata,
    Column("resource_type", String(64), nullable=False),
    Column("resource_id", String(64), nullable=False),
    Column("param", String(64), nullable=False),
    # lower case, accents removed: what the default (starts-with) and :contains searches compare
    Column("value_norm", String(255), nullable=False),
    Column("value_exact", String(255), nullable=False),
    Index("ix_fhir_search_string_lookup", "resource_type", "param", "value_norm"),
    Index("ix_fhir_search_string_resource", "resource_type", "resource_id"),
)

fhir_search_date = Table(
    "fhir_search_date",
    metadata,
    Column("resource_type", String(64), nullable=False),
    Column("resource_id", String(64), nullable=False),
    Column("param", String(64), nullable=False),
    # the value as a UTC range, both ends inclusive (a day is 00:00:00 to 23:59:59.999999)
    Column("low", Timestamp, nullable=False),
    Column("high", Timestamp, nullable=False),
    # wider than a day: a range search scans few of these, and bounds `low` tightly for the rest
    Column("wide", Boolean, nullable=False),
    Index("ix_fhir_search_date_lookup", "resource_type", "param", "wide", "low"),
    Index("ix_fhir_search_date_resource", "resource_type", "resource_id"),
)

fhir_search_reference = Table(
    "fhir_search_reference",
    metadata,
    Column("resource_type", String(64), nullable=False),
    Column("resource_id", String(64), nullable=False),
    Column("param", String(64), nullable=False),
    Column("target_type", String(64), nullable=False),
    Column("target_id", String(64), nullable=False),
    Index("ix_fhir_search_reference_lookup", "resource_type", "param", "target_id", "resource_id"),
    Index("ix_fhir_search_reference_resource", "resource_type", "resource_id"),
)

fhir_search_quantity = Table(
    "fhir_search_quantity",
    metadata,
    Column("resource_type", String(64), nullable=False),
    Column("resource_id", String(64), nullable=False),
    Column("param", String(64), nullable=False),
    Column("value", Double, nullable=False),
    Column("system", String(255)),
    Column("code", String(64)),
    Index("ix_fhir_search_quantity_lookup", "resource_type", "param", "value"),
    Index("ix_fhir_search_quantity_resource", "resource_type", "resource_id"),
)

SEARCH_TABLES = (
    fhir_search_token,
    fhir_search_string,
    fhir_search_date,
    fhir_search_reference,
    fhir_search_quantity,
)

# Incremental pulls from external FHIR servers: per source and type, the newest meta.lastUpdated seen.
fhir_pull_state = Table(
    "fhir_pull_state",
    metadata,
    Column("source", String(255), nullable=False),
    Column("resource_type", String(64), nullable=False),
    Column("high_water", String(40), nullable=False),
    Column("pulled_at", Timestamp, nullable=False),
    PrimaryKeyConstraint("source", "resource_type"),
)

# ---------------------------------------------------------------- provider directory
provider = Table(
    "provider",
    metadata,
    Column("provider_id", String(32), primary_key=True),
    Column("npi", String(16)),
    Column("first_name", String(100)),
    Column("middle_name", String(100)),
    Column("last_name", String(100)),
    Column("full_name", String(255)),
    Column("gender", String(16)),
    Column("birth_year", SmallInteger),
    Column("graduation_year", SmallInteger),
    Column("specialty", String(100)),
    Column("license_number", String(32)),
    Column("license_state", String(8)),
    Column("license_expiry", Date),
    Column("email", String(255)),
    Column("phone", String(64)),
    Column("active", Boolean, nullable=False, server_default="1"),
    Index(None, "npi"),
)

facility = Table(
    "facility",
    metadata,
    Column("facility_id", String(32), primary_key=True),
    Column("name", String(255)),
    Column("npi", String(16)),
    Column("facility_type", String(64)),
    Column("address", String(255)),
    Column("city", String(100)),
    Column("state", String(8)),
    Column("postal_code", String(16)),
    Column("phone", String(64)),
    Column("active", Boolean, nullable=False, server_default="1"),
)

# No foreign keys to provider/facility on purpose: orphans are data-quality findings, not load errors.
affiliation = Table(
    "affiliation",
    metadata,
    Column("affiliation_id", String(32), primary_key=True),
    Column("provider_id", String(32), nullable=False),
    Column("facility_id", String(32), nullable=False),
    Column("is_primary", Boolean, nullable=False, server_default="0"),
    Column("start_date", Date),
    Column("end_date", Date),
    Column("active", Boolean, nullable=False, server_default="1"),
    Index(None, "provider_id"),
    Index(None, "facility_id"),
)

activity = Table(
    "activity",
    metadata,
    Column("activity_id", String(32), primary_key=True),
    Column("provider_id", String(32), nullable=False),
    Column("facility_id", String(32)),
    Column("activity_type", String(64), nullable=False),
    Column("activity_date", Date, nullable=False),
    Column("volume", Integer, nullable=False, server_default="1"),
    Index(None, "provider_id"),
)

# ---------------------------------------------------------------- platform
user = Table(
    "app_user",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("username", String(150), nullable=False, unique=True),
    Column("full_name", String(255)),
    Column("email", String(255)),
    Column("password_hash", String(255)),
    Column("role", String(32), nullable=False, server_default="viewer"),
    Column("disabled", Boolean, nullable=False, server_default="0"),
    Column("created_at", Timestamp, nullable=False),
    Column("last_login_at", Timestamp),
)

api_key = Table(
    "api_key",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("user_id", Id, ForeignKey("app_user.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(150), nullable=False),
    Column("prefix", String(16), nullable=False, unique=True),
    Column("key_hash", String(255), nullable=False),
    Column("created_at", Timestamp, nullable=False),
    Column("expires_at", Timestamp),
    Column("last_used_at", Timestamp),
    Column("revoked_at", Timestamp),
)

audit_event = Table(
    "audit_event",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("occurred_at", Timestamp, nullable=False),
    Column("actor", String(150), nullable=False),
    Column("action", String(64), nullable=False),
    Column("resource_type", String(64)),
    Column("resource_id", String(128)),
    Column("outcome", String(16), nullable=False),
    Column("client_address", String(64)),
    Column("detail", Json),
    # unique prev_hash: two writers that read the same chain head cannot both append (no forks)
    Column("prev_hash", String(64), nullable=False, unique=True),
    Column("hash", String(64), nullable=False, unique=True),
    Index(None, "occurred_at"),
    Index(None, "actor"),
)

job = Table(
    "job",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("kind", String(64), nullable=False),
    Column("status", String(16), nullable=False, server_default="queued"),
    Column("params", Json),
    Column("progress", Integer, nullable=False, server_default="0"),
    Column("result", Json),
    Column("error", Text),
    Column("created_by", String(150)),
    Column("created_at", Timestamp, nullable=False),
    Column("started_at", Timestamp),
    Column("finished_at", Timestamp),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("heartbeat_at", Timestamp),
    Column("worker", String(128)),
    Index(None, "status"),
)

backup = Table(
    "backup",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("created_at", Timestamp, nullable=False),
    Column("path", String(1024), nullable=False),
    Column("size_bytes", BigInteger, nullable=False, server_default="0"),
    Column("sha256", String(64)),
    Column("status", String(16), nullable=False, server_default="created"),
    Column("verified_at", Timestamp),
)

DIRECTORY_TABLES = (provider, facility, affiliation, activity)

# ---------------------------------------------------------------- data quality (clinhub/quality)
# One row per run of a rule set, with its scores; one row per check of a run, with a sample of failing
# rows. Trend and diff between runs are read from these; migration 0003.
quality_run = Table(
    "quality_run",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("ruleset", String(100), nullable=False),
    Column("started_at", Timestamp, nullable=False),
    Column("finished_at", Timestamp, nullable=False),
    Column("as_of", Date, nullable=False),
    Column("created_by", String(150)),
    Column("checks", Integer, nullable=False),
    Column("passed", Integer, nullable=False),
    Column("failed", Integer, nullable=False),
    Column("not_applicable", Integer, nullable=False),
    Column("errors", Integer, nullable=False),
    Column("overall", Double),
    Column("grade", String(2)),
    Column("percent_passed", Double),
    Column("scores", Json, nullable=False),
    Index(None, "ruleset", "started_at"),
)

quality_check_result = Table(
    "quality_check_result",
    metadata,
    Column("run_id", String(36), ForeignKey("quality_run.id", ondelete="CASCADE"), nullable=False),
    Column("check_id", String(100), nullable=False),
    Column("category", String(16), nullable=False),
    Column("subcategory", String(16), nullable=False),
    Column("dimension", String(16), nullable=False),
    Column("severity", String(8), nullable=False),
    Column("status", String(16), nullable=False),
    Column("rows_checked", BigInteger, nullable=False),
    Column("rows_failed", BigInteger, nullable=False),
    Column("percent_failed", Double, nullable=False),
    Column("threshold", Double, nullable=False),
    Column("error", Text),
    Column("sample", Json),
    Column("seconds", Double, nullable=False),
    PrimaryKeyConstraint("run_id", "check_id"),
)

#: the mentor's conversations: one per user and session, its turns, and a summary of the older ones
mentor_conversation = Table(
    "mentor_conversation",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("username", String(150), nullable=False),
    Column("created_at", Timestamp, nullable=False),
    Column("updated_at", Timestamp, nullable=False),
    Column("turns", Integer, nullable=False),
    Column("summary", Text),
    Column("summarized_turns", Integer, nullable=False),
    Index(None, "username", "updated_at"),
)

mentor_turn = Table(
    "mentor_turn",
    metadata,
    Column(
        "conversation_id",
        String(64),
        ForeignKey("mentor_conversation.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("seq", Integer, nullable=False),
    Column("role", String(16), nullable=False),
    Column("content", Text, nullable=False),
    Column("persona", String(16)),
    Column("resonance_key", String(64)),
    Column("created_at", Timestamp, nullable=False),
    PrimaryKeyConstraint("conversation_id", "seq"),
)
