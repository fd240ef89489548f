"""xcheck's orchestration: CLI, config, runner, verdicts, report."""

__version__ = "0.1.0"
