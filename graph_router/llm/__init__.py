"""LLM steps (issue 15): token accounting, time to first token, fallbacks, tenant budgets.

Everything here is decided when a plan is compiled: a step that is neither an OpenAI
step nor has fallbacks carries ``llm=None`` and its calls never enter this package.
"""
