"""Cross-field checks, after pydantic: (key path, message) pairs, and the warnings.

What one field cannot say alone: unique names, alarms that name a device and point that exist,
durations in the range where they mean something, the uplink's servers and topic prefix, the
status endpoint's address and token, the files secrets are read from. Each source kind checks
its own sources (``SourceConfig.check``) and the sections it adds (``Section.check``).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterator, Mapping, Sequence

from gateway.addresses import is_loopback, parse_server, split_listen
from gateway.config.kinds import Section
from gateway.config.messages import Problem, key_path, number, seconds
from gateway.config.models import MIN_INTERVAL, AlarmRule, Config, PointSpec, ReportConfig
from gateway.config.secret_files import check_secret_file, check_token
from gateway.config.units import MAX_DURATION
from gateway.config.writes import check_actions
from gateway.errors import GatewayError
from gateway.identity import read_public_key
from gateway.quoting import quote

MIN_BUFFER_SIZE = 256 * 1024  # below ~128KiB the WAL allowance alone fills it
# Every topic is P/G/... with G (gateway.id) at most 64 characters and the rest at most ~40:
# with P at most 128 bytes the longest stays under 256 bytes, the smallest limit of the brokers
# a city may use (AWS IoT Core's); MQTT's own limit is 65535 bytes for the whole topic. A longer
# prefix is a paste gone wrong, and a broker that refuses its topics would never take a sample.
MAX_TOPIC_PREFIX = 128


def cross_check(config: Config, sections: Sequence[Section]) -> list[Problem]:
    """Every problem that needs more than one field, or the files a config names."""
    problems: list[Problem] = []
    problems += _check_names(config)
    for i, source in enumerate(config.sources):
        problems += source.check(("sources", i), config)  # the kind's own checks
    for section in sections:
        problems += section.check(config)
    problems += _check_reports(config, sections)
    problems += _check_alarms(config)
    problems += _check_commands(config)
    if config.buffer.max_size < MIN_BUFFER_SIZE:
        problems.append(
            (("buffer", "max_size"),
             "must be at least 256KiB, or the buffer evicts samples as it stores them")
        )  # fmt: skip
    problems += _check_durations(config)
    problems += _check_uplink(config)
    problems += _check_status(config)
    return problems


def _check_durations(config: Config) -> list[Problem]:
    """Every duration within the range where it means something: (key path, value, low, high)."""
    uplink = config.uplink
    ranges: list[tuple[tuple[str | int, ...], float, float, float]] = [
        (("buffer", "max_age"), config.buffer.max_age, 60.0, MAX_DURATION),
        # MQTT counts keepalive in whole seconds, in 16 bits.
        (("uplink", "keepalive"), uplink.keepalive, 1.0, 65535.0),
        (("uplink", "reconnect_max"), uplink.reconnect_max, 0.1, MAX_DURATION),
        (("uplink", "batch", "max_wait"), uplink.batch.max_wait, 0.0, 60.0),
    ]
    for i, source in enumerate(config.sources):
        loc: tuple[str | int, ...] = ("sources", i)
        ranges += [
            ((*loc, "timeout"), source.timeout, MIN_INTERVAL, MAX_DURATION),
            ((*loc, "backoff_max"), source.backoff_max, 0.1, MAX_DURATION),
        ]
        ranges += [
            ((*loc, *spec.loc, "interval"), spec.interval_s, MIN_INTERVAL, MAX_DURATION)
            for spec in source.device_specs()
        ]
    problems: list[Problem] = []
    for loc, value, low, high in ranges:
        if value < low:
            problems.append((loc, f"{seconds(value)} is too short; at least {seconds(low)}"))
        elif value > high:
            problems.append((loc, f"{seconds(value)} is too long; at most {seconds(high)}"))
    return problems


def _check_names(config: Config) -> list[Problem]:
    problems: list[Problem] = []
    seen_sources: dict[str, int] = {}
    seen_devices: dict[str, str] = {}
    for i, source in enumerate(config.sources):
        if source.name in seen_sources:
            problems.append(
                (("sources", i, "name"),
                 f"{source.name!r} is already the name of sources[{seen_sources[source.name]}]")
            )  # fmt: skip
        seen_sources.setdefault(source.name, i)
        devices = [(("sources", i, *d.loc, "name"), d.name) for d in source.device_specs()]
        for loc, name in devices:
            if name in seen_devices:
                problems.append(
                    (loc, f"device name {name!r} is already used at {seen_devices[name]}")
                )
            seen_devices.setdefault(name, key_path(loc[:-1]))
    return problems


def duplicates(names: Sequence[str]) -> Iterator[tuple[int, str]]:
    seen: set[str] = set()
    for index, name in enumerate(names):
        if name in seen:
            yield index, name
        seen.add(name)


def _reports(
    config: Config, sections: Sequence[Section]
) -> Iterator[tuple[tuple[str | int, ...], ReportConfig, PointSpec | None]]:
    """Every ``report`` in the config: (key path, it, the point it is on, if any)."""
    for i, _, spec in config.specs():
        hloc = ("sources", i, *spec.loc)
        if spec.report is not None:
            yield (*hloc, "report"), spec.report, None
        for k, point in enumerate(spec.points):
            if point.report is not None:
                yield (*hloc, "points", k, "report"), point.report, point
    for section in sections:  # the points a kind's section defines (Modbus templates)
        for name, entry in config.section(section.key).items():
            for k, point in enumerate(section.points(entry)):
                if point.report is not None:
                    yield (section.key, name, k, "report"), point.report, point


def _check_reports(config: Config, sections: Sequence[Section]) -> list[Problem]:
    return [
        ((*loc, "max_silence"), "must be more than 0s")
        for loc, report, _ in _reports(config, sections)
        if report.max_silence <= 0
    ]


def _check_alarms(config: Config) -> list[Problem]:
    problems: list[Problem] = []
    points = config.point_names()
    for i, alarm in enumerate(config.alarms):
        loc: tuple[str | int, ...] = ("alarms", i)
        device, _, point = alarm.point.partition("/")
        if device not in points:
            close = difflib.get_close_matches(device, points, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(((*loc, "point"), f"no device named {quote(device)}{hint}"))
        elif point not in points[device]:
            problems.append(
                ((*loc, "point"),
                 f"device {quote(device)} has no point {quote(point)}; "
                 f"it has {', '.join(sorted(points[device]))}")
            )  # fmt: skip
        problems += _check_while_raised(alarm, loc, points)
        if (alarm.above is None) == (alarm.below is None):
            problems.append((loc, "give exactly one of above or below"))
            continue
        if alarm.clear_above is not None and alarm.above is not None:
            problems.append(
                ((*loc, "clear_above"), "clear_above goes with below; with above use clear_below")
            )
        if alarm.clear_below is not None and alarm.below is not None:
            problems.append(
                ((*loc, "clear_below"), "clear_below goes with above; with below use clear_above")
            )
        if (
            alarm.above is not None
            and alarm.clear_below is not None
            and alarm.clear_below > alarm.above
        ):
            problems.append(
                (
                    (*loc, "clear_below"),
                    f"{number(alarm.clear_below)} must not exceed above ({number(alarm.above)})",
                )
            )
        if (
            alarm.below is not None
            and alarm.clear_above is not None
            and alarm.clear_above < alarm.below
        ):
            problems.append(
                (
                    (*loc, "clear_above"),
                    f"{number(alarm.clear_above)} must not be below below ({number(alarm.below)})",
                )
            )
        for key in ("above", "below", "clear_below", "clear_above"):
            value = getattr(alarm, key)
            if value is not None and not math.isfinite(value):
                problems.append(((*loc, key), f"{value} is not a finite number"))
    return problems


def _check_while_raised(
    alarm: AlarmRule, loc: tuple[str | int, ...], points: Mapping[str, object]
) -> list[Problem]:
    if alarm.while_raised is None:
        return []
    problems: list[Problem] = []
    for device, interval in alarm.while_raised.interval.items():
        dloc = (*loc, "while_raised", "interval", device)
        if device not in points:
            close = difflib.get_close_matches(device, list(points), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append((dloc, f"no device named {quote(device)}{hint}"))
        elif interval < MIN_INTERVAL:
            problems.append(
                (dloc, f"{seconds(interval)} is too short; at least {seconds(MIN_INTERVAL)}")
            )
    return problems


def _check_uplink(config: Config) -> list[Problem]:
    problems: list[Problem] = []
    uplink = config.uplink
    for i, server in enumerate(uplink.servers):
        try:
            parse_server(server)
        except ValueError as exc:
            problems.append((("uplink", "servers", i), str(exc)))
    problems += [(("uplink", "topic_prefix"), p) for p in _topic_prefix(uplink.topic_prefix)]
    problems += check_secret_file(uplink.password_file, ("uplink", "password_file"))
    if uplink.password_file is not None and uplink.username is None:
        problems.append((("uplink", "username"), "password_file is set, so username is needed too"))
    if uplink.tls is not None:
        tls = uplink.tls
        for key in ("ca_file", "cert_file"):
            value = getattr(tls, key)
            if value is not None and not value.is_file():
                problems.append((("uplink", "tls", key), f"file not found: {value}"))
        problems += check_secret_file(tls.key_file, ("uplink", "tls", "key_file"))
        if (tls.cert_file is None) != (tls.key_file is None):
            problems.append((("uplink", "tls"), "cert_file and key_file go together"))
    problems += _check_sparkplug(config)
    problems += _check_compression(config)
    return problems


def _topic_prefix(prefix: str) -> list[str]:
    """What is wrong with ``uplink.topic_prefix``, if anything: P in every topic, ``P/G/...``."""
    if not prefix or prefix.startswith("/") or prefix.endswith("/") or set(prefix) & set("+#\0"):
        return [f"{quote(prefix)}: no wildcards (+ #) and no leading or trailing /"]
    size = len(prefix.encode("utf-8", "surrogatepass"))
    if size > MAX_TOPIC_PREFIX:
        return [f"{quote(prefix)} is {size} bytes long; at most {MAX_TOPIC_PREFIX}"]
    if prefix.startswith("$"):
        return [f"{quote(prefix)}: topics that start with $ are the broker's own ($SYS)"]
    if "//" in prefix:
        return [f"{quote(prefix)}: an empty level (//)"]
    return []


# -- Sparkplug B (uplink.format: sparkplug-b) -------------------------------------------------


def _check_compression(config: Config) -> list[Problem]:
    uplink = config.uplink
    if uplink.compression == "none" or uplink.format == "json":
        return []
    return [
        (("uplink", "compression"),
         f"{uplink.compression!r} is for uplink.format json; Sparkplug B payloads are protobuf, "
         "sent as the specification defines them")
    ]  # fmt: skip


def _check_sparkplug(config: Config) -> list[Problem]:
    uplink, loc = config.uplink, ("uplink", "sparkplug")
    if uplink.format != "sparkplug-b":
        return []
    sp = uplink.sparkplug
    if sp is None:
        return [(loc, "uplink.format is sparkplug-b, so uplink.sparkplug.group_id is needed")]
    problems: list[Problem] = []
    ids = {"group_id": sp.group_id, "edge_node_id": sp.edge_node_id or config.gateway.id}
    if sp.primary_host_id is not None:
        ids["primary_host_id"] = sp.primary_host_id
    for key, value in ids.items():
        if not value or set(value) & set("+/#\0"):
            problems.append(((*loc, key), f"{value!r}: must be non-empty, without + / #"))
    seen: dict[tuple[str, bool], int] = {}  # one alarm/<device>/<point>/<above|below> metric
    for i, rule in enumerate(config.alarms):
        metric = (rule.point, rule.above is not None)
        if metric in seen:
            problems.append(
                (("alarms", i),
                 f"with sparkplug-b, one alarm per point and direction: alarms[{seen[metric]}] "
                 f"has {rule.point} {'above' if metric[1] else 'below'} already")
            )  # fmt: skip
        seen.setdefault(metric, i)
    return problems


def _sparkplug_warnings(config: Config) -> list[str]:
    uplink = config.uplink
    if uplink.format != "sparkplug-b":
        if uplink.sparkplug is not None:
            return ["uplink.sparkplug is set but uplink.format is json: it is not used"]
        return []
    if uplink.qos == 0:
        return [
            "uplink.qos: 0 with sparkplug-b: the checkpoint that acknowledges Sparkplug data goes "
            "at QoS 0 too, so nothing is acknowledged and delivery is best-effort"
        ]
    return []


def _check_status(config: Config) -> list[Problem]:
    problems: list[Problem] = []
    try:
        host, _ = split_listen(config.status.listen)
    except ValueError as exc:
        return [(("status", "listen"), str(exc))]
    if not is_loopback(host) and config.status.token_file is None:
        problems.append(
            (("status", "listen"),
             f"{quote(config.status.listen)} is not a loopback address, "
             "so status.token_file is required")
        )  # fmt: skip
    token_file, loc = config.status.token_file, ("status", "token_file")
    if token_file is not None:
        problems += check_secret_file(token_file, loc) or check_token(token_file, loc)
    return problems


def warnings(config: Config, sections: Sequence[Section]) -> list[str]:
    """What is valid but probably not meant, one line each (without the file)."""
    warnings: list[str] = []
    for loc, report, point in _reports(config, sections):
        if point is not None and point.exact and "deadband" in report.model_fields_set:
            warnings.append(
                f"{key_path(loc)}.deadband: does not apply to a {point.type} point, "
                "which is sent on any change"
            )
    for section in sections:
        warnings += section.warnings(config)
    if config.uplink.qos == 0:
        warnings.append(
            "uplink.qos: 0 means the broker acknowledges nothing: delivery is best-effort"
        )
    warnings += _sparkplug_warnings(config)
    if config.uplink.tls is not None and config.uplink.tls.insecure_skip_verify:
        warnings.append("uplink.tls.insecure_skip_verify: the broker's certificate is not checked")
    for i, server in enumerate(config.uplink.servers):
        scheme, host, _ = parse_server(server)
        if scheme == "mqtt" and config.uplink.password_file is not None and not is_loopback(host):
            warnings.append(f"uplink.servers[{i}]: the password crosses the network in clear text")
    return warnings


def _check_commands(config: Config) -> list[Problem]:
    """Alarm actions on writable points; the commands section's keys (since v0.3)."""
    points = {spec.name: {p.name: p for p in spec.points} for _, _, spec in config.specs()}
    problems = check_actions(((i, a.actions) for i, a in enumerate(config.alarms)), points)
    commands = config.commands
    sparkplug = config.uplink.sparkplug
    if (
        sparkplug is not None
        and sparkplug.commands
        and (commands is None or commands.require_signature)
    ):
        problems.append(
            (("uplink", "sparkplug", "commands"),
             "DCMD carries no signature: it needs a commands section with require_signature: "
             "false (the broker's ACL is then the only guard)")
        )  # fmt: skip
    if commands is None:
        return problems
    if commands.require_signature and not commands.trusted_keys:
        problems.append(
            (("commands", "trusted_keys"),
             "name at least one key (or set require_signature: false, trusting the broker alone)")
        )  # fmt: skip
    seen: set[str] = set()
    for k, key in enumerate(commands.trusted_keys):
        loc = ("commands", "trusted_keys", k)
        if key.name in seen:
            problems.append(((*loc, "name"), f"key name {quote(key.name)} is used twice"))
        seen.add(key.name)
        try:
            read_public_key(key.public_key_file)
        except GatewayError as exc:
            problems.append(((*loc, "public_key_file"), str(exc)))
    if not 1.0 <= commands.max_age <= 86400.0:
        problems.append((("commands", "max_age"), "must be from 1s to 1d"))
    return problems
