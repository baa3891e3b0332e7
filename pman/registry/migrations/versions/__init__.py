"""The registry's revisions, oldest first: each one file, each applied once."""
