"""Stage-1 partition aggregation (pair + window + offset holds) and stage-2 finalisation."""
