"""The thin web UI: its HTTP server (pages, catalogue queries, live events, feedback, saved dashboards) and static files."""
