"""Generated from ``proto/guard_v1/`` by ``python -m server.codegen``: never edit."""
