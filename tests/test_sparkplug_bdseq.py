"""The Sparkplug bdSeq file: +1 per connect, wraps at 255, and survives kill -9 mid-write."""

from __future__ import annotations

import logging
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.uplink.sparkplug.bdseq import BdSeqError, BdSeqFile, bdseq_path

# A child that advances the bdSeq as fast as it can and prints each value once it is durable.
CHILD = """
import sys
from pathlib import Path
from gateway.uplink.sparkplug.bdseq import BdSeqFile
f = BdSeqFile(Path(sys.argv[1]))
while True:
    print(f.advance(), flush=True)
"""


def test_advance_counts_from_zero_and_wraps_after_255(tmp_path: Path) -> None:
    path = bdseq_path(tmp_path / "buffer.db")
    assert path == tmp_path / "buffer.db.bdseq"
    f = BdSeqFile(path)
    assert f.read() is None
    assert [f.advance() for _ in range(3)] == [0, 1, 2]
    assert BdSeqFile(path).read() == 2  # a new process reads what the last one left
    f.write(254)
    assert [f.advance() for _ in range(3)] == [255, 0, 1]
    assert path.read_text() == "1\n"


@pytest.mark.parametrize("content", ["", "banana", "300", "-1"])
def test_a_damaged_file_starts_again_at_zero_and_says_so(
    tmp_path: Path, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "buffer.db.bdseq"
    path.write_text(content)
    with caplog.at_level(logging.WARNING):
        assert BdSeqFile(path).advance() == 0
    assert "starting again at 0" in caplog.text


def test_a_file_that_cannot_be_written_is_an_error_that_names_it(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "state"
    not_a_folder.write_text("a file where the state folder should be")
    with pytest.raises(BdSeqError, match=r"state/buffer.db.bdseq: cannot store"):
        BdSeqFile(not_a_folder / "buffer.db.bdseq").advance()


def test_kill_9_mid_write_leaves_the_last_durable_value_or_the_next(tmp_path: Path) -> None:
    """Kill the writer at random moments: the file always holds a whole bdSeq, which is the
    last value the child reported durable or the one it was writing, never an older one."""
    path = tmp_path / "buffer.db.bdseq"
    rng = random.Random(14)
    for _ in range(8):
        before = BdSeqFile(path).read()
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        last = None
        try:
            wanted = rng.randint(1, 300)
            for _ in range(wanted):
                last = int(proc.stdout.readline())
            time.sleep(rng.random() * 0.01)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        for line in proc.stdout.read().split():  # printed before the kill, not read yet
            last = int(line)
        proc.stdout.close()
        assert last is not None
        found = BdSeqFile(path).read()
        assert found in (last, (last + 1) % 256), (before, last, found)
        # And the next connect goes on from there, never back.
        assert BdSeqFile(path).advance() == (found + 1) % 256
