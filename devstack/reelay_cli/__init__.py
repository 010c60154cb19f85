"""The `reelay` command line: the HTTP API client, its rendering, and the local dev stack and demo."""
