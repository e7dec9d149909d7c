"""Cluster mode: the bridge between this host's bus and NATS, and the names it uses there."""
