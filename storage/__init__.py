"""The output folder, its Parquet schemas, atomic writes and the shard writer."""
