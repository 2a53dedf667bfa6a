"""users.signup_address: the client address a user signed up from, for the per-address sign-up limit

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 17:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("signup_address", sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f("ix_users_signup_address"), ["signup_address"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_users_signup_address"))
        batch_op.drop_column("signup_address")
