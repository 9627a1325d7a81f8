"""Retrieval evaluation: BEIR datasets, ranking metrics, the stage-by-stage runner and baselines."""
