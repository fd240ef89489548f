"""A real Prometheus server inside a lab namespace, and HTTP from inside one: the daemon listens on
the namespace's own loopback, where the test process (in the host's namespace) cannot reach, so
every request is made by a small Python run with `ip netns exec`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from lab import Lab

_GET = """
import json, sys, urllib.error, urllib.request
url, headers = sys.argv[1], json.loads(sys.argv[2])
try:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=float(sys.argv[3])) as r:
        print(json.dumps([r.status, r.read().decode("utf-8", "replace")]))
except urllib.error.HTTPError as e:
    print(json.dumps([e.code, e.read().decode("utf-8", "replace")]))
except OSError as e:
    print(json.dumps([0, str(e)]))
"""


def http_get(lab: Lab, ns: str, url: str, headers: dict | None = None, timeout: float = 30) -> tuple[int, str]:
    """(status, body) of a GET made inside `ns`; status 0 when no HTTP answer came."""
    done = lab.run(ns, [sys.executable, "-c", _GET, url, json.dumps(headers or {}), str(timeout)],
                   timeout=timeout + 15)
    status, body = json.loads(done.stdout)
    return status, body


class Prometheus:
    """`prometheus` in `ns` with the given scrape configs (and rule files), on ns's 127.0.0.1:port."""

    def __init__(self, lab: Lab, ns: str, directory: Path, scrape_configs: list[dict[str, Any]],
                 rule_files: tuple[Path, ...] = (), port: int = 9099, interval: str = "1s") -> None:
        self.lab, self.ns, self.port = lab, ns, port
        directory.mkdir(parents=True, exist_ok=True)
        config = {"global": {"scrape_interval": interval, "evaluation_interval": interval},
                  "scrape_configs": scrape_configs, "rule_files": [str(path) for path in rule_files]}
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = directory / "prometheus.log"
        with self.log.open("wb") as log:
            lab.spawn(ns, ["prometheus", f"--config.file={directory / 'prometheus.yml'}",
                           f"--storage.tsdb.path={directory / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                      stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while http_get(lab, ns, f"{self.url}/-/ready", timeout=5)[0] != 200:
            if time.monotonic() > deadline:
                raise AssertionError(f"prometheus did not become ready:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.3)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, path: str) -> Any:
        status, body = http_get(self.lab, self.ns, f"{self.url}/api/v1/{path}")
        assert status == 200, (status, body)
        answer = json.loads(body)
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector of `promql` now: [{"metric": {labels}, "value": [time, "value"]}]."""
        from urllib.parse import quote

        return self.api(f"query?query={quote(promql)}")["result"]

    def wait_for(self, promql: str, what: str, timeout: float = 120) -> list[dict[str, Any]]:
        """The first non-empty result of `promql`; fails with the Prometheus log after `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.query(promql)
            if result:
                return result
            time.sleep(0.5)
        raise AssertionError(f"no result for {promql} ({what}) in {timeout:g} s;\n"
                             f"targets: {self.api('targets')}\nlog: {self.log.read_text()[-2000:]}")
