"""Evaluation: Dice, HD95 and surface Dice per case and class; CSV and JSON reports."""
