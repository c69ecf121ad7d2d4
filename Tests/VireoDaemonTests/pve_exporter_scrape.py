#!/usr/bin/env python3
"""Scrapes vireod with prometheus-pve-exporter's own collector (all collectors on, as by default).

Usage: pve_exporter_scrape.py HOST:PORT ROOT_PASSWORD

Prints the Prometheus text the exporter's /pve endpoint would serve for this target; any API
call the exporter makes that vireod cannot answer fails the scrape (and this script).
"""
import sys

from pve_exporter.collector import CollectorsOptions, collect_pve

host, port = sys.argv[1].rsplit(":", 1)
config = {"user": "root@pam", "password": sys.argv[2], "verify_ssl": False, "port": int(port)}
options = CollectorsOptions(**{field: True for field in CollectorsOptions._fields})
output = collect_pve(config, host, True, True, options)
sys.stdout.write(output.decode() if isinstance(output, bytes) else output)
