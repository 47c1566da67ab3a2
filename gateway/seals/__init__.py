"""Seals: signed Merkle roots over the items a gateway sends (docs/transparency.md). Pure."""
