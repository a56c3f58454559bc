"""Model back-ends, one small protocol per role, chosen by config and loaded once per process."""
