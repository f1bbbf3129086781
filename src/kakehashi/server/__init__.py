"""HTTP transport: thin adapters from requests to model handles."""
