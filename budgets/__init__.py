"""Money rules: prices, worst-case estimates, per-run ceilings, the monthly cap.

Depends on nothing in llm_service.
"""
