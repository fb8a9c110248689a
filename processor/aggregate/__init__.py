"""The two aggregation stages without transport: stage 1 (records -> pairs -> partial window
rows and changed keys), stage 2 (keys -> final rows), the message between them, and LocalRun,
which runs both in one process over the same calls."""
