"""The LLM gateway: the only code in the service that calls litellm."""
