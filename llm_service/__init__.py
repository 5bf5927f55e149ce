"""The attribution LLM service: API, agent loop, LLM gateway, tools, workers, CLI, DB access."""
