"""The load generator: a lean WebSocket client, a pool of connections per process,
and the processes the coordinator drives (they run apart from every server)."""
