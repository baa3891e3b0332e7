"""The registry's schema migrations (Alembic): ``env.py``, the revisions in
``versions/``, and ``baseline_4_0_0``, the schema of pman 4.0.0 frozen."""
