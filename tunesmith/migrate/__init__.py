"""`tunesmith migrate`: a source's fine-tuning jobs, data and fine-tuned models' behaviour, moved here."""
