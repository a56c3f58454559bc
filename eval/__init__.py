"""Few-shot evaluation with RICES (arrives with the evaluation issue)."""
