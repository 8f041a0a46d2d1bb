"""Camera and model health: cheap per-frame statistics and score drift against a baseline.

`frame_stats` measures each frame, `baseline` keeps what the recipe looked like when it was
accepted, `score_drift` compares the anomaly scores of passed parts with the model's held-out
good parts, `trend` predicts when a statistic reaches its alarm level, `levels` turns changes
into ok/warn/alarm with hysteresis, and `monitor` ties them together for the station runtime.
"""
