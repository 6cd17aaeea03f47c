"""Pure manifest builders: TrainingRun → child object dicts (one module per child kind)."""
