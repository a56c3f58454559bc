"""Instruction data, MAmmoTH-VL style: triage, rewrite, filter, decontaminate, mix and export (see dag.py)."""
