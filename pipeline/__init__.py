"""The stages: pure functions over records, one module per stage; model back-ends under `pipeline.models`."""
