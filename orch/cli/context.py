"""What every command gets: the home, settings loaded once, the database opened once.

Settings and pipeline are loaded through the YAML cache in the home
(`.yaml-cache.json`, see orch.yamlio): a tick then never imports PyYAML while
the files are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orch.config import Settings
    from orch.machine import Pipeline
    from orch.state.db import Database

from orch.home import YAML_CACHE_FILE  # parsed orch.yaml and pipeline file (orch.yamlio)


@dataclass
class AppContext:
    home_option: str | None = None
    verbose: bool = False
    _cache: dict[str, Any] = field(default_factory=dict)

    @property
    def home(self) -> Path:
        if "home" not in self._cache:
            from orch.config import resolve_home

            self._cache["home"] = resolve_home(self.home_option)
        return self._cache["home"]

    @property
    def settings(self) -> Settings:
        if "settings" not in self._cache:
            from orch.config import load_settings
            from orch.yamlio import caching

            with caching(self.home / YAML_CACHE_FILE):
                self._cache["settings"] = load_settings(self.home)
        return self._cache["settings"]

    @property
    def pipeline(self) -> Pipeline:
        if "pipeline" not in self._cache:
            from orch.pipeline import load_pipeline
            from orch.yamlio import caching

            settings = self.settings
            with caching(self.home / YAML_CACHE_FILE):
                self._cache["pipeline"] = load_pipeline(settings)
        return self._cache["pipeline"]

    @property
    def db(self) -> Database:
        if "db" not in self._cache:
            from orch.engine.commands.init import open_state

            self._cache["db"] = open_state(self.settings)
        return self._cache["db"]

    def reload(self) -> None:
        """Read orch.yaml and the pipeline again (the database stays open)."""
        self._cache.pop("settings", None)
        self._cache.pop("pipeline", None)

    def close(self) -> None:
        db = self._cache.pop("db", None)
        if db is not None:
            db.close()
