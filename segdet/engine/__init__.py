"""Trainer, optimizer parameter groups, LR schedules and training hooks."""
