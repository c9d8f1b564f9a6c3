"""The fine-tuning job domain: the store of files, jobs, events and checkpoints; validation; the worker that trains."""
