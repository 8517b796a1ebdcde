"""The hosts of one state as one tick sees them, and the limits they share (SPEC 11).

Pure over the `hosts` rows read at the start of a tick. A home on SQLite is
a state with one host, itself: its limits are its own orch.yaml's. On
PostgreSQL each limit is the strictest among the live hosts (so a host with
a larger value cannot overrun a stricter one): `max_concurrency` among all
live hosts, a repo's `max_active` among the live hosts that configure it;
`host_max_concurrency` is this host's own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from orch.config import Settings
from orch.frozen import frozen_record
from orch.state.records import Host


@frozen_record
class Cluster:
    """This host's name and settings' limits, and the host rows of the state."""

    host: str
    timeout_s: float
    max_concurrency: int         # this host's own orch.yaml
    host_limit: int              # this host's host_max_concurrency (default max_concurrency)
    max_active: tuple[tuple[str, int], ...]  # this host's repos: (name, max_active)
    hosts: tuple[Host, ...] = ()
    shared: bool = False         # several hosts may share the state (PostgreSQL)

    @staticmethod
    def single(settings: Settings) -> Cluster:
        """A state with one host: this one (SQLite, or before the hosts are read)."""
        return Cluster(settings.host_name, float(settings.host_timeout_s),
                       settings.max_concurrency, settings.host_limit,
                       tuple((name, repo.max_active) for name, repo in settings.repos.items()))

    def with_hosts(self, hosts: Iterable[Host]) -> Cluster:
        return Cluster(self.host, self.timeout_s, self.max_concurrency, self.host_limit,
                       self.max_active, tuple(hosts), True)

    def live(self) -> list[Host]:
        """Hosts seen within host_timeout_s, this one included."""
        return [h for h in self.hosts if h.alive(self.timeout_s) or h.name == self.host]

    def dead(self) -> list[Host]:
        return [h for h in self.hosts if not h.alive(self.timeout_s) and h.name != self.host]

    def is_alive(self, name: str | None) -> bool:
        """A host whose row is fresh (this one always); unknown names are not alive."""
        if name == self.host:
            return True
        return any(h.name == name and h.alive(self.timeout_s) for h in self.hosts)

    def global_limit(self) -> int:
        """max_concurrency: the smallest among live hosts (this host's own included)."""
        values = [h.max_concurrency for h in self.live() if h.max_concurrency is not None]
        return min([self.max_concurrency, *values])

    def repo_max_active(self, repo: str) -> int:
        """A repo's max_active: the smallest among live hosts that configure it."""
        own = dict(self.max_active).get(repo)
        values = [h.repo_limit(repo, "max_active") for h in self.live()
                  if h.name != self.host]
        found = [v for v in [own, *values] if isinstance(v, int)]
        return min(found) if found else 1

    def hosts_with_repo(self, repo: str) -> list[str]:
        """Live hosts that have REPO configured and available, this one first."""
        names = [h.name for h in self.live() if repo in h.repos]
        return sorted(names, key=lambda name: (name != self.host, name))

    def disagreements(self) -> list[str]:
        """What live hosts set differently (orch doctor fails on each)."""
        live = self.live()
        found = []
        values = {h.name: h.max_concurrency for h in live}
        if len(set(values.values())) > 1:
            found.append("max_concurrency differs: " + _listing(values))
        repos = sorted({repo for h in live for repo in h.repos})
        for repo in repos:
            limits = {h.name: h.repo_limit(repo, "max_active") for h in live if repo in h.repos}
            if len(set(limits.values())) > 1:
                found.append(f"repo {repo}: max_active differs: " + _listing(limits))
        return found

    def shared_repos_without_push(self) -> list[str]:
        """Repos configured on several live hosts where some host lacks merge.push."""
        live = self.live()
        found = []
        for repo in sorted({repo for h in live for repo in h.repos}):
            having = [h for h in live if repo in h.repos]
            lacking = [h.name for h in having if not h.repo_limit(repo, "push")]
            if len(having) > 1 and lacking:
                found.append(f"repo {repo} is on hosts {', '.join(h.name for h in having)} "
                             f"but merge.push is off on {', '.join(lacking)}")
        return found


def _listing(values: Mapping[str, object]) -> str:
    return ", ".join(f"{name}={value}" for name, value in sorted(values.items()))
