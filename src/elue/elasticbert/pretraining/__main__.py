"""`python -m elue.elasticbert.pretraining --config FILE [key=value ...]`, the same as `elue pretrain`; handy as
`torchrun --nproc_per_node N -m elue.elasticbert.pretraining --config FILE`."""

from __future__ import annotations

import sys

from elue.cli.pretrain_commands import app_for_module

if __name__ == "__main__":
    sys.exit(app_for_module()())
