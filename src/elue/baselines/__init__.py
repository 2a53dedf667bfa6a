"""Baseline curves as data files (spec §4): `elue.scoring.load_baseline` reads them."""
