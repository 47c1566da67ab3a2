"""An independent Sparkplug B reader for tests: the standard's .proto compiled here, at test time.

Our encoder uses the checked-in ``sparkplug_b_pb2``; the tests decode with classes built from
a descriptor set that ``grpc_tools.protoc`` makes from ``sparkplug_b.proto`` into a temporary
folder, loaded into a descriptor pool of their own. So a payload is read by protobuf's generic
parser and the standard's schema, never by our code. :class:`Host` then reads a stream of
messages as a Sparkplug host application does: alias tables from the births, names and
datatypes for DATA metrics, signed integers from their two's complement, and the message seq
checked for continuity. :func:`rebuild_items` rebuilds each item's JSON object from that view,
as docs/transparency.md tells a host to (seals), with nothing of the gateway's code.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PROTO = (
    Path(__file__).resolve().parent.parent
    / "gateway"
    / "uplink"
    / "sparkplug"
    / "sparkplug_b.proto"
)

# DataType enum values, as the standard numbers them.
INT8, INT16, INT32, INT64 = 1, 2, 3, 4
UINT8, UINT16, UINT32, UINT64 = 5, 6, 7, 8
FLOAT, DOUBLE, BOOLEAN, STRING = 9, 10, 11, 12
_SIGNED_BITS = {INT8: 32, INT16: 32, INT32: 32, INT64: 64}


def compile_descriptor_set(out_dir: Path) -> bytes:
    """``protoc --descriptor_set_out`` of the standard's .proto, as bytes."""
    out = out_dir / "sparkplug_b.fds"
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"--proto_path={PROTO.parent}",
         f"--descriptor_set_out={out}", PROTO.name],
        check=True,
    )  # fmt: skip
    return out.read_bytes()


class Decoder:
    """``decode(bytes)`` -> a plain dict of the payload, through a pool of our own."""

    def __init__(self, descriptor_set: bytes) -> None:
        fds = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set)
        self.file_proto = fds.file[0]
        pool = descriptor_pool.DescriptorPool()
        for f in fds.file:
            pool.Add(f)
        self.payload_class: Any = message_factory.GetMessageClass(
            pool.FindMessageTypeByName("org.eclipse.tahu.protobuf.Payload")
        )

    def decode(self, data: bytes) -> dict[str, Any]:
        p = self.payload_class.FromString(data)
        return {
            "timestamp": p.timestamp if p.HasField("timestamp") else None,
            "seq": p.seq if p.HasField("seq") else None,
            "metrics": [_metric(m) for m in p.metrics],
        }

    def encode_rebirth(self, value: bool = True) -> bytes:
        """An NCMD as a host sends it: ``Node Control/Rebirth`` by name, Boolean."""
        p = self.payload_class()
        p.timestamp = 1
        m = p.metrics.add()
        m.name = "Node Control/Rebirth"
        m.datatype = BOOLEAN
        m.boolean_value = value
        return bytes(p.SerializeToString())


def _metric(m: Any) -> dict[str, Any]:
    which = m.WhichOneof("value")
    out: dict[str, Any] = {
        "name": m.name if m.HasField("name") else None,
        "alias": m.alias if m.HasField("alias") else None,
        "timestamp": m.timestamp if m.HasField("timestamp") else None,
        "datatype": m.datatype if m.HasField("datatype") else None,
        "is_historical": m.is_historical,
        "is_null": m.is_null,
        "raw": getattr(m, which) if which else None,
        "field": which,
        "properties": {},
    }
    if m.HasField("properties"):
        for key, pv in zip(m.properties.keys, m.properties.values, strict=True):
            kind = pv.WhichOneof("value")
            out["properties"][key] = (pv.type, getattr(pv, kind) if kind else None)
    return out


def typed_value(datatype: int, raw: Any) -> Any:
    """A metric's value as its datatype means it (two's complement for the signed ones)."""
    if raw is None:
        return None
    bits = _SIGNED_BITS.get(datatype)
    if bits is not None and raw >= 1 << (bits - 1):
        raw -= 1 << bits
    return raw


