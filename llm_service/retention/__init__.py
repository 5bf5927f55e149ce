"""Retention: purge prompts and responses past their age, and expired cache entries, in batches.

What goes: the prompt/response content of `llm_api_calls.request_metadata` (the keys `prompt` and
`response`, replaced by `"purged": true`; other keys and every money column stay), the request
and response payloads of `llm_validation_failures` (set to NULL; the error and call link stay), and
expired `explanation_cache` entries. What stays: `investigation_tool_calls` outputs. They are
already PII-redacted and size-capped derived business data, not prompts, and they are the
evidence that investigation findings cite; they leave with their investigation.
"""
