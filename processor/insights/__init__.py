"""Stage 3's pure library: incident facts, the suspected origin, narratives and their grounding."""
