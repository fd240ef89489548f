"""The daemon: its HTTP routes, and its life from start to stop.

The event loop runs the scheduler; the HTTP server answers from its own threads. A new
assessment is rendered once (metrics exposition, JSON report, status page) into an immutable
`Snapshot` that scrapes read as they are: a scrape costs no rendering, and never waits for a check.
`/probe` is the one route that measures: it hands its checks to the event loop and waits.

SIGHUP reloads the settings (the config file and the flags given at start); a broken config
keeps the last good settings running, sets xcheck_config_last_reload_successful to 0 and says
why in one log line. SIGTERM (and SIGINT) stop the daemon within `STOP_SECONDS`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import html
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from agent import __version__
from agent.assessment import Assessment
from agent.config import ConfigError, Settings
from agent.daemon.http import Request, Response, Server
from agent.daemon.notify import Notifier
from agent.daemon.probe import MODULES, ProbeRefused, probe_targets, probe_timeout
from agent.daemon.scheduler import Scheduler
from agent.daemon.web import WebConfig, exposure_warning
from agent import metrics
from agent.metrics import ConfigReload
from agent.report import build_report, summary_line
from agent.runner import GRACE_SECONDS, run_checks

_log = logging.getLogger("xcheck.daemon")

STOP_SECONDS = 5.0  # SIGTERM to exit, as the issue and the unit's TimeoutStopSec= expect
# /probe runs at once at most this many probes; a further one waits for a slot within its scrape
# timeout. Prometheus scrapes each target once per interval: more than this at once is a misconfiguration
# or an attack, and each probe sends packets to someone.
MAX_CONCURRENT_PROBES = 8
# Beyond this many waiting for a slot, /probe answers 503 at once: waiters hold connections that
# /metrics scrapes need.
MAX_WAITING_PROBES = 8
RELOAD_SECONDS = 2.0  # a config is read in milliseconds; with the scheduler's stop, within SIGTERM's 5 s
TEXT = "text/plain; charset=utf-8"
# What metrics.render writes; Prometheus 2.x reads it (version 1.0.0 would need a newer client).
METRICS = "text/plain; version=0.0.4; charset=utf-8"
JSON = "application/json"


@dataclass(frozen=True)
class Snapshot:
    """What scrapes read between two assessments, rendered once."""

    assessment: Assessment | None
    metrics: bytes
    report: bytes | None
    page: bytes
    summary: str


class Daemon:
    """`load_settings()` reads the config file and flags anew (ConfigError when they are bad)."""

    def __init__(self, load_settings: Callable[[], Settings], notifier: Notifier | None = None) -> None:
        self._load_settings = load_settings
        self._notifier = notifier or Notifier()
        self.settings = load_settings()  # ConfigError at start: the CLI says why and exits 2
        self._web = WebConfig.load(self.settings.daemon.web_config) if self.settings.daemon.web_config else None
        self._reload = ConfigReload(successful=True, success_timestamp_seconds=time.time())
        self._snapshot = self._render(None)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduler: Scheduler | None = None
        self._scheduler_task: asyncio.Task[None] | None = None
        self._probes: asyncio.Semaphore | None = None
        self._probes_waiting = 0
        self._scheduler_died = False
        self.server: Server | None = None

    # ---------------------------------------------------------------- lifecycle

    async def serve(self, stop: asyncio.Event, reload: asyncio.Event | None = None) -> None:
        """Listen, schedule, and serve until `stop` is set; reload whenever `reload` is set."""
        self._loop = asyncio.get_running_loop()
        self._probes = asyncio.Semaphore(MAX_CONCURRENT_PROBES)
        host, port = self.settings.daemon.listen
        self.server = Server((host, port), self.handle, self._web)
        bound = self.server.start()
        _log.info("listening", extra={"fields": {"address": f"{host}:{bound}", "version": __version__,
                                                  "tls": bool(self._web and self._web.tls),
                                                  "basic_auth": bool(self._web and self._web.basic_auth)}})
        warning = exposure_warning(host, self._web)
        if warning:
            _log.warning(warning)
        self._start_scheduler(self.settings, keep=None)
        self._notifier.send(ready="1", status="listening; first checks running")
        watchdog = asyncio.create_task(self._watchdog()) if self._notifier.watchdog_interval_seconds else None
        reload = reload or asyncio.Event()
        try:
            while not stop.is_set():
                stopping = asyncio.create_task(stop.wait())
                reloading = asyncio.create_task(reload.wait())
                await asyncio.wait({stopping, reloading}, return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                reloading.cancel()
                if reload.is_set() and not stop.is_set():
                    reload.clear()
                    # Awaited here: a second SIGHUP waits until the first has stopped the old
                    # scheduler and started the new one (never two schedulers at once).
                    await self.reload()
        finally:
            self._notifier.send(stopping="1", status="stopping")
            if watchdog:
                watchdog.cancel()
            await self._stop_scheduler()
            self.server.stop()
            _log.info("stopped")

    def _start_scheduler(self, settings: Settings, keep: Scheduler | None) -> None:
        # The results stay when what is probed and how it is judged stay: a reload of the
        # intervals alone must not empty the metrics.
        scheduler = Scheduler(settings, self._publish)
        if keep and keep.targets == scheduler.targets and keep.ruleset.name == scheduler.ruleset.name:
            scheduler.store = keep.store
        self._scheduler = scheduler
        self._scheduler_task = asyncio.create_task(self._scheduler.run(), name="scheduler")
        self._scheduler_task.add_done_callback(self._scheduler_ended)

    def _scheduler_ended(self, task: asyncio.Task[None]) -> None:
        """The scheduler ends only when cancelled; if it died, nothing is measured any more: say why,
        and stop the watchdog's pings, so that systemd restarts the daemon (/healthz says 503)."""
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
            error = error.exceptions[0]  # the TaskGroup's wrapper names no cause
        _log.error("scheduler stopped: nothing is measured any more", exc_info=error)
        self._scheduler_died = True

    async def _stop_scheduler(self) -> None:
        task, self._scheduler_task = self._scheduler_task, None
        if task is None:
            return
        task.cancel()
        # Checks close their sockets on cancellation; one stuck in a thread is left to the process's exit.
        await asyncio.wait({task}, timeout=STOP_SECONDS / 2)

    async def _watchdog(self) -> None:
        interval = self._notifier.watchdog_interval_seconds
        assert interval is not None
        while not self._scheduler_died:
            self._notifier.send(watchdog="1")
            await asyncio.sleep(interval)

    async def reload(self) -> None:
        """SIGHUP: new settings if they are good, else the last good ones, and one line saying why.
        The files are read in a thread with a deadline: a FIFO or a hung mount where the config was
        must not freeze the daemon."""
        try:
            settings, web = await asyncio.wait_for(asyncio.to_thread(self._read_settings), RELOAD_SECONDS)
        except TimeoutError:
            self._reload_failed([f"reading the config took longer than {RELOAD_SECONDS:g} s"])
        except (ConfigError, ValueError, OSError) as exc:
            self._reload_failed(exc.lines() if isinstance(exc, ConfigError) else [str(exc)])
        else:
            if settings.daemon.listen != self.settings.daemon.listen:
                _log.warning("a new listen address takes effect on restart",
                             extra={"fields": {"listen": "%s:%d" % settings.daemon.listen}})
            old = self._scheduler
            self.settings, self._web = settings, web
            if self.server is not None:
                self.server.web_config = web
                warning = exposure_warning(self.settings.daemon.listen[0], web)
                if warning:
                    _log.warning(warning)
            await self._stop_scheduler()
            self._start_scheduler(settings, keep=old)
            self._reload = ConfigReload(successful=True, success_timestamp_seconds=time.time())
            _log.info("config reloaded")
        self._publish(self._snapshot.assessment)

    def _read_settings(self) -> tuple[Settings, WebConfig | None]:
        settings = self._load_settings()
        return settings, WebConfig.load(settings.daemon.web_config) if settings.daemon.web_config else None

    def _reload_failed(self, problems: list[str]) -> None:
        self._reload = ConfigReload(successful=False, success_timestamp_seconds=self._reload.success_timestamp_seconds)
        _log.error("config reload failed, keeping the last good config",
                   extra={"fields": {"problems": "; ".join(problems)}})

    # ---------------------------------------------------------------- rendering

    def _publish(self, assessment: Assessment | None) -> None:
        self._snapshot = self._render(assessment)
        self._notifier.send(status=self._snapshot.summary)

    def _render(self, assessment: Assessment | None) -> Snapshot:
        exposition = metrics.render(metrics.families(assessment, self._reload))
        if assessment is None:
            return Snapshot(None, exposition, None, _page(None), "no checks finished yet")
        report = json.dumps(build_report(assessment), indent=2).encode() + b"\n"
        verdicts = " ".join(f"{option}={entry['verdict']}" for option, entry in assessment.options.items())
        return Snapshot(assessment, exposition, report, _page(assessment), f"{summary_line(assessment.facts)} {verdicts}")

    # ---------------------------------------------------------------- HTTP (server threads)

    def handle(self, request: Request) -> Response:
        snapshot = self._snapshot
        if request.path == "/metrics":
            return Response(200, snapshot.metrics, METRICS)
        if request.path == "/healthz":
            alive = self._scheduler_task is not None and not self._scheduler_task.done()
            return Response(200, b"ok\n", TEXT) if alive else Response(503, b"scheduler not running\n", TEXT)
        if request.path == "/report":
            if snapshot.report is None:
                return Response(503, b"no checks finished yet: try again after the first interval\n", TEXT)
            return Response(200, snapshot.report, JSON)
        if request.path == "/probe":
            return self._probe(request)
        if request.path == "/":
            return Response(200, snapshot.page, "text/html; charset=utf-8")
        return Response(404, b"not found: try /, /metrics, /probe, /report or /healthz\n", TEXT)

    def _probe(self, request: Request) -> Response:
        loop, settings, scheduler = self._loop, self.settings, self._scheduler
        if loop is None or scheduler is None:
            return Response(503, b"starting\n", TEXT)
        module_name = (request.query.get("module") or [None])[0]
        target = (request.query.get("target") or [None])[0]
        try:
            targets = probe_targets(settings, scheduler.targets, module_name, target)
        except ProbeRefused as exc:
            return Response(exc.status, f"{exc}\n".encode(), TEXT)
        if self._probes_waiting >= MAX_WAITING_PROBES:
            return Response(503, b"too many probes at once: try again\n", TEXT)
        module = MODULES[module_name]
        timeout = probe_timeout(settings, module, targets, request.headers.get("X-Prometheus-Scrape-Timeout-Seconds"))
        started = time.monotonic()
        future = asyncio.run_coroutine_threadsafe(self._run_probe(module.checks, targets, timeout), loop)
        # The checks end by their deadlines; what is left is the wait for a slot (MAX_CONCURRENT_PROBES).
        limit = timeout + max(check.budget_seconds(targets) for check in module.checks) + GRACE_SECONDS + 1.0
        try:
            runs = future.result(timeout=limit)
        except concurrent.futures.TimeoutError:
            future.cancel()
            return Response(503, b"too many probes at once: try again\n", TEXT)
        except Exception:  # run_checks reports a check's crash as its result: this is a bug of ours
            _log.exception("probe failed", extra={"fields": {"module": module_name}})
            return Response(500, b"probe failed: see the daemon's log\n", TEXT)
        return Response(200, metrics.render(metrics.probe_families(runs, time.monotonic() - started)), METRICS)

    async def _run_probe(self, checks, targets, timeout: float):
        assert self._probes is not None
        self._probes_waiting += 1
        try:
            await self._probes.acquire()
        finally:
            self._probes_waiting -= 1
        try:
            return await run_checks(checks, targets, timeout)
        finally:
            self._probes.release()


