"""Mentor: conversations per user and session, and their turns.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 03:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _timestamp() -> sa.types.TypeEngine:
    return (
        sa.DateTime(timezone=True)
        .with_variant(mysql.DATETIME(fsp=6), "mariadb")
        .with_variant(mysql.DATETIME(fsp=6), "mysql")
    )


def upgrade() -> None:
    op.create_table(
        "mentor_conversation",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("username", sa.String(length=150), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("updated_at", _timestamp(), nullable=False),
        sa.Column("turns", sa.Integer(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.Column("summarized_turns", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mentor_conversation")),
    )
    op.create_index(
        op.f("ix_mentor_conversation_username_updated_at"),
        "mentor_conversation",
        ["username", "updated_at"],
        unique=False,
    )
    op.create_table(
        "mentor_turn",
        sa.Column("conversation_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("persona", sa.String(length=16), nullable=True),
        sa.Column("resonance_key", sa.String(length=64), nullable=True),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["mentor_conversation.id"],
            name=op.f("fk_mentor_turn_conversation_id_mentor_conversation"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("conversation_id", "seq", name=op.f("pk_mentor_turn")),
    )


def downgrade() -> None:
    op.drop_table("mentor_turn")
    op.drop_index(op.f("ix_mentor_conversation_username_updated_at"), table_name="mentor_conversation")
    op.drop_table("mentor_conversation")
