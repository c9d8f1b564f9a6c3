"""tunesmith: fine-tune a language model on your data, see whether it helped, export and serve it."""

__version__ = "0.1.0"
