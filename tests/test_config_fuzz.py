"""Whatever a file holds, the config loader loads it or answers with a few bounded lines.

Hypothesis mutates the shipped configs the way a careless or hostile hand would: keys deleted,
types swapped, huge and negative numbers, non-finite floats, long strings, escapes that make
no character, bytes that are not UTF-8, deep nesting, alias bombs, duplicated lines, bad
includes. Every case must end in a LoadedConfig (whose ``check`` summary prints) or in a
ConfigError whose lines each name a file of the case and fit on one short line; nothing else
may escape. A handful of the worst cases also go through the real ``check`` and ``run``.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.cli import summarise
from gateway.config import MAX_DEPTH, load_config
from gateway.config.reader import parse_yaml
from gateway.errors import ConfigError
from gateway.sources.modbus.config import ModbusTcpSource
from gateway.sources.registry import installed

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
# read as the gateway reads them (YAML 1.2 booleans: a duty cycle's `on:` is a key, not True)
SHIPPED = {p.name: parse_yaml(p.read_bytes(), p.name) for p in sorted(CONFIGS.glob("*.yaml"))}
SUPPORT_FILES = [p for p in CONFIGS.iterdir() if p.suffix != ".yaml"]  # city-ca.pem
MAIN = "gateway.yaml"

# "FILE: key.path: message", "FILE: line 3, column 5: message" or "FILE: message".
PROBLEM = re.compile(r"^(?P<file>/[^:]+): (?P<rest>\S.*)$")
MAX_LINE = 500  # characters; a value quoted in a line is cut to about 80
MAX_ANSWER = 32 * 1024  # bytes of all the lines together


# ---------------------------------------------------------------------------------------------
# Raw YAML that a mutation puts in place of a value: the tree cannot hold it (it is not a tree
# yet, or it would crash yaml.safe_dump itself).


def deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


def alias_bomb(levels: int, fanout: int) -> bytes:
    """Billion laughs in one flow sequence: each anchor holds ``fanout`` copies of the last."""
    parts = [b"&b0 [" + b", ".join([b"lol"] * fanout) + b"]"]
    for i in range(1, levels):
        parts.append(b"&b%d [" % i + b", ".join([b"*b%d" % (i - 1)] * fanout) + b"]")
    return b"[" + b", ".join(parts) + b"]"


RAW: list[bytes] = [
    deep(MAX_DEPTH + 1),
    deep(491),  # where PyYAML's composer hit RecursionError
    deep(3000),
    alias_bomb(9, 9),  # ~430 million values once expanded
    alias_bomb(5, 9),  # ~66 thousand: under the bound, refused by the schema
    b"&self [*self]",  # an alias inside its own anchor
    b"*undefined",
    b'"\xff\xfe not UTF-8"',
    b'"\x07 a control character"',
    b"1" + b"0" * 5000,  # past Python's 4300-digit int conversion
    b"2001-13-01",  # a timestamp with a 13th month
    b"!!binary not-base64",
    b"!!python/object:os.system echo",
    b"{a: 1, a: 2}",
    b"[" * 40 + b"{x: &n [1, 2, 3]}, " + b"*n, " * 30 + b"]" * 40,
]

WEIRD_STRINGS = [
    "0ms", "0s", "1ms", "-5s", "1e400s", "1" + "0" * 400 + "s", "3651d", "10 parsecs", "",
    "0B", "1" + "0" * 309 + "B", "1025GiB", "-1MiB", "lots", ".inf", "nan",
    "\ud800", "a\x00b", "line\nbreak", "x" * 5000, "ü" * 2000, "'; DROP TABLE", "{}", "~",
    "mqtt://", "mqtt://h:0", "mqtts://[::1", "/etc/shadow", "../" * 50, "*", "0.0.0.0:8470",
]  # fmt: skip

SCALARS = st.one_of(
    st.integers(),
    st.sampled_from([10**400, -(10**400), 2**63, -(2**63) - 1, 65536, 248, -1, 0]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([float("inf"), float("-inf"), float("nan"), 1e308, -1e-308]),
    st.sampled_from(WEIRD_STRINGS),
    st.text(max_size=30),
    st.text(min_size=1, max_size=4).map(lambda s: s * 1000),  # past any cut of 80 or 500
    st.none(),
    st.booleans(),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)


def dump(tree: Any, style: str) -> bytes:
    """The tree as block YAML, like the shipped files, or as JSON (which YAML reads too, and
    which is written 20 times faster: PyYAML's representer is Python even over libyaml)."""
    if style == "json":
        return json.dumps(tree, indent=1).encode()
    try:
        return yaml.dump(tree, Dumper=yaml.CSafeDumper, sort_keys=False).encode()
    except UnicodeEncodeError:  # libyaml takes no half surrogate pair
        return yaml.safe_dump(tree, sort_keys=False).encode()


def paths(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path in a tree, the root excluded."""
    found: list[tuple[Any, ...]] = []
    if isinstance(tree, dict | list):
        for key, value in tree.items() if isinstance(tree, dict) else enumerate(tree):
            found.append((*prefix, key))
            found += paths(value, (*prefix, key))
    return found


def parent_of(tree: Any, path: tuple[Any, ...]) -> Any:
    for key in path[:-1]:
        tree = tree[key]
    return tree


@st.composite
def cases(draw: st.DrawFn) -> tuple[bytes, dict[str, bytes]]:
    """(the main file's bytes, the other files of the case by name)."""
    tree = copy.deepcopy(SHIPPED[draw(st.sampled_from(sorted(SHIPPED)))])
    raw: dict[str, bytes] = {}  # placeholder -> raw YAML put in place of a value
    extra: dict[str, bytes] = {}
    for _ in range(draw(st.integers(1, 4))):
        places = paths(tree)
        if not places:
            break
        where = draw(st.sampled_from(places))
        parent, key = parent_of(tree, where), where[-1]
        kind = draw(st.sampled_from(["delete", "value", "swap", "raw", "include"]))
        if kind == "delete":
            del parent[key]
        elif kind == "value":
            parent[key] = draw(VALUES)
        elif kind == "swap":
            value = parent[key]
            parent[key] = draw(st.sampled_from([[value], {"x": value}, str(value), None, 7]))
        elif kind == "raw":
            placeholder = f"@@raw{len(raw)}@@"
            raw[placeholder] = draw(st.sampled_from(RAW))
            parent[key] = placeholder
        if kind == "include" or draw(st.integers(0, 9)) == 0:
            tree["include"], extra = draw(includes())
    text = dump(tree, draw(st.sampled_from(["yaml", "json", "json"])))
    for placeholder, replacement in raw.items():
        for quoted in (f"'{placeholder}'", f'"{placeholder}"', placeholder):
            text = text.replace(quoted.encode(), replacement)
    return draw(text_mutations(text)), extra


SHIPPED_SOURCE = yaml.safe_dump({"sources": SHIPPED["example.yaml"]["sources"][:1]}).encode()


@st.composite
def includes(draw: st.DrawFn) -> tuple[Any, dict[str, bytes]]:
    contents = {
        "part.yaml": draw(st.sampled_from([
            SHIPPED_SOURCE,
            SHIPPED_SOURCE + b"gateway: {id: x}\n",
            b"sources: " + deep(600),
            b"sources: " + alias_bomb(9, 9),
            b"- a list\n",
            b"\xff\xfe\x00",
            b"sources: {name: not-a-list}\n",
            b"",
        ]))
    }  # fmt: skip
    include = draw(st.sampled_from([
        ["."], ["sub"], ["sub/*"], ["missing.yaml"], ["part.yaml"], ["part.yaml", "part.yaml"],
        ["*.yaml"], ["*"], ["/dev/zero"], ["/dev/null"], ["a\x00b"], ["x" * 5000], [3], "part.yaml",
        {"a": 1}, [None], ["../" * 100 + "etc/*"],
    ]))  # fmt: skip
    return include, contents


@st.composite
def text_mutations(draw: st.DrawFn, text: bytes) -> bytes:
    lines = text.split(b"\n")
    for _ in range(draw(st.integers(0, 2))):
        kind = draw(st.sampled_from(["duplicate line", "delete line", "bytes", "none"]))
        at = draw(st.integers(0, len(lines) - 1))
        if kind == "duplicate line":
            lines.insert(at, lines[at])
        elif kind == "delete line" and len(lines) > 1:
            del lines[at]
        elif kind == "bytes":
            noise = draw(st.binary(min_size=1, max_size=4))
            column = draw(st.integers(0, len(lines[at])))
            lines[at] = lines[at][:column] + noise + lines[at][column:]
    return b"\n".join(lines)


# ---------------------------------------------------------------------------------------------


def prepare(folder: Path) -> Path:
    """A folder like /etc/street-gateway: the CA file beside the config, and sub-folders."""
    (folder / "sub" / "inner").mkdir(parents=True)
    for support in SUPPORT_FILES:
        shutil.copy(support, folder / support.name)
    return folder


def write_case(folder: Path, main: bytes, extra: dict[str, bytes]) -> Path:
    (folder / "part.yaml").unlink(missing_ok=True)  # left by the case before
    for name, content in extra.items():
        (folder / name).write_bytes(content)
    path = folder / MAIN
    path.write_bytes(main)
    return path


@pytest.fixture(scope="module")
def case_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for every generated case (a fresh one each time costs more than the case)."""
    return prepare(tmp_path_factory.mktemp("cases"))


def assert_answer(problems: list[str], folder: Path) -> None:
    """One line per problem, each naming a file of the case; small all together."""
    files = {str(p) for p in folder.rglob("*")}
    assert problems
    assert sum(len(p.encode("utf-8", "backslashreplace")) for p in problems) <= MAX_ANSWER
    for problem in problems:
        assert "\n" not in problem and "\r" not in problem, problem
        assert len(problem) <= MAX_LINE, problem[:200]
        assert problem.isprintable(), problem
        match = PROBLEM.match(problem)
        assert match, problem
        assert match["file"] in files or Path(match["file"]).exists(), problem
        assert "internal error" not in problem, problem
        problem.encode("utf-8")  # stderr can print it


def load_case(path: Path) -> None:
    """load_config (and the summary `check` prints) must end in a config or a ConfigError."""
    try:
        loaded = load_config(path, installed(), environ={"STATE_DIRECTORY": str(path.parent)})
    except ConfigError as exc:
        assert_answer(exc.problems, path.parent)
    else:
        assert summarise(loaded).startswith(f"{path}: valid")


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=cases())
def test_any_mutation_loads_or_gets_bounded_one_line_problems(
    case_folder: Path, case: tuple[bytes, dict[str, bytes]]
) -> None:
    main, extra = case
    load_case(write_case(case_folder, main, extra))


def test_every_raw_fragment_is_refused_in_place_of_a_value(tmp_path: Path) -> None:
    """Each hostile fragment once, in a place that matters (a device's points)."""
    text = yaml.safe_dump(SHIPPED["example.yaml"], sort_keys=False).encode()
    for index, fragment in enumerate(RAW):
        folder = prepare(tmp_path / str(index))
        path = write_case(folder, text.replace(b"interval: 10s", b"interval: " + fragment), {})
        with pytest.raises(ConfigError) as info:
            load_config(path, installed(), environ={"STATE_DIRECTORY": str(folder)})
        assert_answer(info.value.problems, folder)


def test_the_alias_bomb_bound_leaves_room_for_a_big_cabinet(tmp_path: Path) -> None:
    """100 devices of 60 points each (~70,000 values) load: the bound refuses only bombs."""
    config = copy.deepcopy(SHIPPED["example.yaml"])
    source = config["sources"][2]
    template = {k: v for k, v in source["devices"][0].items() if k != "template"}
    points = [
        {"name": f"p{i}", "table": "holding", "address": 2 * i, "type": "float32", "unit": "V"}
        for i in range(60)
    ]
    source["devices"] = [
        {**template, "name": f"meter-{d}", "unit": 1 + d % 247, "points": points}
        for d in range(100)
    ]
    config["alarms"] = []
    path = write_case(prepare(tmp_path), yaml.safe_dump(config).encode(), {})
    loaded = load_config(path, installed(), environ={"STATE_DIRECTORY": str(tmp_path)})
    meters = loaded.config.sources[2]
    assert isinstance(meters, ModbusTcpSource)
    assert len(meters.devices) == 100


# ---------------------------------------------------------------------------------------------
# Through the real CLI: the exit code and stderr a person sees.

CLI_CASES: dict[str, Callable[[dict[str, Any]], None]] = {
    "interval 0ms": lambda d: d["sources"][0]["devices"][0].update(interval="0ms"),
    "huge size": lambda d: d["buffer"].update(max_size="1" + "0" * 309 + "B"),
    "scale inf": lambda d: d["sources"][0]["devices"][0]["points"][0].update(scale=float("inf")),
    "include a directory": lambda d: d.update(include=["."]),
    "deep nesting": lambda d: d["gateway"].update(labels="@@deep@@"),
    "alias bomb": lambda d: d["gateway"].update(labels="@@bomb@@"),
}


def cli(command: str, path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STATE_DIRECTORY": str(path.parent)}
    return subprocess.run(
        [sys.executable, "-m", "gateway", command, "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


@pytest.mark.parametrize("name", sorted(CLI_CASES))
def test_check_and_run_exit_2_with_one_line_per_problem(tmp_path: Path, name: str) -> None:
    config = copy.deepcopy(SHIPPED["example.yaml"])
    CLI_CASES[name](config)
    text = yaml.safe_dump(config, sort_keys=False).encode()
    text = text.replace(b"'@@deep@@'", deep(491)).replace(b"'@@bomb@@'", alias_bomb(9, 9))
    path = write_case(prepare(tmp_path), text, {})
    for command in ("check", "run"):
        result = cli(command, path)
        assert result.returncode == 2, (command, result.stderr[-2000:])
        assert "Traceback" not in result.stderr
        assert result.stdout == ""
        assert_answer(result.stderr.splitlines(), tmp_path)
