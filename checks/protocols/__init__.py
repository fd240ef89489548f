"""Wire codecs: strict, bounded, no I/O. Shared by the probes and by the far end (agent/responder)."""
