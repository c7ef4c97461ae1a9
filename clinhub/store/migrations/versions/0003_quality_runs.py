"""Data quality: runs of a rule set and the result of each check.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _timestamp() -> sa.types.TypeEngine:
    return (
        sa.DateTime(timezone=True)
        .with_variant(mysql.DATETIME(fsp=6), "mariadb")
        .with_variant(mysql.DATETIME(fsp=6), "mysql")
    )


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "quality_run",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("ruleset", sa.String(length=100), nullable=False),
        sa.Column("started_at", _timestamp(), nullable=False),
        sa.Column("finished_at", _timestamp(), nullable=False),
        sa.Column("as_of", sa.Date(), nullable=False),
        sa.Column("created_by", sa.String(length=150), nullable=True),
        sa.Column("checks", sa.Integer(), nullable=False),
        sa.Column("passed", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("not_applicable", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("overall", sa.Double(), nullable=True),
        sa.Column("grade", sa.String(length=2), nullable=True),
        sa.Column("percent_passed", sa.Double(), nullable=True),
        sa.Column("scores", _json(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quality_run")),
    )
    op.create_index(
        op.f("ix_quality_run_ruleset_started_at"), "quality_run", ["ruleset", "started_at"], unique=False
    )
    op.create_table(
        "quality_check_result",
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("check_id", sa.String(length=100), nullable=False),
        sa.Column("category", sa.String(length=16), nullable=False),
        sa.Column("subcategory", sa.String(length=16), nullable=False),
        sa.Column("dimension", sa.String(length=16), nullable=False),
        sa.Column("severity", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("rows_checked", sa.BigInteger(), nullable=False),
        sa.Column("rows_failed", sa.BigInteger(), nullable=False),
        sa.Column("percent_failed", sa.Double(), nullable=False),
        sa.Column("threshold", sa.Double(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("sample", _json(), nullable=True),
        sa.Column("seconds", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["quality_run.id"],
            name=op.f("fk_quality_check_result_run_id_quality_run"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", "check_id", name=op.f("pk_quality_check_result")),
    )


def downgrade() -> None:
    op.drop_table("quality_check_result")
    op.drop_index(op.f("ix_quality_run_ruleset_started_at"), table_name="quality_run")
    op.drop_table("quality_run")
