"""`xcheck daemon`: the checks on a schedule, their latest results as Prometheus metrics.

scheduler.py runs each family of checks on its own interval into one result store and keeps the
latest assessment; service.py answers HTTP (the routes) and owns the lifecycle (reload, stop,
systemd); http.py and web.py are the server and its exporter-toolkit security; notify.py speaks
systemd's notify protocol; logs.py writes one structured line per event.
"""
