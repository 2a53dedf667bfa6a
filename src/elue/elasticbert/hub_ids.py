"""A model or tokenizer name as typed: a local folder, or an id on the Hugging Face hub."""

from __future__ import annotations

import os
import re

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def could_be_hub_id(text: str) -> bool:
    """`name` or `org/name`. Anything else (`./x`, `/x`, `~/x`, `x/`, `a/b/c`, `a\\b`) can only be a local
    path: when it is not there, say so instead of asking the hub (retries, then a network error)."""
    return (
        not text.startswith((".", "/", "~"))
        and not text.endswith(("/", os.sep))
        and _HUB_ID.fullmatch(text) is not None
    )
