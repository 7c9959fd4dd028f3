"""Generated from ``proto/inference/`` by ``python -m server.codegen``: never edit."""
