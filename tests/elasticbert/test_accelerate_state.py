"""The end of a distributed command: training objects held to the process's end, which runs no teardown."""

import subprocess
import sys

import pytest
from shared_paths import REPO_ROOT
from subprocesses import child_env

MODULE = REPO_ROOT / "src" / "elue" / "elasticbert" / "accelerate_state.py"

PROGRAM = """
import importlib.util, sys
# the module alone (the package would import transformers: seconds per process)
spec = importlib.util.spec_from_file_location("accelerate_state", sys.argv[2])
a = importlib.util.module_from_spec(spec)
spec.loader.exec_module(a)

class Noisy:  # a stand-in for the DDP model: its teardown is what must not run
    def __del__(self):
        print("torn down", flush=True)

a.hold_until_exit(Noisy())
print("summary", end="")  # left in the buffer: ending the process must not lose it
sys.stderr.write("log line")
a.end_distributed_process(int(sys.argv[1]))
print("after the end")
"""


@pytest.mark.parametrize("world, code", [("2", 143), ("2", 0), ("1", 0)])
def test_a_distributed_command_ends_without_teardown(world, code):
    env = dict(child_env(), WORLD_SIZE=world)
    proc = subprocess.run([sys.executable, "-c", PROGRAM, str(code), str(MODULE)], env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.stderr.endswith("log line"), proc.stderr[-2000:]
    if world == "2":  # held, then the process ends at once: no destructor, the output flushed, the code kept
        assert (proc.returncode, proc.stdout) == (code, "summary")
    else:  # one process: nothing held, nothing ended early (the object is freed as usual)
        assert proc.returncode == 0 and proc.stdout == "torn down\nsummaryafter the end\n"
