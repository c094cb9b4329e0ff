"""The real side: tasks, trace files, recording, validation, splits and sequence batches."""
