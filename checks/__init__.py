"""Probes, one per module, all with the contract in `checks.contract`. Never imports `agent`."""
