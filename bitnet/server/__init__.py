"""`bitnet serve`: an OpenAI-compatible HTTP server with continuous batching (extra: server)."""
