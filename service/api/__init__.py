"""The HTTP API: app factory, one routes module per resource."""
