"""I/O engines the probes share: ICMP-aware UDP exchanges, STUN transactions, TLS sessions, address classes."""
