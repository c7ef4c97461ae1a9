"""FHIR search index: token, string, date, reference and quantity tables; pull high-water marks.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 09:00:00

The index starts empty: `clinhub fhir reindex` fills it for resources stored before this revision.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _timestamp() -> sa.types.TypeEngine:
    return (
        sa.DateTime(timezone=True)
        .with_variant(mysql.DATETIME(fsp=6), "mariadb")
        .with_variant(mysql.DATETIME(fsp=6), "mysql")
    )


def _key() -> list[sa.Column]:
    return [
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=64), nullable=False),
    ]


#: table -> its lookup index's columns after (resource_type, param)
_LOOKUPS = {
    "fhir_search_token": ["code", "resource_id"],
    "fhir_search_string": ["value_norm"],
    "fhir_search_date": ["wide", "low"],
    "fhir_search_reference": ["target_id", "resource_id"],
    "fhir_search_quantity": ["value"],
}


def upgrade() -> None:
    op.create_table(
        "fhir_search_token",
        *_key(),
        sa.Column("system", sa.String(length=255), nullable=True),
        sa.Column("code", sa.String(length=255), nullable=False),
    )
    op.create_table(
        "fhir_search_string",
        *_key(),
        sa.Column("value_norm", sa.String(length=255), nullable=False),
        sa.Column("value_exact", sa.String(length=255), nullable=False),
    )
    op.create_table(
        "fhir_search_date",
        *_key(),
        sa.Column("low", _timestamp(), nullable=False),
        sa.Column("high", _timestamp(), nullable=False),
        sa.Column("wide", sa.Boolean(), nullable=False),
    )
    op.create_table(
        "fhir_search_reference",
        *_key(),
        sa.Column("target_type", sa.String(length=64), nullable=False),
        sa.Column("target_id", sa.String(length=64), nullable=False),
    )
    op.create_table(
        "fhir_search_quantity",
        *_key(),
        sa.Column("value", sa.Double(), nullable=False),
        sa.Column("system", sa.String(length=255), nullable=True),
        sa.Column("code", sa.String(length=64), nullable=True),
    )
    for table, columns in _LOOKUPS.items():
        op.create_index(f"ix_{table}_lookup", table, ["resource_type", "param", *columns], unique=False)
        op.create_index(f"ix_{table}_resource", table, ["resource_type", "resource_id"], unique=False)
    op.create_table(
        "fhir_pull_state",
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("high_water", sa.String(length=40), nullable=False),
        sa.Column("pulled_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("source", "resource_type", name=op.f("pk_fhir_pull_state")),
    )


def downgrade() -> None:
    op.drop_table("fhir_pull_state")
    for table in reversed(list(_LOOKUPS)):
        op.drop_index(f"ix_{table}_resource", table_name=table)
        op.drop_index(f"ix_{table}_lookup", table_name=table)
        op.drop_table(table)
