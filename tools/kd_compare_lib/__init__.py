"""Helpers of tools/kd_compare.py (a tool's code, not part of the segdet library):

- plan.py:   the arms of a distillation config and the training run of each arm x seed;
- runner.py: run folders, resume / skip, the training subprocesses, progress and ETA;
- report.py: metrics of finished runs, kd_compare.json, the table and the two charts;
- child.py:  the subprocess entry: registers datasets (--register), then runs tools/train_net.py.
"""
