"""Customer-revival decision service: configuration, messages and the HTTP API."""
