"""ASGI entry point for multi-process serving (`uvicorn elue.server.asgi:app`): settings from ELUE_* env."""

from elue.server.app import create_app

app = create_app(seed=False)
