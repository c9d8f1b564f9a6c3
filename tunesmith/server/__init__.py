"""The HTTP shell: one FastAPI app for the OpenAI-compatible routes, the jobs routes and the dashboard.

It only translates HTTP to the layers below (serve: inference; jobs: the job domain) and back; nothing heavy runs
in its event loop.
"""
