"""The executor-free engine: stage declarations (`stage`), the one path that plans, skips, runs, writes and records
every unit (`engine`), a local loop over the DAG (`local`), and the run-level files (`run_files`)."""
