"""The helpers that run child processes in tests: a hung child fails the test with its stacks."""

import sys

import pytest
from subprocesses import run_or_dump


def test_a_hung_child_fails_with_its_python_stack():
    code = "import time\ndef stuck_here():\n    time.sleep(60)\nprint('started', flush=True)\nstuck_here()\n"
    with pytest.raises(AssertionError) as caught:
        run_or_dump([sys.executable, "-c", code], timeout=2)
    message = str(caught.value)
    assert "still running after 2 s" in message and "started" in message
    assert "stuck_here" in message  # faulthandler's stack of the main thread


def test_a_finished_child_is_returned():
    proc = run_or_dump([sys.executable, "-c", "import sys; print('out'); sys.exit(3)"], timeout=60)
    assert (proc.returncode, proc.stdout) == (3, "out\n")
