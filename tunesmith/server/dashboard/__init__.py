"""The dashboard: server-rendered pages on the jobs API, served by `tunesmith serve` at /, offline."""
