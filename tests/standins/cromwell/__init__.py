"""The Cromwell server stand-in (standin.py) and its miniwdl runner."""
