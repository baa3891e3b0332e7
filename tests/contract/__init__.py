"""The v1 wire contract of release 4.0.0, recorded once and replayed (README: Development)."""