def _page(assessment: Assessment | None) -> bytes:
    """The small status page: each check and target, its status, age and reason; links to the rest.
    Every string from a check is escaped: details quote peers."""
    links = ('<p><a href="/metrics">/metrics</a> · <a href="/report">/report</a> · <a href="/healthz">/healthz</a>'
             ' · /probe?target=HOST&amp;module=' + "|".join(MODULES) + "</p>")
    if assessment is None:
        body = "<p>No check has finished yet.</p>"
    else:
        now = time.time()
        rows = []
        for run in assessment.runs:
            for result in run.results:
                age = f"{max(0.0, now - result.ended_at):.0f} s"
                rows.append("<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in (
                    run.name, result.target.name, result.status, result.reason, age, result.detail)) + "</tr>")
        verdicts = "".join(f"<li>{html.escape(option)}: <b>{html.escape(entry['verdict'])}</b></li>"
                           for option, entry in assessment.options.items())
        body = (f"<p>{html.escape(summary_line(assessment.facts))}</p><ul>{verdicts}</ul>"
                "<table><tr><th>check</th><th>target</th><th>status</th><th>reason</th><th>age</th><th>detail</th></tr>"
                + "".join(rows) + "</table>")
    return (f"<!doctype html><html><head><meta charset=utf-8><title>xcheck daemon</title></head><body>"
            f"<h1>xcheck {html.escape(__version__)}</h1>{links}{body}</body></html>\n").encode()

