"""Run every benchmark with its default options and write docs/performance.md.

    .venv/bin/python bench/run_all.py [--only AREA ...] [--no-run]

Each benchmark runs in its own process with a time limit (its whole process group is killed
when it overruns); its output goes to docs/perf/output/<area>.txt. docs/performance.md is then
assembled from: the machine, a table of the runs (command, runtime, result), and per area the
figures and notes its engineer wrote in docs/perf/<area>.md followed by this run's output.
``--no-run`` only reassembles the page from the files already there; ``--only`` runs some areas
and keeps the last output of the others.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PERF = ROOT / "docs" / "perf"
OUTPUT = PERF / "output"
PAGE = ROOT / "docs" / "performance.md"


@dataclass(frozen=True)
class Bench:
    area: str
    title: str
    script: str
    args: tuple[str, ...] = ()
    limit_s: float = 600.0

    @property
    def command(self) -> str:
        return " ".join([".venv/bin/python", f"bench/{self.script}", *self.args])


BENCHES = (
    Bench("buffer", "Durable buffer", "bench_buffer.py"),
    Bench("modbus", "Modbus sources", "bench_modbus.py", limit_s=120),
    Bench("serial", "Serial sensors", "bench_serial.py", limit_s=120),
    Bench("sdi12", "SDI-12 sensors", "bench_sdi12.py", limit_s=120),
    Bench("uplink", "MQTT uplink", "bench_uplink.py"),
    Bench("audit", "Fleet audit", "bench_audit.py"),
    Bench("e2e", "End to end (issue 7)", "bench_e2e.py", limit_s=240),
    Bench(
        "e2e-outage",
        "End to end through a broker outage",
        "bench_e2e.py",
        ("--seconds", "30", "--outage", "30"),
        limit_s=240,
    ),
    Bench("demo", "The demo's broker", "bench_demo_broker.py", limit_s=120),
    Bench("status", "Status page: events and history", "bench_status.py", limit_s=120),
    Bench("commands", "Commands, writes and actions", "bench_commands.py", limit_s=240),
    Bench(
        "fleet", "Fleet view (audit --serve)", "bench_fleet.py", ("--seconds", "60"), limit_s=240
    ),
    Bench("seals", "Seals: verify's speed (issue 28)", "bench_verify.py", limit_s=120),
)


@dataclass
class Run:
    status: str  # "ok", "exit N", "timed out after N s", "missing"
    seconds: float


def run(bench: Bench) -> Run:
    script = ROOT / "bench" / bench.script
    if not script.exists():
        return Run("missing", 0.0)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    out_path = OUTPUT / f"{bench.area}.txt"
    print(f"== {bench.area}: {bench.command} (limit {bench.limit_s:.0f}s)", flush=True)
    started = time.monotonic()
    with out_path.open("wb") as out:
        out.write(f"$ {bench.command}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            [sys.executable, str(script), *bench.args],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so an overrun kills its children
        )
        try:
            code = proc.wait(bench.limit_s)
            status = "ok" if code == 0 else f"exit {code}"
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            status = f"timed out after {bench.limit_s:.0f}s"
    seconds = time.monotonic() - started
    with out_path.open("a") as out:
        out.write(f"[{status}, {seconds:.0f}s]\n")
    print(f"   {status} in {seconds:.0f}s", flush=True)
    return Run(status, seconds)


def last_run(bench: Bench) -> Run | None:
    """The status and runtime recorded at the end of the last output file, if any."""
    path = OUTPUT / f"{bench.area}.txt"
    if not path.exists():
        return None
    match = re.search(r"^\[(.+), (\d+)s\]$", path.read_text(), re.MULTILINE)
    return Run(match.group(1), float(match.group(2))) if match else None


def machine() -> list[str]:
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    mem = ""
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        kib = int(f.readline().split()[1])
        mem = f"{kib / 2**20:.1f} GiB"
    try:
        mosquitto = subprocess.run(
            ["mosquitto", "-h"], capture_output=True, text=True, timeout=5, check=False
        ).stdout.splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        mosquitto = "mosquitto not found"
    return [
        f"- CPUs: {os.cpu_count()} (`nproc`), {model}",
        f"- memory: {mem}",
        f"- kernel: {platform.release()}",
        f"- Python {platform.python_version()} ({sys.executable})",
        f"- {mosquitto}",
    ]


def demote(markdown: str) -> str:
    """An area's page under the area's own heading: drop its title, push its headings down."""
    lines = markdown.strip().splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    return "\n".join("##" + line if line.startswith("#") else line for line in lines).strip()


def _read_summary() -> str:
    """The targets table kept by hand in docs/perf/summary.md (it is not a benchmark's output)."""
    path = PERF / "summary.md"
    return path.read_text().strip() if path.exists() else "No `docs/perf/summary.md` yet."


def assemble(runs: dict[str, Run | None]) -> str:
    parts = [
        "# Performance",
        "",
        "What street-gateway costs and how fast it goes, measured on loopback with the benchmarks",
        "in `bench/`. `.venv/bin/python bench/run_all.py` runs them all (each bounded in time) and",
        "writes this page; each area's figures and notes come from `docs/perf/<area>.md`, written",
        "by the engineer who measured them, followed by the output of the last run.",
        "Figures from a shared 2-core container move by 10-20 % from run to run.",
        "",
        "## At a glance",
        "",
        _read_summary(),
        "",
        "## Machine",
        "",
        *machine(),
        "",
        "## Runs",
        "",
        "| area | command | runtime | result |",
        "| --- | --- | --- | --- |",
    ]
    for bench in BENCHES:
        r = runs.get(bench.area)
        runtime = f"{r.seconds:.0f} s" if r and r.status != "missing" else "-"
        status = r.status if r else "not run"
        parts.append(f"| {bench.area} | `{bench.command}` | {runtime} | {status} |")
    for bench in BENCHES:
        parts += ["", f"## {bench.title}", ""]
        notes = PERF / f"{bench.area}.md"
        if notes.exists():
            parts.append(demote(notes.read_text()))
        else:
            parts.append(f"No `docs/perf/{bench.area}.md` yet.")
        output = OUTPUT / f"{bench.area}.txt"
        if output.exists():
            parts += ["", "Output of the last run:", "", "```", output.read_text().strip(), "```"]
    return "\n".join(parts) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=[b.area for b in BENCHES], metavar="AREA")
    parser.add_argument("--no-run", action="store_true", help="only reassemble the page")
    args = parser.parse_args()
    runs: dict[str, Run | None] = {}
    started = time.monotonic()
    for bench in BENCHES:
        if args.no_run or (args.only and bench.area not in args.only):
            runs[bench.area] = last_run(bench)
        else:
            runs[bench.area] = run(bench)
    PAGE.write_text(assemble(runs))
    print(f"wrote {PAGE.relative_to(ROOT)} after {time.monotonic() - started:.0f}s")
    failed = [a for a, r in runs.items() if r and r.status not in ("ok", "missing")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
