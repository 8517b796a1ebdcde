"""orch: a command-line orchestrator for AI coding agents and deterministic runners."""

__version__ = "0.2.0"
