"""orch: a command-line orchestrator for AI coding agents and deterministic runners."""

__version__ = "0.1.0"
