"""The attribution LLM service: HTTP API, agent loop, LLM gateway, tools, workers, CLI, DB access."""
