"""The llmrec service (`llmrec serve`): a FastAPI app over the one pipeline and the chat agent.

`app.create_app(settings, service)` builds it; `routers` holds the thin routes, `protocol` the wire models,
`serving` and `chat` the logic, `auth` the keys and rate limit, `metrics` Prometheus, `settings` ServiceSettings.
"""
