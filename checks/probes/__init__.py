"""One module per check, each following checks.contract."""
