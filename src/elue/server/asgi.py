"""ASGI entry point for multi-process serving (`uvicorn elue.server.asgi:app`): settings from ELUE_* env.

Every web process imports this, also one that uvicorn restarts while the others serve: it leaves the uploads
they are unpacking alone (only staging folders older than an hour are a crash's leftovers)."""

from elue.server.app import STAGING_STALE_S, create_app

app = create_app(seed=False, staging_min_age_s=STAGING_STALE_S)
