"""Sparkplug B 3.0 (``uplink.format: sparkplug-b``): the format, the schema, the bdSeq file.

``sparkplug_b_pb2`` is generated from the standard's ``sparkplug_b.proto`` and checked in;
README.md in this folder says how to regenerate it.
"""
