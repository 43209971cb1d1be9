"""Training: the multi-student train step, schedules, strategies, workdirs and the epoch loop."""
