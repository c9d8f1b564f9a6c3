"""Export a run: adapter, merged weights, GGUF with an Ollama Modelfile."""
