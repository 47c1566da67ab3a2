"""The buffer's state files are never written through a planted symbolic link, are readable by
their owner only, and a buffer directory others can write is refused at start with one line."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import free_port

from gateway import statefile
from gateway.buffer import Buffer
from gateway.errors import BufferUnsafeError
from gateway.model import Lane, Sample
from gateway.uplink.sparkplug.bdseq import BdSeqError, BdSeqFile, bdseq_path

T0 = 1_764_000_000_000


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    """A shell's umask (022) instead of systemd's (077)."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file someone would like the daemon to overwrite."""
    path = tmp_path / "elsewhere" / "precious"
    path.parent.mkdir()
    path.write_text("do not touch\n")
    return path


def untouched(victim: Path) -> bool:
    return victim.read_text() == "do not touch\n"


def names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_replace_refuses_a_planted_temporary_link_and_leaves_its_target(
    tmp_path: Path, victim: Path
) -> None:
    (tmp_path / "state.tmp").symlink_to(victim)
    with pytest.raises(OSError, match=r"state\.tmp") as caught:
        statefile.replace(tmp_path / "state", b"42\n")
    assert caught.value.errno == errno.ELOOP
    assert untouched(victim)
    assert not (tmp_path / "state").exists()
    line = statefile.symlink_refusal(caught.value)
    assert line is not None and "\n" not in line
    assert line.startswith(f"{tmp_path / 'state.tmp'} is a symbolic link: refusing")


async def test_seq_and_exposure_files_are_0600_under_a_shell_umask(tmp_path: Path) -> None:
    db = tmp_path / "buffer.db"
    with umask(0o022):
        async with Buffer(db) as buffer:
            buffer.put(Sample("aq-1", T0, {"pm25": 1.0}))
            await buffer.fetch(Lane.SAMPLE, after_seq=0)  # the exposure mark is written
            await buffer.flush()
    for name in ("buffer.db.seq", "buffer.db.exposed"):
        assert mode(tmp_path / name) == 0o600, name


async def test_an_older_0644_exposure_file_is_narrowed(tmp_path: Path) -> None:
    exposed = tmp_path / "buffer.db.exposed"
    exposed.write_bytes(b"\0" * 8)
    exposed.chmod(0o644)
    async with Buffer(tmp_path / "buffer.db"):
        assert mode(exposed) == 0o600


def test_bdseq_file_is_0600_and_never_written_through_a_link(tmp_path: Path, victim: Path) -> None:
    path = bdseq_path(tmp_path / "buffer.db")
    with umask(0o022):
        assert BdSeqFile(path).advance() == 0
    assert mode(path) == 0o600
    path.with_name(path.name + ".tmp").symlink_to(victim)
    with pytest.raises(BdSeqError, match="Too many levels of symbolic links"):
        BdSeqFile(path).advance()
    assert untouched(victim)
    assert path.read_text() == "0\n"  # the last durable value is kept


@pytest.mark.parametrize("name", ["buffer.db.seq.tmp", "buffer.db.seq", "buffer.db.exposed"])
async def test_a_link_planted_beside_the_buffer_is_refused_at_start(
    tmp_path: Path, victim: Path, name: str
) -> None:
    (tmp_path / name).symlink_to(victim)
    with pytest.raises(BufferUnsafeError) as caught:
        async with Buffer(tmp_path / "buffer.db"):
            pass
    assert str(caught.value).startswith(f"{tmp_path / name} is a symbolic link: refusing")
    assert untouched(victim)
    assert "buffer.db" not in names(tmp_path)  # refused before anything was opened


async def test_a_link_planted_while_running_is_a_write_error_not_a_write_through(
    tmp_path: Path, victim: Path
) -> None:
    async with Buffer(tmp_path / "buffer.db", seq_reserve_block=4) as buffer:
        (tmp_path / "buffer.db.seq.tmp").symlink_to(victim)
        for n in range(20):  # past the reservation: it must be raised
            buffer.put(Sample("aq-1", T0 + n, {"pm25": float(n)}))
        await buffer.flush()
        assert not buffer.stats.writable
        assert "buffer.db.seq.tmp is a symbolic link" in (buffer.stats.last_error or "")
        (tmp_path / "buffer.db.seq.tmp").unlink()
        assert await buffer.flush() == 20
        assert buffer.stats.writable
    assert untouched(victim)


@pytest.mark.parametrize(
    ("folder_mode", "refused"),
    [(0o777, "group and others"), (0o770, "its group"), (0o757, "others"), (0o1777, None),
     (0o755, None), (0o700, None)],
)  # fmt: skip
async def test_a_directory_others_can_write_is_refused_unless_sticky(
    tmp_path: Path, folder_mode: int, refused: str | None
) -> None:
    folder = tmp_path / "state"
    folder.mkdir()
    folder.chmod(folder_mode)
    if refused is None:
        async with Buffer(folder / "buffer.db") as buffer:
            assert buffer.stats.writable
        return
    with pytest.raises(BufferUnsafeError) as caught:
        async with Buffer(folder / "buffer.db"):
            pass
    assert str(caught.value) == (
        f"buffer directory {folder} is writable by {refused} (mode {folder_mode:04o}): anyone "
        f"who can write there could make the daemon overwrite another file; chmod go-w {folder}"
    )


def run_with_buffer_in(folder: Path) -> subprocess.CompletedProcess[str]:
    config = folder.parent / "gateway.yaml"
    config.write_text(
        textwrap.dedent(f"""\
        gateway: {{id: gw}}
        buffer: {{path: {folder / "buffer.db"}}}
        uplink: {{servers: ["mqtt://127.0.0.1:9"]}}
        status: {{listen: "127.0.0.1:{free_port()}"}}
        sources: [{{name: s, kind: modbus-tcp, host: 127.0.0.1, port: 9, devices: [{{name: d,
          unit: 1, interval: 1s,
          points: [{{name: p, table: holding, address: 0, type: uint16}}]}}]}}]
        """)
    )
    return subprocess.run(
        [sys.executable, "-m", "gateway", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.parametrize("unsafe", ["a planted link", "a world-writable directory"])
def test_run_refuses_with_one_line_and_exit_1(tmp_path: Path, victim: Path, unsafe: str) -> None:
    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    if unsafe == "a planted link":
        (folder / "buffer.db.seq.tmp").symlink_to(victim)
        expected = f"cannot run: {folder / 'buffer.db.seq.tmp'} is a symbolic link: refusing"
    else:
        folder.chmod(0o777)
        expected = f"cannot run: buffer directory {folder} is writable by group and others"
    result = run_with_buffer_in(folder)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    refusals = [line for line in result.stderr.splitlines() if "cannot run" in line]
    assert len(refusals) == 1 and expected in refusals[0], result.stderr
    assert untouched(victim)
