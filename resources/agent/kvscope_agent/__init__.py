"""KV Scope agent: runs the multi-user multi-round KV-cache workload and writes protocol v1 events."""

__version__ = "0.1.0"

PROTOCOL_VERSION = 1
