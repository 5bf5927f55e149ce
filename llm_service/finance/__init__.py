"""Finance across tenants: monthly and daily LLM costs behind the finance token, and the page."""
