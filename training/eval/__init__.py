"""Evaluation: the quality report, the augmentation protocol, metrics, the reference classifier, figures,
compare."""
