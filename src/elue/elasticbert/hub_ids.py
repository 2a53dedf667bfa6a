"""A model or tokenizer name as typed: a local folder, or an id on the Hugging Face hub."""

from __future__ import annotations

import os
import re

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def could_be_hub_id(text: str) -> bool:
    """`name` or `org/name`. Anything else (`./x`, `/x`, `~/x`, `x/`, `a/b/c`, `a\\b`) can only be a local
    path: when it is not there, say so instead of asking the hub (retries, then a network error). So is an
    `org/name` whose `org` is a folder here (`runs/sst2-typo` next to `runs/`): a mistyped run folder, not an
    organisation on the hub (run from another folder to reach a hub id of that name)."""
    return (
        not text.startswith((".", "/", "~"))
        and not text.endswith(("/", os.sep))
        and _HUB_ID.fullmatch(text) is not None
        and not ("/" in text and os.path.isdir(text.split("/", 1)[0]))
    )
