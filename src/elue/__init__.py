"""ELUE: efficiency-aware NLP evaluation, its leaderboard, and the ElasticBERT baseline."""

__version__ = "0.1.0"
