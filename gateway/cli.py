"""The `street-gateway` command: argument parsing and logging set-up, then one handler per command.

Each command module exposes ``register(subparsers)``, which adds its parser and sets
``func(args) -> int`` (the exit code). Only this module configures logging.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from gateway import __version__
from gateway.config import Config, DeviceSpec, LoadedConfig
from gateway.console import add_config_argument, load_or_report
from gateway.model import format_count
from gateway.report import rules_for
from gateway.sources.registry import installed

if TYPE_CHECKING:
    from gateway.sources.registry import Registry

EXIT_OK = 0
EXIT_BAD_CONFIG = 2


# Commands whose handlers live here. For these the tool commands' modules (status, audit, probe
# and what only they import: urllib, the audit store, the probes) are not loaded, so the daemon
# (`run`) does not carry them: ~0.3 MB of peak RSS (docs/perf/e2e.md).
_OWN_COMMANDS = frozenset({"run", "check"})


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(tools=_command(argv) not in _OWN_COMMANDS)
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return EXIT_BAD_CONFIG
    configure_logging(args.log_level)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return EXIT_OK


def _command(argv: Sequence[str]) -> str | None:
    """The command argv names, found as the full parser finds it (None when in doubt)."""
    pre = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    pre.add_argument("--log-level")
    pre.add_argument("--version", action="store_true")
    pre.add_argument("command", nargs="?")
    try:
        known, _ = pre.parse_known_args(argv)
    except argparse.ArgumentError:
        return None
    return known.command if isinstance(known.command, str) else None


def build_parser(*, tools: bool = True) -> argparse.ArgumentParser:
    """The whole command line; with ``tools=False`` only the commands handled in this module."""
    parser = argparse.ArgumentParser(
        prog="street-gateway",
        description="Edge gateway for street sensors: Modbus and serial in, "
        "durable buffer, MQTT out.",
    )
    parser.add_argument("--version", action="version", version=f"street-gateway {__version__}")
    parser.add_argument(
        "--log-level",
        default=os.environ.get("STREET_GATEWAY_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log verbosity (default INFO; env STREET_GATEWAY_LOG_LEVEL)",
    )
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon in the foreground (systemd runs this)")
    add_config_argument(run)
    run.set_defaults(func=_run)

    check = sub.add_parser("check", help="validate a config offline and summarise it")
    add_config_argument(check)
    check.set_defaults(func=_check)
    if not tools:
        return parser

    from gateway import status_client  # noqa: PLC0415 - each command's module is imported once, here
    from gateway.audit import command as audit_command  # noqa: PLC0415
    from gateway.commands import sender as command_sender  # noqa: PLC0415
    from gateway.probe import command as probe_command  # noqa: PLC0415

    status_client.register(sub)

    schema = sub.add_parser(
        "schema",
        help="print the config's JSON Schema (for editors and CI)",
        description="Print the JSON Schema of gateway.yaml. Save it next to the config and put "
        "'# yaml-language-server: $schema=gateway.schema.json' at the top of the YAML for "
        "completion and checking in an editor.",
    )
    schema.set_defaults(func=_schema)

    demo = sub.add_parser("demo", help="the whole pipeline on this machine with simulated sensors")
    demo.add_argument(
        "--outage", default=None, help="cut the uplink for this long, every other period (e.g. 20s)"
    )
    demo.add_argument(
        "--status-port",
        type=int,
        default=None,
        help="status page port (default 8470, or a free one)",
    )
    demo.add_argument(
        "--embedded-broker",
        action="store_true",
        help="use the embedded amqtt broker even when mosquitto is installed",
    )
    demo.set_defaults(func=_demo)

    audit_command.register(sub)
    command_sender.register(sub)
    probe_command.register(sub)
    from gateway.seals import command as seals_command  # noqa: PLC0415

    seals_command.register(sub)
    return parser


def configure_logging(level: str) -> None:
    """Plain lines to stderr: journald adds the time stamp and the unit name."""
    stream_is_journal = bool(os.environ.get("JOURNAL_STREAM"))
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not stream_is_journal:
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(level=level, format=fmt, stream=sys.stderr)
    # pymodbus logs every unanswered request at ERROR with a frame dump: a dead unit would fill
    # the journal on every poll. Our sources log each device's state changes instead.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    # paho logs "failed to receive on socket" at ERROR on every lost link and retry; the uplink
    # logs the link's state changes itself, once each.
    logging.getLogger("gateway.uplink.mqtt.paho").setLevel(logging.CRITICAL)


def _check(args: argparse.Namespace) -> int:
    loaded = load_or_report(args.config, installed())
    if loaded is None:
        return EXIT_BAD_CONFIG
    print(summarise(loaded))
    return EXIT_OK


def summarise(loaded: LoadedConfig) -> str:
    """A short human summary of a valid config, as `check` prints it."""
    config: Config = loaded.config
    lines = [f"{loaded.path}: valid", f"gateway {config.gateway.id}"]
    devices = points = 0
    polls_per_minute = 0.0
    users: dict[str, list[str]] = {}  # template -> the devices that use it
    for source in config.sources:
        specs = source.device_specs()
        where = " ".join(filter(None, [source.kind, source.describe()]))
        single = len(specs) == 1 and specs[0].loc == ()  # the source is its own device
        if single:
            spec = specs[0]
            lines.append(
                f"  source {source.name} ({', '.join(filter(None, [where, spec.summary]))}): "
                f"{format_count(len(spec.points), 'point')}{_report(spec)}"
            )
        else:
            lines.append(f"  source {source.name} ({where}):")
        for spec in specs:
            if not single:
                template = f" (template {spec.template})" if spec.template else ""
                summary = f" {spec.summary}" if spec.summary else ""
                lines.append(
                    f"    device {spec.name}{summary}: {format_count(len(spec.points), 'point')}"
                    f"{template} every {_seconds(spec.interval_s)}{_report(spec)}"
                )
            if spec.template:
                users.setdefault(spec.template, []).append(spec.name)
            devices += 1
            points += len(spec.points)
            if spec.polled:
                polls_per_minute += 60 / spec.interval_s
    lines.append(
        f"{len(config.sources)} sources, {devices} devices, {points} points, "
        f"{polls_per_minute:.0f} polls per minute, {len(config.alarms)} alarms"
    )
    if templates := config.section("templates"):
        used = [f"{name} ({', '.join(users[name])})" for name in templates if name in users]
        lines.append(f"templates used: {', '.join(used) or 'none'}")
    for rule in config.alarms:
        if rule.while_raised is not None:
            faster = ", ".join(
                f"{device} every {_seconds(interval)}"
                for device, interval in rule.while_raised.interval.items()
            )
            lines.append(f"while {rule.name} is raised: {faster}")
    uplink = config.uplink
    topics = f"topics {uplink.topic_prefix}/{config.gateway.id}/..., qos {uplink.qos}"
    if uplink.format == "sparkplug-b" and uplink.sparkplug is not None:
        sp = uplink.sparkplug
        node = sp.edge_node_id or config.gateway.id
        topics = f"Sparkplug B spBv1.0/{sp.group_id}/+/{node}/..., checkpoints qos {uplink.qos}"
        if sp.primary_host_id:
            topics += f", primary host {sp.primary_host_id}"
    if uplink.compression == "zstd":
        topics += ", samples as zstd frames on .../samples.zst"
    lines.append(f"uplink: {', '.join(uplink.servers)} as {config.client_id}, {topics}")
    lines.append(f"buffer: {config.buffer.path} (max {config.buffer.max_size // 1024**2} MiB)")
    lines.append(f"status: http://{config.status.listen}/")
    return "\n".join(lines)


def _report(device: DeviceSpec) -> str:
    """``, report by exception for 3 of 5 points`` when some of its points have ``report``."""
    rules = rules_for(device)
    return f", report by exception for {len(rules)} of {len(device.points)} points" if rules else ""


def _seconds(value: float) -> str:
    return f"{value:g}s" if value >= 1 else f"{value * 1000:g}ms"


def _schema(args: argparse.Namespace) -> int:
    print(json.dumps(config_json_schema(), indent=2))
    return EXIT_OK


def config_json_schema(kinds: Registry | None = None) -> dict[str, Any]:
    """The JSON Schema of the YAML as a person writes it: durations and sizes are strings.
    ``sources`` is the union of the installed kinds (``kinds``: those instead)."""
    schema = (kinds or installed()).config_model.model_json_schema()
    _for_yaml(schema)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "street-gateway config (gateway.yaml)",
        **{k: v for k, v in schema.items() if k != "title"},
    }


def _for_yaml(node: object) -> None:
    """Mend what pydantic writes for Python into what a YAML editor and jsonschema use.

    A duration's or size's default is a number in the models: written as the YAML would. A
    discriminated union (``sources``, by ``kind``) becomes one if/then per kind, so an error
    names the key inside the source instead of "not valid under any of the given schemas".
    """
    if isinstance(node, list):
        for item in node:
            _for_yaml(item)
    if not isinstance(node, dict):
        return
    default = node.get("default")
    if isinstance(default, dict):  # a whole section's defaults: each key shows its own
        del node["default"]
    elif node.get("type") == "string" and isinstance(default, int | float):
        units = _DURATION_UNITS if "ms|s|m|h|d" in node.get("pattern", "") else _SIZE_UNITS
        node["default"] = _with_unit(default, units)
    discriminator = node.pop("discriminator", None)
    if isinstance(discriminator, dict) and "oneOf" in node:
        key, mapping = discriminator["propertyName"], discriminator["mapping"]
        del node["oneOf"]
        node.update(
            type="object",
            required=[key],
            properties={key: {"enum": sorted(mapping)}},
            allOf=[
                {"if": {"properties": {key: {"const": kind}}}, "then": {"$ref": ref}}
                for kind, ref in sorted(mapping.items())
            ],
        )
    for value in node.values():
        _for_yaml(value)


_DURATION_UNITS = [("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0), ("ms", 0.001)]
_SIZE_UNITS = [("GiB", 1024.0**3), ("MiB", 1024.0**2), ("KiB", 1024.0), ("B", 1.0)]


def _with_unit(value: float, units: list[tuple[str, float]]) -> str:
    """The largest unit that holds ``value`` a whole number of times: 2592000 s -> '30d'."""
    for name, size in units:
        count = value / size
        if count >= 1 and abs(count - round(count)) < 1e-9:
            return f"{round(count)}{name}"
    return f"{value:g}{units[-1][0]}"


def _run(args: argparse.Namespace) -> int:
    loaded = load_or_report(args.config, installed())
    if loaded is None:
        return EXIT_BAD_CONFIG
    from gateway.daemon import run_daemon  # noqa: PLC0415 - keeps `check` free of the I/O stack

    return run_daemon(loaded)


def _demo(args: argparse.Namespace) -> int:
    from gateway import demo  # noqa: PLC0415 - the demo pulls in the simulators

    return demo.main(args.outage, args.status_port, args.embedded_broker)
