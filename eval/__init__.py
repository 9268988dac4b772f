"""Evaluation: the leave-one-out split (`split`) and ranking metrics (`metrics`)."""