@dataclass
class Host:
    """A Sparkplug host application's view of one edge node, fed message by message."""

    decoder: Decoder
    group: str
    node: str
    aliases: dict[int, tuple[str | None, str, int]] = field(
        default_factory=dict
    )  # -> dev, name, dt
    values: dict[tuple[str | None, str], Any] = field(default_factory=dict)
    next_seq: int | None = None
    seq_breaks: int = 0
    bd_seq: int | None = None
    deaths: list[int] = field(default_factory=list)
    device_deaths: list[str] = field(default_factory=list)  # DDEATH, in order (since v0.3)
    births: int = 0
    session_starts: list[int] = field(default_factory=list)  # len(data) at each NBIRTH
    data: list[tuple[str | None, dict[str, Any], dict[str, Any]]] = field(default_factory=list)

    def feed(self, topic: str, payload: bytes) -> dict[str, Any]:
        parts = topic.split("/")
        assert parts[0] == "spBv1.0" and parts[1] == self.group and parts[3] == self.node, topic
        kind, device = parts[2], (parts[4] if len(parts) > 4 else None)
        doc = self.decoder.decode(payload)
        if kind in ("NCMD", "DCMD"):  # a host's commands to the node
            return doc
        if kind == "NDEATH":
            assert doc["seq"] is None  # the standard: NDEATH carries no seq
            (bd,) = [m for m in doc["metrics"] if m["name"] == "bdSeq"]
            assert bd["datatype"] == INT64
            self.deaths.append(bd["raw"])
            return doc
        assert doc["seq"] is not None and 0 <= doc["seq"] <= 255
        assert doc["timestamp"] is not None
        if kind == "DDEATH":  # since v0.3: in the node's seq, no metrics
            assert not doc["metrics"] and device is not None
            self.device_deaths.append(device)
        if kind == "NBIRTH":
            assert doc["seq"] == 0
            self.aliases.clear()
            self.births += 1
            self.session_starts.append(len(self.data))
        elif self.next_seq is not None and doc["seq"] != self.next_seq:
            self.seq_breaks += 1
        self.next_seq = (doc["seq"] + 1) % 256
        if kind == "DDEATH":
            return doc
        if kind == "DBIRTH":  # a device born again (after its DDEATH) declares its aliases anew
            for alias in [a for a, (dev, _, _) in self.aliases.items() if dev == device]:
                del self.aliases[alias]
        if kind in ("NBIRTH", "DBIRTH"):
            for m in doc["metrics"]:
                assert m["name"] is not None and m["datatype"] is not None
                if m["name"] == "bdSeq":
                    self.bd_seq = m["raw"]
                if m["alias"] is not None:
                    assert m["alias"] not in self.aliases, f"alias {m['alias']} used twice"
                    self.aliases[m["alias"]] = (device, m["name"], m["datatype"])
                self.values[device, m["name"]] = typed_value(m["datatype"], m["raw"])
            return doc
        assert kind in ("NDATA", "DDATA"), kind
        named: dict[str, Any] = {}
        for m in doc["metrics"]:
            assert m["name"] is None and m["datatype"] is None, "DATA carries aliases only"
            assert m["timestamp"] is not None
            dev, name, datatype = self.aliases[m["alias"]]
            assert dev == device, f"alias {m['alias']} is {dev}'s, not {device}'s"
            m["resolved"] = (name, datatype)  # what the alias meant when it came
            value = None if m["is_null"] else typed_value(datatype, m["raw"])
            named[name] = value
            self.values[device, name] = value
        self.data.append((device, named, doc))
        return doc


# -- seals: each item's JSON object, rebuilt as docs/transparency.md says ------------------------


def shortest_float32(x: float) -> float:
    """The decimal with the fewest digits that reads back as the same float32 (as the doc says)."""
    for digits in range(1, 10):
        candidate = float(f"{x:.{digits}g}")
        if struct.unpack("<f", struct.pack("<f", candidate))[0] == x:
            return candidate
    return x


def sample_value(m: dict[str, Any], datatype: int) -> Any:
    """A DDATA metric's value in the sample's JSON: the property ``json`` when there is one
    (a value its datatype cannot carry), else null for is_null, else the value its datatype
    means, a Float as its shortest decimal."""
    if "json" in m["properties"]:
        return json.loads(m["properties"]["json"][1])
    if m["is_null"]:
        return None
    value = typed_value(datatype, m["raw"])
    return shortest_float32(value) if datatype == FLOAT else value


def rebuild_items(host: Host, base: str) -> list[tuple[str, dict[str, Any]]]:
    """Each item as ``format: json`` would publish it, with the topic it would come on
    (``base`` is ``<topic_prefix>/<gateway>``), from a host's view of the node's data."""
    out: list[tuple[str, dict[str, Any]]] = []
    for device, named, doc in host.data:
        if not doc["metrics"]:
            continue
        seq_metric, *points = doc["metrics"]
        seq_props = {k: v for k, (_, v) in seq_metric["properties"].items()}
        if device is not None or "device" in seq_props:  # a sample; sgw/seq comes first
            values = {m["resolved"][0]: sample_value(m, m["resolved"][1]) for m in points}
            sample: dict[str, Any] = {
                "seq": named["sgw/seq"],
                "ts": seq_metric["timestamp"],
                "device": seq_props.get("device", device),  # NDATA: its device left the config
                "values": values | json.loads(seq_props.get("values", "{}")),  # points gone
            }
            if "clock" in seq_props:
                sample["clock"] = seq_props["clock"]
            out.append((f"{base}/samples", {"samples": [sample]}))
            continue
        for m in doc["metrics"]:
            name = m["resolved"][0]
            props = {k: v for k, (_, v) in m["properties"].items()}
            if name == "sgw/gap":
                span, reason = m["raw"].split(":")
                first, last = span.split("-")
                gap = {"from_seq": int(first), "to_seq": int(last), "reason": reason}
                out.append((f"{base}/gaps", gap))
            elif name == "sgw/result":
                result = json.loads(m["raw"])
                del result["gateway"]
                out.append((f"{base}/results", result))
            elif "alarm" in props:  # alarm/...: the state; sgw/alarm: "<rule> <state>"
                state = m["raw"].rsplit(" ", 1)[-1]
                alarm = {"seq": props["seq"], "ts": m["timestamp"], "alarm": props["alarm"],
                         "state": state, "value": props["value"],
                         "priority": props["priority"]}  # fmt: skip
                out.append((f"{base}/alarms", alarm))
    return out
