"""The HTTP API: application factory, dependencies, routes."""
